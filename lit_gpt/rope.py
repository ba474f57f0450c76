"""Rotary position embeddings, RoPE (Su et al. 2021, https://arxiv.org/abs/2104.09864), in the half-split
("rotate_half") layout of Hugging Face Llama, so exported query and key weights need no permutation.

``rope_cache`` computes the cosine and sine tables that ``lit_gpt.model.GPT`` keeps as buffers; ``apply_rope``
rotates queries or keys by them. How positions map to angles (frequencies from the base ``rope_theta``, and any
scaling of them: linear, dynamic NTK, YaRN, Llama 3) belongs in the tables, here, so the attention code does not
depend on it.

Imports torch only.
"""

from __future__ import annotations

import torch


def rope_cache(seq_len: int, head_size: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables for RoPE in the half-split layout, each of shape (seq_len, head_size), float32, on
    the CPU (whatever the default device; callers move them).

    Frequency i (0 <= i < head_size/2) is ``theta ** (-2i / head_size)``; both halves of the last dimension
    repeat the same frequencies, matching Hugging Face ``LlamaRotaryEmbedding``.
    """
    arange = dict(dtype=torch.float32, device="cpu")
    inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2, **arange) / head_size)  # (hs/2,)
    angles = torch.outer(torch.arange(seq_len, **arange), inv_freq)  # (seq_len, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (seq_len, hs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` of shape (B, n_heads, T, hs) by position.

    cos/sin have shape (T, hs) (positions shared by the batch) or (B, 1, T, hs) (a position per row).
    ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)`` for the halves x1, x2 of the
    last dimension. Computed in x's dtype.
    """
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
