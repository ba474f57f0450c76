"""Training windows streamed from litdata chunks (written by ``lit_gpt.data.litdata_export``), with an exact position.

Windows. ``litdata.StreamingDataset`` with ``TokensLoader(block_size + 1)`` serves each chunk as consecutive,
non-overlapping windows of ``block_size + 1`` tokens (a chunk's last ``chunk_tokens mod (block_size + 1)`` tokens
are not used; the transition from one window into the next is never a target: 1 token in ``block_size + 1``, the
price of streaming whole windows). ``x = w[:-1]``, ``y = w[1:]``. Order: litdata shuffles the chunks and the windows
within them with ``seed`` and the epoch, and deals disjoint parts to the data-parallel ranks and, within a rank, to
the DataLoader workers (``drop_last``: every rank and worker gets whole batches, so the ranks stay in step).

Mixtures. Each corpus has its own ``StreamingDataLoader`` (its own workers and epochs: a small corpus starts its
next epoch while a large one is still in its first). Window ``i`` of batch ``b`` comes from the corpus
``lit_gpt.data.mixture.draw_corpora`` draws from ``default_rng((seed, b))``: the same draw on every rank, so every
rank takes the same number of windows from each corpus.

Position. ``MixedStream`` counts, for each corpus, the epochs completed, the loader batches pulled in the current
epoch and the windows taken from the last one: plain integers, the same on every rank. Resuming rebuilds litdata's
own loader state from them (``restore``: the state ``StreamingDataLoader.state_dict`` would hold after that many
batches, workers taking batches in turn), pulls the current batch again and drops the windows already taken, so a
resumed run continues with exactly the windows an uninterrupted run would have seen, with or without workers.
Lightning does not save a litdata loader's state itself and fetches one batch ahead of the step it
trains, so ``MixedStream`` keeps the position after each recent batch and the data module saves the one that
matches the trainer's step (``lit_gpt.train.streaming``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from lit_gpt.data.litdata_export import import_litdata, join
from lit_gpt.data.mixture import draw_corpora
from lit_gpt.errors import ConfigError

HISTORY = 64
"""Positions kept after the latest batches (Lightning fetches one batch ahead)."""


def int64_batch(windows: list[np.ndarray]) -> torch.Tensor:
    """The loaders' ``collate_fn``: windows (block_size + 1,) as stored (uint16 or uint32 arrays) -> one int64 batch
    (B, block_size + 1), built in the worker, so that a page-locked batch (``pin_memory``) is the one the model
    reads."""
    return torch.from_numpy(np.stack(windows).astype(np.int64))


def open_train(
    input_dir: str, block_size: int, seed: int, cache_dir: str | None = None, max_cache_size: int | str | None = None
):
    """The shuffled ``litdata.StreamingDataset`` of windows of ``block_size + 1`` tokens of ``input_dir/train``."""
    litdata = import_litdata()
    return litdata.StreamingDataset(
        join(input_dir, "train"),
        item_loader=litdata.TokensLoader(block_size + 1),
        shuffle=True,
        drop_last=True,
        seed=seed,
        cache_dir=cache_dir,
        max_cache_size=max_cache_size,
    )


def read_val_tokens(input_dir: str, meta: dict, cache_dir: str | None = None) -> np.ndarray:
    """The whole validation split of an export, in order: a 1-D array of ``meta["dtype"]`` tokens.

    Raises:
        ConfigError: when the items read disagree with ``meta`` (a partial or foreign export).
    """
    litdata = import_litdata()
    dataset = litdata.StreamingDataset(join(input_dir, "val"), cache_dir=cache_dir)
    tokens = np.concatenate([dataset[i] for i in range(meta["litdata"]["val_items"])]).astype(meta["dtype"])
    if len(tokens) != meta["tokens"]["val"]:
        raise ConfigError(
            f"{join(input_dir, 'val')} holds {len(tokens)} tokens, meta.json says {meta['tokens']['val']}; export it "
            "again with lit-gpt prepare (format litdata)"
        )
    return tokens


def restore(loader, epochs: int, batches: int) -> None:
    """Make the next iteration of the ``StreamingDataLoader`` ``loader`` continue after ``batches`` batches of its
    epoch ``epochs + 1`` (litdata counts epochs from 1): litdata's own state for that point, as its ``state_dict``
    would give it (``batches * batch_size`` samples yielded, workers in turn), loaded with ``load_state_dict``."""
    loader.current_epoch = epochs  # litdata's __iter__ adds 1 when it starts an epoch afresh
    if batches == 0:
        return
    dataset, workers = loader.dataset, max(1, loader.num_workers)
    dataset.set_epoch(epochs + 1)
    samples = batches * loader.batch_size
    loader.load_state_dict(
        {
            "dataset": dataset.state_dict(samples, loader.num_workers, loader.batch_size),
            "current_epoch": epochs + 1,
            "num_samples_yielded": samples,
            "latest_worker_idx": (batches - 1) % workers,
        }
    )


class Cursor:
    """One corpus's ``StreamingDataLoader`` read window by window, with its position: ``epochs`` completed,
    ``batches`` pulled in the current epoch, ``taken`` windows of the last of them already used."""

    def __init__(self, loader, epochs: int = 0, batches: int = 0, taken: int = 0) -> None:
        self.loader, self.epochs, self.batches, self.taken = loader, epochs, batches, taken
        self.iterator: Iterator | None = None
        self.current: torch.Tensor | None = None  # the last batch pulled, int64 (batch_size, block_size + 1)

    @property
    def position(self) -> list[int]:
        return [self.epochs, self.batches, self.taken]

    def _start(self) -> None:
        restore(self.loader, self.epochs, max(0, self.batches - 1))
        self.iterator = iter(self.loader)
        if self.batches:  # pull the batch that was being read again
            self.current = next(self.iterator)

    def _pull(self) -> None:
        try:
            batch = next(self.iterator)
            self.batches += 1
        except StopIteration:  # the end of an epoch: litdata reshuffles for the next one
            self.epochs, self.batches = self.epochs + 1, 1
            self.iterator = iter(self.loader)
            batch = next(self.iterator, None)
            if batch is None:
                raise ConfigError(
                    "a streaming corpus has no whole batch for each worker of each device; use fewer "
                    "workers, devices or windows per batch"
                ) from None
        self.current, self.taken = batch, 0

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` windows, int64 (n, block_size + 1)."""
        if self.iterator is None:
            self._start()
        parts = []
        while n:
            if self.current is None or self.taken == len(self.current):
                self._pull()
            count = min(n, len(self.current) - self.taken)
            parts.append(self.current[self.taken : self.taken + count])
            self.taken, n = self.taken + count, n - count
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class MixedStream:
    """The training batches of one or more corpora, endless: an iterable of ``(x, y)``, int64 (batch_size,
    block_size) each, ``y[:, t] == x[:, t + 1]``.

    Args:
        loaders: one ``StreamingDataLoader`` per corpus (``batch_size`` windows per batch, ``drop_last``,
            ``collate_fn=int64_batch``).
        weights: each corpus's share of the windows, summing to 1.
        batch_size: windows per batch.
        seed: seed of the mixture's draws.
        start: a ``position`` to continue from (``{"batch": b, "corpora": [[epochs, batches, taken], ...]}``);
            None starts every corpus at its beginning.
    """

    def __init__(self, loaders: list, weights: np.ndarray, batch_size: int, seed: int, start: dict | None = None):
        self.weights, self.batch_size, self.seed = weights, batch_size, seed
        start = start or {"batch": 0, "corpora": [[0, 0, 0]] * len(loaders)}
        self.cursors = [Cursor(loader, *position) for loader, position in zip(loaders, start["corpora"])]
        self.batch = start["batch"]
        self.history = {self.batch: self.position()}

    def position(self) -> dict:
        """Where the stream stands now: the batches produced and each corpus's cursor."""
        return {"batch": self.batch, "corpora": [cursor.position for cursor in self.cursors]}

    def position_at(self, batch: int) -> dict:
        """The position after ``batch`` batches were produced (one of the latest ``HISTORY``)."""
        if batch not in self.history:
            raise RuntimeError(
                f"the stream's position after batch {batch} is not kept (it holds "
                f"{min(self.history)}-{max(self.history)})"
            )
        return self.history[batch]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            if len(self.cursors) == 1:
                windows = self.cursors[0].take(self.batch_size)
            else:
                corpus = torch.from_numpy(
                    draw_corpora(np.random.default_rng((self.seed, self.batch)), self.weights, self.batch_size)
                )
                windows = None
                for k, cursor in enumerate(self.cursors):
                    mine = corpus == k
                    if mine.any():
                        part = cursor.take(int(mine.sum()))
                        windows = windows if windows is not None else part.new_empty((self.batch_size, part.shape[1]))
                        windows[mine] = part
            self.batch += 1
            self.history[self.batch] = self.position()
            self.history.pop(self.batch - HISTORY, None)
            yield windows[:, :-1], windows[:, 1:]
