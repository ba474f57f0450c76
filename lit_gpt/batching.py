"""A KV cache of slots for continuous batching: sequences join and leave a running batch between decode steps.

Every row of the batch writes its next token at the same cache column (the ``frontier``), as a left-padded batch does
(``lit_gpt.generate.left_pad``): a row's real entries are columns ``start .. frontier - 1``, and ``start`` is passed to
the model as its ``left_pad``, so positions count from the row's first token and the columns before it are masked
(``lit_gpt.kv_cache.cached_mask``). A sequence joins by having its prompt prefilled apart from the batch (``prefill``)
and its keys and values copied in so that they end at the frontier (``SlotCache.place``); the running rows are not
recomputed. Active rows are kept at the top of the cache (rows ``0 .. n - 1``): one that leaves is replaced by the last
one. When the frontier reaches the end of the cache, every row is moved left by the smallest start (``compact``).

The technique is Orca's iteration-level scheduling (Yu et al. 2022, "Orca: A Distributed Serving System for
Transformer-Based Generative Models", OSDI) over a contiguous, left-aligned cache rather than vLLM's pages. The
scheduler around it is ``lit_gpt.engine``. Torch only.
"""

from __future__ import annotations

import torch

from lit_gpt.kv_cache import KVCache
from lit_gpt.model import GPT


class RowsKVCache(KVCache):
    """A ``KVCache`` of (slots, nkv, length, hs) whose ``update`` writes and returns only the first ``rows`` rows, so
    a decode step runs on the active rows alone."""

    rows: int = 0

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (rows, nkv, T, hs) at cache indices input_pos (T,); return (rows, nkv, length, hs) each."""
        self.k[: self.rows].index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v[: self.rows].index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k[: self.rows], self.v[: self.rows]


@torch.no_grad()
def prefill(model: GPT, prompts: list[list[int]]) -> tuple[torch.Tensor, list[KVCache]]:
    """Run ``prompts`` (token id lists, each 1 .. block_size long) through ``model`` as one left-padded batch.

    Returns the final hidden state of each prompt's last token, (B, C), and each layer's ``KVCache`` of
    (B, nkv, T_max, hs), prompts right-aligned (row i's entries are its last ``len(prompts[i])`` columns). A single
    prompt runs exactly as ``lit_gpt.generate.iter_tokens`` prefills it. Installs, then removes, its own caches in
    ``model`` (whatever caches ``model`` held are dropped: see ``SlotCache.install``).
    """
    longest = max(len(p) for p in prompts)
    device = model.lm_head.weight.device
    idx = torch.tensor([[0] * (longest - len(p)) + list(p) for p in prompts], dtype=torch.long, device=device)
    pad = torch.tensor([longest - len(p) for p in prompts], dtype=torch.long, device=device)
    model.setup_kv_cache(len(prompts), longest, left_pad=pad if bool(pad.any()) else None)
    try:
        hidden = model.hidden_states(idx, input_pos=torch.arange(longest, device=device))[:, -1]  # (B, C)
        caches = [block.self_attn.kv_cache for block in model.layers]
    finally:
        model.clear_kv_cache()
    return hidden, caches


class SlotCache:
    """Keys and values of up to ``slots`` sequences of up to ``model.config.block_size`` tokens, in every layer.

    Attributes:
        rows: active rows (0 .. rows - 1).
        frontier: the cache column the next decode step writes, shared by every row.
        starts: (slots,) int64, the first real column of each row (its ``left_pad``).
    """

    def __init__(self, model: GPT, slots: int) -> None:
        config, weight = model.config, model.lm_head.weight
        self.model, self.slots, self.length = model, slots, config.block_size
        shape = (slots, config.n_kv_head, self.length, config.head_size)
        self.layers = [RowsKVCache(shape, device=weight.device, dtype=weight.dtype) for _ in model.layers]
        self.rows, self.frontier = 0, 0
        self.starts = torch.zeros(slots, dtype=torch.long, device=weight.device)

    def install(self) -> None:
        """Make ``model`` decode the active rows through this cache (its layers' ``kv_cache`` and ``left_pad``)."""
        for block, cache in zip(self.model.layers, self.layers):
            cache.rows = self.rows
            block.self_attn.kv_cache = cache
        self.model.left_pad = self.starts[: self.rows]

    def place(self, caches: list[KVCache], row: int, length: int) -> int:
        """Append a sequence whose prompt is the last ``length`` columns of row ``row`` of ``caches`` (from
        ``prefill``); it becomes active row ``self.rows``, which is returned. Its entries end at the frontier, which
        first moves right if fewer than ``length`` columns lie before it.

        Raises:
            ValueError: when every slot is taken, or ``length`` is not below the cache length.
        """
        if self.rows == self.slots or length >= self.length:
            raise ValueError(f"no room for a sequence of {length} tokens ({self.rows} of {self.slots} slots taken)")
        if self.rows == 0:
            self.frontier = 0
        if self.frontier < length:
            self._shift(length - self.frontier)
        start = self.frontier - length
        for mine, theirs in zip(self.layers, caches):
            mine.k[self.rows, :, start : self.frontier] = theirs.k[row, :, -length:]
            mine.v[self.rows, :, start : self.frontier] = theirs.v[row, :, -length:]
        self.starts[self.rows] = start
        self.rows += 1
        return self.rows - 1

    def remove(self, row: int) -> int | None:
        """Free active row ``row``: the last active row moves into it. Returns the old index of the row that moved
        (for the caller to follow), or None when ``row`` was the last one."""
        last = self.rows - 1
        self.rows -= 1
        if row == last:
            return None
        for cache in self.layers:
            cache.k[row], cache.v[row] = cache.k[last], cache.v[last]
        self.starts[row] = self.starts[last]
        return last

    def make_room(self) -> None:
        """Before a decode step: move every row left by the smallest start when the frontier is at the end of the
        cache, or when the leading padding is at least half of what attention reads.

        Raises:
            ValueError: when the frontier is at the end and a row starts at column 0 (it holds ``block_size``
                tokens: the scheduler never lets a sequence grow so long).
        """
        if self.rows == 0:
            self.frontier = 0
            return
        least = int(self.starts[: self.rows].min())
        if self.frontier == self.length and least == 0:
            raise ValueError("a sequence filled the whole cache")
        if least > 0 and (self.frontier == self.length or 2 * least >= self.frontier):
            self._shift(-least)

    def _shift(self, by: int) -> None:
        """Move the written columns of the active rows ``by`` columns (right if positive), with their starts."""
        n, end = self.rows, self.frontier
        for cache in self.layers:
            for buffer in (cache.k, cache.v):
                buffer[:n, :, max(0, by) : end + by] = buffer[:n, :, max(0, -by) : end].clone()
        self.starts[:n] += by
        self.frontier += by
