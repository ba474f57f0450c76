"""Training and validation windows over prepared token shards: the sampler and datasets the data modules serve.

Sampling choice. Training batches are windows of ``block_size + 1`` tokens at uniformly random offsets of the
training split (as in nanoGPT; a window never crosses from one shard into the next): input ``x = w[:-1]``,
target ``y = w[1:]``. The stream of offsets is infinite
and stateless: global batch ``b`` is drawn from ``numpy.random.default_rng((seed, b))`` and split between the
data-parallel replicas. So there is no "epoch" (training length is ``trainer.max_steps``), replicas draw different
windows without a DistributedSampler, the same global batch trains the same windows on any number of devices, and a
resumed run continues with exactly the batches it would have seen. A mixture of corpora (``MixtureWindowBatches``)
first draws each window's corpus from the same generator (``lit_gpt.data.mixture.draw_corpora``), then its offset
uniformly within that corpus.

Validation covers the whole validation split once, in non-overlapping windows: every token after the first is
a target exactly once. The last, partial window is taken as the final ``block_size + 1`` tokens with the targets
already covered set to ``IGNORE_INDEX``, so all batches keep one shape and ``val/loss`` is the exact mean over
the split, comparable between runs with the same tokenizer. Ranks take every ``world_size``-th window.

Documents. A window may hold the end of one document and the start of others (joined by end-of-text).
``document_inputs`` gives the model what document masking needs (``lit_gpt.data.settings.Batching.document_mask``):
each token's document id within its window, and optionally its position within its document.

Torch and numpy only (``lit_gpt.train.datamodule`` wraps these in data loaders).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lit_gpt.data.mixture import draw_corpora

IGNORE_INDEX = -100
"""Target value that the loss and the perplexity metric skip (PyTorch's cross-entropy default)."""


class RandomWindowBatches(Sampler):
    """Infinite sampler of batches of window start offsets, each an int64 array of shape (batch_size,).

    Offsets are uniform in [0, num_windows). Global batch ``b`` (counting from 0 over the whole run) is
    ``batch_size * num_replicas`` offsets drawn from ``numpy.random.default_rng((seed, b))``, and data-parallel
    replica ``rank`` takes its ``rank``-th slice of ``batch_size``. So the windows a step trains on depend only on
    the seed and the global batch size, not on how many devices share them: 2 replicas of batch 4 see exactly what 1
    replica of batch 8 sees. Iteration starts at batch ``start_batch``.
    """

    def __init__(
        self, num_windows: int, batch_size: int, seed: int, rank: int = 0, start_batch: int = 0, num_replicas: int = 1
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        self.num_windows, self.batch_size, self.num_replicas = num_windows, batch_size, num_replicas
        self.seed, self.rank, self.start_batch = seed, rank, start_batch

    def __iter__(self):
        batch = self.start_batch
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        while True:
            yield self.draw(np.random.default_rng((self.seed, batch)), self.batch_size * self.num_replicas)[mine]
            batch += 1

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """The ``size`` window ids of one global batch, int64 of shape (size,), drawn from ``rng``."""
        return rng.integers(0, self.num_windows, size=size)


class MixtureWindowBatches(RandomWindowBatches):
    """``RandomWindowBatches`` over the windows of several corpora laid end to end (corpus k owns window ids
    ``[sum(corpus_windows[:k]), sum(corpus_windows[:k + 1]))``): each window's corpus is a weighted choice
    (``lit_gpt.data.mixture.draw_corpora``), then its offset is uniform within that corpus, both from the global
    batch's generator.

    Args:
        corpus_windows: the number of windows of each corpus (each > 0).
        weights: each corpus's share of the windows, summing to 1, shape (len(corpus_windows),).
        batch_size, seed, rank, start_batch, num_replicas: as ``RandomWindowBatches``.
    """

    def __init__(
        self,
        corpus_windows: list[int],
        weights: np.ndarray,
        batch_size: int,
        seed: int,
        rank: int = 0,
        start_batch: int = 0,
        num_replicas: int = 1,
    ) -> None:
        super().__init__(sum(corpus_windows), batch_size, seed, rank, start_batch, num_replicas)
        self.windows = np.asarray(corpus_windows, dtype=np.int64)
        self.first = np.concatenate([[0], np.cumsum(self.windows)[:-1]])
        self.weights = np.asarray(weights, dtype=np.float64)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        corpus = draw_corpora(rng, self.weights, size)
        return self.first[corpus] + (rng.random(size) * self.windows[corpus]).astype(np.int64)


class TrainWindows(Dataset):
    """Random-access training windows over token shards (1-D arrays); indexed by an array of window ids.

    Window ids 0 .. num_windows-1 enumerate every start offset of every shard (windows never cross shards).
    ``dataset[ids]`` with ``ids`` of shape (B,) returns ``(x, y)``, int64 tensors of shape (B, block_size) with
    ``y[:, t] == x[:, t + 1]`` for t < block_size - 1.
    """

    def __init__(self, shards: list[np.ndarray] | np.ndarray, block_size: int) -> None:
        self.shards = [shards] if isinstance(shards, np.ndarray) else list(shards)
        self.block_size = block_size
        counts = [max(0, len(s) - block_size) for s in self.shards]  # starts leaving room for the target
        self.first = np.cumsum([0] + counts)  # window id of each shard's first window
        self.num_windows = int(self.first[-1])

    def __getitem__(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        span = np.arange(self.block_size + 1)
        if len(self.shards) == 1:
            window = self.shards[0][ids[:, None] + span]  # (B, T+1), one gather
        else:
            shard = np.searchsorted(self.first, ids, side="right") - 1
            window = np.stack([self.shards[s][i - self.first[s] + span] for s, i in zip(shard, ids)])
        window = torch.from_numpy(window.astype(np.int64))
        return window[:, :-1], window[:, 1:]


class ValidationWindows(Dataset):
    """Non-overlapping windows covering a token array so that each position 1..N-1 is a target exactly once.

    Item i is ``(x, y)``, int64 tensors of shape (block_size,); targets already counted by an earlier window
    (only in the last, overlapping one) are ``IGNORE_INDEX``. ``rank``/``world_size`` select every
    ``world_size``-th window.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.tokens, self.block_size = tokens, block_size
        n_targets = len(tokens) - 1
        starts = list(range(0, n_targets - block_size + 1, block_size))
        covered = len(starts) * block_size
        windows = [(s, 0) for s in starts]
        if covered < n_targets:  # a partial remainder: re-read the final window, ignore targets seen already
            last = n_targets - block_size
            windows.append((last, covered - last))
        self.windows = windows[rank::world_size]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, n_ignored = self.windows[i]
        window = torch.from_numpy(self.tokens[start : start + self.block_size + 1].astype(np.int64))
        x, y = window[:-1], window[1:].clone()
        y[:n_ignored] = IGNORE_INDEX
        return x, y


def document_inputs(x: torch.Tensor, eot_id: int, reset_positions: bool = False) -> dict[str, torch.Tensor]:
    """``GPT.forward``'s keyword arguments for document masking of token windows ``x`` (B, T), on x's device.

    ``documents`` (B, T) int64: the end-of-text tokens up to and including each token, so the end-of-text between two
    documents is the first token of the second (as GPT-2's, it predicts that document's first token) and a window's
    first, possibly cut, document is 0. With ``reset_positions`` also ``positions`` (B, T): each token's distance
    from its document's first token in the window (from the window's start for document 0).
    """
    boundary = x == eot_id  # (B, T)
    inputs = {"documents": boundary.long().cumsum(dim=1)}
    if reset_positions:
        t = torch.arange(x.size(1), device=x.device).expand_as(x)  # (B, T)
        start = torch.where(boundary, t, torch.zeros_like(t)).cummax(dim=1).values  # each document's first token
        inputs["positions"] = t - start
    return inputs
