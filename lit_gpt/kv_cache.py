"""The key/value caches of generation and their attention masks: what each forward pass of ``lit_gpt.model.GPT``
stores, which keys each query sees, and at which position each token sits.

- ``KVCache``: one attention layer's preallocated keys and values, written at cache indices (``input_pos``).
- ``attention_layout``: for a forward pass, the token positions, the mask and how many cache entries attention
  reads; built from ``window_mask`` (sliding-window causal attention over the pass's own keys) and
  ``cached_mask`` (causal attention over the cache, with a sliding window and left-padded rows).
- ``RollingKVCache``: a fixed number of entries for a sequence of any length: the first tokens (attention sinks)
  and a ring buffer of the most recent ones (StreamingLLM), with its own ``layout``.

Cache policies live here: how entries are stored and which of them a query reads (each cache class has its
``layout``), so the attention code of the model stays the same. Notation as in ``lit_gpt.model``: B batch size,
T tokens in this pass, S keys read, nkv key/value heads, hs head size.

Imports torch and ``lit_gpt.rope``.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_gpt.rope import apply_rope


class KVCache(nn.Module):
    """Preallocated keys and values of one attention layer, each (B, nkv, max_seq_length, hs).

    ``update`` writes new entries at cache indices ``input_pos`` and returns the whole cache. Entries not yet written
    are never attended to: attention reads the first ``kv_length`` entries and masks the rest of what it must not
    see (``attention_layout``), so decoding needs no host-device sync.
    """

    def __init__(self, k_shape: tuple[int, int, int, int], device=None, dtype=None) -> None:
        super().__init__()
        self.register_buffer("k", torch.zeros(k_shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(k_shape, device=device, dtype=dtype), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nkv, T, hs) at cache indices input_pos (T,); return the full (B, nkv, S, hs) cache."""
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k, self.v

    @staticmethod
    def layout(*args) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
        """``attention_layout(T, input_pos, sliding_window, left_pad, device)``: the positions, mask and entries
        read of a forward pass through this cache."""
        return attention_layout(*args)


def window_mask(T: int, sliding_window: int, device: torch.device) -> torch.Tensor:
    """Boolean (T, T) mask of causal attention within a sliding window: query i sees key j iff
    0 <= i - j < sliding_window."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)
    return (j <= i) & (i - j < sliding_window)  # (T, T)


def cached_mask(
    input_pos: torch.Tensor,
    cache_length: int,
    sliding_window: int | None = None,
    left_pad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean mask over the first ``cache_length`` (S) cache entries for queries at cache indices ``input_pos`` (T,):
    (B, 1, T, S) with ``left_pad`` (B,: padding entries at the start of each row), else (1, T, S); both broadcast
    over the heads. Query at index i sees key j iff j <= i, j is not padding and i - j < sliding_window. A padding
    query also sees itself, so no row is fully masked (which would give NaN)."""
    j = torch.arange(cache_length, device=input_pos.device)
    i = input_pos[:, None]  # (T, 1)
    mask = j <= i  # (T, S)
    if sliding_window is not None:
        mask = mask & (i - j < sliding_window)
    if left_pad is not None:
        mask = (mask & (j >= left_pad[:, None, None])) | (j == i)  # (B, T, S)
    return mask.unsqueeze(-3)  # (B, 1, T, S) or (1, T, S)


def attention_layout(
    T: int,
    input_pos: torch.Tensor | None,
    sliding_window: int | None,
    left_pad: torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """``(positions, mask, kv_length)`` for a forward pass of T tokens.

    Args:
        input_pos: None for a whole sequence from position 0 without a cache; else the cache indices (T,) of the
            T tokens (on ``device``).
        sliding_window: the most keys a query sees (itself included), or None for all before it.
        left_pad: (B,) padding entries at the start of each cached row, or None.
    Returns:
        positions: (T,), or (B, T) with ``left_pad``, each row counting from its first real token (clamped at 0).
        mask: boolean, True where a query may attend to a key: (T, T) without a cache (``window_mask``), else as
            ``cached_mask`` gives it; None means plain causal attention over the pass's own keys, or (with
            ``kv_length``) every one of the ``kv_length`` cached keys.
        kv_length: None to attend to the pass's own T keys (no cache, or a prefill from position 0 without
            padding, which still writes the cache); else attention reads cache entries 0 .. kv_length - 1, up to
            the last index written (S = kv_length; one host sync per call).
    """
    kv_length = None
    if input_pos is not None and not (T > 1 and left_pad is None and int(input_pos[0]) == 0):
        kv_length = int(input_pos[-1]) + 1
    if kv_length is None:
        positions = torch.arange(T, device=device)  # (T,)
        mask = window_mask(T, sliding_window, device) if sliding_window is not None and sliding_window < T else None
        return positions, mask, None
    mask = None  # a single query without padding or window sees every stored key
    if T > 1 or left_pad is not None or sliding_window is not None:
        mask = cached_mask(input_pos, kv_length, sliding_window, left_pad)
    positions = input_pos
    if left_pad is not None:  # each row counts positions from its first real token
        positions = (input_pos[None, :] - left_pad[:, None]).clamp(min=0)  # (B, T)
    return positions, mask, kv_length


class RollingKVCache(nn.Module):
    """Keys and values of one attention layer for a sequence of any length: S = ``k_shape[2]`` entries, the first
    ``sinks`` tokens kept for good (attention sinks) and the last S - sinks in a ring buffer (StreamingLLM: Xiao et
    al. 2023, https://arxiv.org/abs/2309.17453). Past S tokens, each new token evicts the oldest of the window and
    costs one single-token forward pass.

    Positions (RoPE) are the tokens' places in the cache, as in StreamingLLM, not in the sequence: sink i sits at i,
    the window's tokens at sinks .. S-1 from oldest to newest, and a new token at S - 1. So every query and key keeps
    a position below S <= block_size, the range the model was trained on (no RoPE table past ``block_size``, and
    RoPE scaling applies unchanged), and sinks stay within S of the queries. When a token is evicted the window's
    positions move down by one: its cached keys are rotated by one position (``shift``, the cos and sin of position
    1 of the model's RoPE tables, rescaled to a pure rotation) in place. Relative distances inside the window are
    unchanged by this; the keys are kept in float32 so that the rotations gather no 16-bit rounding.

    ``update``'s ``input_pos`` are the tokens' indices in the sequence, which must continue where the previous call
    ended; until the cache is full they are the cache indices, and the cache works like ``KVCache`` (prefill
    included). Once full it takes one token per call. A left-padded row keeps its padding among the sinks (the
    caller counts it in ``sinks``), so positions still count from each row's first real token.
    """

    def __init__(
        self,
        k_shape: tuple[int, int, int, int],
        sinks: int,
        shift: tuple[torch.Tensor, torch.Tensor],
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not 0 <= sinks < k_shape[2]:
            raise ValueError(f"a rolling cache of {k_shape[2]} entries keeps 0 .. {k_shape[2] - 1} sinks, got {sinks}")
        self.register_buffer("k", torch.zeros(k_shape, device=device, dtype=torch.float32), persistent=False)
        self.register_buffer("v", torch.zeros(k_shape, device=device, dtype=dtype), persistent=False)
        cos, sin = (t.to(device=device, dtype=torch.float32) for t in shift)
        scale = (cos.square() + sin.square()).sqrt()  # a table's attention factor (YaRN) is not part of the rotation
        self.register_buffer("unshift_cos", cos / scale, persistent=False)
        self.register_buffer("unshift_sin", -sin / scale, persistent=False)  # (hs,): back by one position
        self.size, self.sinks, self.seen = k_shape[2], sinks, 0

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nkv, T, hs) of the sequence's tokens ``input_pos`` (T,); return the full (B, nkv, S, hs)
        cache (keys in float32)."""
        T = k.size(2)
        if self.seen + T <= self.size:
            self.k.index_copy_(2, input_pos, k.float())
            self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        else:
            window = self.k[:, :, self.sinks :]  # (B, nkv, S - sinks, hs)
            window.copy_(apply_rope(window, self.unshift_cos, self.unshift_sin))
            slot = self.sinks + (self.seen - self.sinks) % (self.size - self.sinks)  # the oldest token's entry
            self.k[:, :, slot : slot + 1] = k.float()
            self.v[:, :, slot : slot + 1] = v.to(self.v.dtype)
        self.seen += T
        return self.k, self.v

    def layout(
        self, T: int, input_pos: torch.Tensor, sliding_window: int | None, left_pad: torch.Tensor | None, device
    ) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
        """``(positions, mask, kv_length)`` as ``attention_layout`` gives them: its own while the T tokens fit in the
        cache; past that (T == 1), position S - 1 (each row's, with ``left_pad``), every entry but padding.

        Raises:
            ValueError: for more than one token once the tokens no longer fit.
        """
        if self.seen + T <= self.size:
            return attention_layout(T, input_pos, sliding_window, left_pad, device)
        if T != 1:
            raise ValueError(f"a full rolling cache takes one token per forward pass, got {T}")
        positions = torch.full((1,), self.size - 1, device=device)  # (T,)
        if left_pad is None:
            return positions, None, self.size
        mask = torch.arange(self.size, device=device) >= left_pad[:, None, None, None]  # (B, 1, 1, S)
        return (positions[None, :] - left_pad[:, None]).clamp(min=0), mask, self.size  # (B, T) positions
