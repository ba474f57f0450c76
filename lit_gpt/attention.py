"""The attention kernel of ``lit_gpt.model`` and the document masks it takes.

- ``attend``: softmax attention of queries over keys and values. A boolean mask (or none, for causal attention)
  goes to PyTorch's ``scaled_dot_product_attention`` (flash / memory-efficient kernels where the device has them);
  a FlexAttention ``BlockMask`` goes to ``torch.nn.attention.flex_attention`` (Dong et al. 2024,
  https://arxiv.org/abs/2412.05496), compiled once per process on CUDA, whose kernel skips the blocks a mask hides.
- ``document_mask``: attention within documents only, for training windows that hold several documents (packed,
  joined by end-of-text): query i sees key j iff j <= i and both tokens carry the same document id (a block-diagonal
  causal mask, as in the Llama 3 paper, section 3.2, https://arxiv.org/abs/2407.21783). On CPU a dense boolean
  (B, 1, T, T) mask for SDPA; on CUDA a ``BlockMask``, except with attention dropout in training, which
  FlexAttention does not have (then SDPA with the dense mask). FlexAttention has no CPU backward pass.

Notation as in ``lit_gpt.model``: B batch size, nh query heads, nkv key/value heads, T queries, S keys, hs head size.
Imports torch only (FlexAttention's module when a block mask is built or used).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, is_causal: bool, dropout_p: float = 0.0
) -> torch.Tensor:
    """Attention of q (B, nh, T, hs) over k, v (B, nkv, S, hs), in q's dtype; returns (B, nh, T, hs).

    Args:
        mask: None, a boolean tensor broadcastable to (B, nh, T, S), True where a query may attend to a key, or a
            FlexAttention ``BlockMask`` (``document_mask``).
        is_causal: with ``mask`` None, causal attention over T == S keys; else every key.
        dropout_p: attention dropout (SDPA only).

    On CPU, attention in bfloat16/float16 (autocast included) runs in float32 instead: PyTorch's CPU
    flash-attention backward is slower in bfloat16 than in float32 at these sizes (docs/benchmarks.md,
    bench/attention_cpu.py), and float32 is the more accurate of the two.
    """
    gqa = k.size(1) != q.size(1)
    if mask is not None and not isinstance(mask, torch.Tensor):  # a BlockMask
        flex = _compiled_flex_attention() if q.device.type == "cuda" else _flex_attention()
        return flex(q, k.to(q.dtype), v.to(q.dtype), block_mask=mask, enable_gqa=gqa)
    options = dict(attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, enable_gqa=gqa)
    if q.device.type != "cpu" or (q.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")):
        return F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), **options)
    with torch.autocast("cpu", enabled=False):
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **options)
    return y.to(q.dtype)


def _flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


@functools.cache
def _compiled_flex_attention():
    """FlexAttention compiled once per process: uncompiled, it computes the whole (T, S) score matrix."""
    return torch.compile(_flex_attention(), dynamic=False)


def document_mask(documents: torch.Tensor, sliding_window: int | None = None, flex: bool = False):
    """The mask of causal attention within documents, for token document ids ``documents`` (B, T).

    Query i sees key j iff j <= i, ``documents[:, i] == documents[:, j]`` and (with ``sliding_window``)
    i - j < sliding_window.

    Returns:
        a boolean (B, 1, T, T) tensor for ``attend``'s SDPA path, or with ``flex`` a FlexAttention ``BlockMask``
        on ``documents``' device, for ``attend``'s FlexAttention path.
    """
    B, T = documents.shape
    if flex:
        from torch.nn.attention.flex_attention import create_block_mask

        def mask_mod(b, h, q_idx, kv_idx):
            visible = (kv_idx <= q_idx) & (documents[b, q_idx] == documents[b, kv_idx])
            return visible if sliding_window is None else visible & (q_idx - kv_idx < sliding_window)

        return create_block_mask(mask_mod, B, None, T, T, device=documents.device)
    i = torch.arange(T, device=documents.device)[:, None]
    j = torch.arange(T, device=documents.device)
    visible = (j <= i) if sliding_window is None else (j <= i) & (i - j < sliding_window)  # (T, T)
    same = documents[:, :, None] == documents[:, None, :]  # (B, T, T)
    return (same & visible).unsqueeze(1)  # (B, 1, T, T)
