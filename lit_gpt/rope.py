"""Rotary position embeddings, RoPE (Su et al. 2021, https://arxiv.org/abs/2104.09864), in the half-split
("rotate_half") layout of Hugging Face Llama, so exported query and key weights need no permutation, and the
scalings that let a model run past the length it was trained at (``lit_gpt.config.RopeScaling``).

``rope_cache`` computes the cosine and sine tables that ``lit_gpt.model.GPT`` keeps as buffers, ``rope_at`` reads
the rows of a forward pass's positions, and ``apply_rope`` rotates queries or keys by them. How positions map to
angles belongs here, so the attention code does not depend on it.

Frequencies (``inverse_frequencies``) follow transformers' ``modeling_rope_utils.py`` (the reference the parity
tests compare against), operation for operation in float32. With hs the head size, theta the base ``rope_theta``,
L0 ``original_block_size`` and s ``factor``, plain RoPE turns dimension pair i at ``theta ** (-2i / hs)``, and:

- ``linear``, Position Interpolation (Chen et al. 2023, https://arxiv.org/abs/2306.15595): every frequency divided
  by s.
- ``dynamic``, NTK-aware scaling (bloc97 2023, "NTK-Aware Scaled RoPE", r/LocalLLaMA; made dynamic by emozilla; Code
  Llama, Roziere et al. 2023, raises the base the same way): a pass of L > L0 tokens uses the base
  ``theta * (s * L / L0 - (s - 1)) ** (hs / (hs - 2))``; passes of at most L0 tokens use plain RoPE. The angles
  therefore depend on the pass's length, not only on the position (``rope_at`` recomputes them). With the KV
  cache each pass is rotated for its own length: a decoded token at cache index i uses the base for L = i + 1,
  and keys already in the cache keep the rotation they were stored with, as in transformers' generation.
  transformers keeps the frequencies of the longest pass it has seen until a pass of at most L0 tokens resets
  them; ours are a function of the current pass only.
- ``yarn`` (Peng et al. 2023, https://arxiv.org/abs/2309.00071, "NTK-by-parts" plus an attention temperature):
  dimension d = 2i turning r(d) = L0 / (2 pi theta^(d/hs)) times over L0 positions keeps its frequency when
  r > beta_fast and is divided by s when r < beta_slow, with a linear ramp between (its ends rounded outwards to
  whole dimensions with ``truncate``); cos and sin are multiplied by ``attention_factor``, default
  ``0.1 ln(s) + 1`` (the paper's sqrt(1/t)), so the attention logits by its square.
- ``llama3`` (Llama 3.1 model card and Meta's reference code, ``apply_scaling``): wavelengths 2 pi / f above
  L0 / low_freq_factor are divided by s, those below L0 / high_freq_factor are kept, and in between
  ``(1 - a) f / s + a f`` with ``a = (L0 / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)``.

Imports torch and the config only.
"""

from __future__ import annotations

import math

import torch

from lit_gpt.config import Config, RopeScaling


def inverse_frequencies(
    head_size: int, theta: float, scaling: RopeScaling | None = None, seq_len: int | None = None
) -> tuple[torch.Tensor, float]:
    """The angle per position of each dimension pair, (head_size/2,) float32 on the CPU (whatever the default
    device), and the factor that multiplies cos and sin (1 but for yarn), for ``scaling`` (None: plain RoPE).
    ``seq_len``, the length of the forward pass, matters for ``dynamic`` only (None: at most
    ``original_block_size``, plain RoPE)."""
    exponents = torch.arange(0, head_size, 2, dtype=torch.int64, device="cpu").float() / head_size  # (hs/2,)
    if scaling is None:
        return 1.0 / (theta**exponents), 1.0
    factor, original = scaling.factor, scaling.original_block_size
    if scaling.type == "linear":
        return 1.0 / (theta**exponents) / factor, 1.0
    if scaling.type == "dynamic":
        if seq_len is None or seq_len <= original:
            return 1.0 / (theta**exponents), 1.0
        length = torch.tensor(
            seq_len, device="cpu"
        )  # a tensor, as transformers passes it: the new base is computed in float32
        base = theta * ((factor * length / original) - (factor - 1)) ** (head_size / (head_size - 2))
        return 1.0 / (base**exponents), 1.0
    if scaling.type == "yarn":
        return _yarn(head_size, theta, scaling, exponents)
    return _llama3(theta, scaling, exponents), 1.0


def _yarn(head_size: int, theta: float, scaling: RopeScaling, exponents: torch.Tensor) -> tuple[torch.Tensor, float]:
    """YaRN's inverse frequencies and attention factor (transformers' ``_compute_yarn_parameters``)."""
    factor = scaling.factor
    attention = scaling.attention_factor
    if attention is None:
        if scaling.mscale and scaling.mscale_all_dim:
            attention = float(_yarn_mscale(factor, scaling.mscale) / _yarn_mscale(factor, scaling.mscale_all_dim))
        else:
            attention = _yarn_mscale(factor)

    def dimension(rotations: float) -> float:  # the dimension that turns `rotations` times over the original length
        return head_size * math.log(scaling.original_block_size / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dimension(scaling.beta_fast), dimension(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_size - 1)
    if low == high:
        high += 0.001  # a ramp of zero width would divide by zero
    ramp = ((torch.arange(head_size // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(
        0, 1
    )  # (hs/2,)
    pos_freqs = theta**exponents
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # 1: the dimension keeps its frequency (extrapolates); 0: it is divided by the factor
    return interpolation * (1 - keep) + extrapolation * keep, attention


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention scale ``0.1 * mscale * ln(factor) + 1`` (its Eq. 21 for mscale 1); 1 for factor <= 1."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _llama3(theta: float, scaling: RopeScaling, exponents: torch.Tensor) -> torch.Tensor:
    """Llama 3.1's inverse frequencies (transformers' ``_compute_llama3_parameters``)."""
    inv_freq = 1.0 / (theta**exponents)
    factor, low, high = scaling.factor, scaling.low_freq_factor, scaling.high_freq_factor
    original = scaling.original_block_size
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelength - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelength < original / high) * ~(wavelength > original / low)
    return torch.where(medium, smoothed, scaled)


def _cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, attention: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (..., hs) of float32 ``positions`` (...) times ``inv_freq`` (hs/2,), times ``attention``."""
    angles = positions[..., None] * inv_freq  # (..., hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., hs)
    if attention == 1.0:
        return angles.cos(), angles.sin()
    return angles.cos() * attention, angles.sin() * attention


def rope_cache(
    seq_len: int, head_size: int, theta: float = 10000.0, scaling: RopeScaling | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables for RoPE in the half-split layout, each of shape (seq_len, head_size), float32, on
    the CPU (whatever the default device; callers move them).

    Frequency i (0 <= i < head_size/2) is ``theta ** (-2i / head_size)`` rescaled by ``scaling`` (see the module
    docstring; yarn's attention factor multiplies both tables); both halves of the last dimension repeat the same
    frequencies, matching Hugging Face ``LlamaRotaryEmbedding``. For ``dynamic`` scaling these are the tables of
    passes of at most ``original_block_size`` tokens (plain RoPE); ``rope_at`` computes longer passes' own.
    """
    inv_freq, attention = inverse_frequencies(head_size, theta, scaling)
    return _cos_sin(torch.arange(seq_len, dtype=torch.float32, device="cpu"), inv_freq, attention)


def rope_at(
    cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor, config: Config
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, hs) or (B, T, hs) for the positions (T,) or (B, T) of one forward pass, from the
    ``rope_cache`` tables (block_size, hs) of ``config``.

    With ``dynamic`` scaling and a pass reaching past ``original_block_size`` (its largest position + 1; one host
    sync), the angles are computed for that pass's length instead of read from the tables.
    """
    scaling = config.rope_scaling
    if scaling is not None and scaling.type == "dynamic":
        seq_len = int(positions.max()) + 1
        if seq_len > scaling.original_block_size:
            inv_freq, _ = inverse_frequencies(config.head_size, config.rope_theta, scaling, seq_len)
            return _cos_sin(positions.float(), inv_freq.to(positions.device), 1.0)
    return cos[positions], sin[positions]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` of shape (B, n_heads, T, hs) by position.

    cos/sin have shape (T, hs) (positions shared by the batch) or (B, 1, T, hs) (a position per row).
    ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)`` for the halves x1, x2 of the
    last dimension. Computed in x's dtype.
    """
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
