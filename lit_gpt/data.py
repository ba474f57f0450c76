"""The LightningDataModule that serves (input, target) token windows from a prepared corpus.

Sampling choice. Training batches are windows of ``block_size + 1`` tokens at uniformly random offsets of the
training split (as in nanoGPT; a window never crosses from one shard into the next): input ``x = w[:-1]``,
target ``y = w[1:]``. The stream of offsets is infinite
and stateless: batch ``b`` on rank ``r`` is drawn from ``numpy.random.default_rng((seed, r, b))``. So there is
no "epoch" (training length is ``trainer.max_steps``), ranks draw different batches without a
DistributedSampler, and a resumed run continues with exactly the batches it would have seen.

Validation covers the whole validation split once, in non-overlapping windows: every token after the first is
a target exactly once. The last, partial window is taken as the final ``block_size + 1`` tokens with the targets
already covered set to ``IGNORE_INDEX``, so all batches keep one shape and ``val/loss`` is the exact mean over
the split, comparable between runs with the same tokenizer. Ranks take every ``world_size``-th window.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from lit_gpt.config import ConfigError
from lit_gpt.corpus import Cleaning
from lit_gpt.prepare import download, load_split, prepare

IGNORE_INDEX = -100
"""Target value that the loss and the perplexity metric skip (PyTorch's cross-entropy default)."""


class RandomWindowBatches(Sampler):
    """Infinite sampler of batches of window start offsets, each an int64 array of shape (batch_size,).

    Offsets are uniform in [0, num_windows). Batch ``b`` (counting from 0 over the whole run) on rank ``rank``
    comes from ``numpy.random.default_rng((seed, rank, b))``; iteration starts at batch ``start_batch``.
    """

    def __init__(self, num_windows: int, batch_size: int, seed: int, rank: int = 0, start_batch: int = 0) -> None:
        self.num_windows, self.batch_size = num_windows, batch_size
        self.seed, self.rank, self.start_batch = seed, rank, start_batch

    def __iter__(self):
        batch = self.start_batch
        while True:
            rng = np.random.default_rng((self.seed, self.rank, batch))
            yield rng.integers(0, self.num_windows, size=self.batch_size)
            batch += 1


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


class TextDataModule(LightningDataModule):
    """Train/val token windows from one or more text files, tokenized once into memory-mapped files.

    Args:
        path: a file, a folder (its ``.txt``/``.jsonl`` files and ``.gz`` forms) or a glob (see ``lit_gpt.corpus``).
        tokenizer: ``char`` (character vocabulary of the corpus), a tiktoken encoding (``gpt2``, ``cl100k_base``),
            or a folder written by ``lit-gpt train-tokenizer``.
        block_size: tokens per training window; linked from ``model.config.block_size`` on the command line.
        batch_size: windows per batch (per device), for training and validation.
        val_fraction: fraction of the corpus, taken from its end, used for validation.
        cache_dir: where the token files go; default ``data/prepared/<name>-<tokenizer>-<hash of path>``.
        download_url: fetched into ``path`` when ``path`` is a missing file (Tiny Shakespeare's configs set it).
        seed: seed of the training offsets.
        num_workers: DataLoader worker processes (batches are one numpy gather each: 0 is fastest on a small CPU;
            on a GPU, 1-2 workers take batch preparation off the training step's critical path).
        val_path: the validation corpus (e.g. a dataset's valid.txt), instead of splitting ``path``.
        separator: string that separates documents inside ``.txt`` files (e.g. ``<|endoftext|>``).
        text_field: the field holding the text in ``.jsonl`` records.
        cleaning: cleaning and deduplication switches (``lit_gpt.corpus.Cleaning``).
        split_by: ``auto``, ``document`` or ``tail`` (see ``lit_gpt.prepare``).
        num_threads: tokenizer threads; None uses every core.
    """

    def __init__(
        self,
        path: str = "data/tinyshakespeare/input.txt",
        tokenizer: str = "gpt2",
        block_size: int = 256,
        batch_size: int = 12,
        val_fraction: float = 0.1,
        cache_dir: str | None = None,
        download_url: str | None = None,
        seed: int = 1337,
        num_workers: int = 0,
        val_path: str | None = None,
        separator: str | None = None,
        text_field: str = "text",
        cleaning: Cleaning | None = None,
        split_by: str = "auto",
        num_threads: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be a positive integer, got {batch_size}")
        self.path, self.tokenizer_name, self.block_size, self.batch_size = path, tokenizer, block_size, batch_size
        self.val_fraction, self.download_url = val_fraction, download_url
        self.seed, self.num_workers = seed, num_workers
        self.options = dict(val_path=val_path, separator=separator, text_field=text_field,
                            cleaning=cleaning or Cleaning(), split_by=split_by, num_threads=num_threads)  # fmt: skip
        if cache_dir is None:
            key = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
            stem = Path(path.rstrip("/*")).stem or "corpus"
            label = tokenizer
            if os.path.isdir(tokenizer) or "/" in tokenizer or os.sep in tokenizer:  # a BPE folder: name + path hash
                folder = os.path.abspath(os.path.expanduser(tokenizer))
                label = f"{Path(folder).name}.{hashlib.sha1(folder.encode()).hexdigest()[:6]}"
            cache_dir = os.path.join("data", "prepared", f"{stem}-{label}-{key}")
        self.cache_dir = cache_dir
        self._meta: dict | None = None
        self.train_shards: list[np.ndarray] = []
        self.val_tokens: np.ndarray | None = None

    def _prepared(self) -> dict:
        """Download (if configured and missing) and tokenize (if stale) once per process; return the metadata."""
        if self._meta is None:
            if self.download_url and not os.path.exists(self.path):
                download(self.download_url, self.path)
            self._meta = prepare(
                self.path, self.tokenizer_name, self.cache_dir, self.val_fraction, seed=self.seed, progress=True,
                **self.options,
            )
        return self._meta

    @property
    def meta(self) -> dict:
        """The prepared folder's metadata (see ``lit_gpt.prepare``); prepares the corpus on first use."""
        return self._prepared()

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer (prepares the corpus if the tokenizer is built from it)."""
        return self._prepared()["vocab_size"]

    @property
    def tokenizer_spec(self) -> dict:
        """The tokenizer's spec (see ``lit_gpt.tokenizer.Tokenizer.spec``), stored in checkpoints."""
        return self._prepared()["tokenizer"]

    def prepare_data(self) -> None:
        self._prepared()

    def setup(self, stage: str) -> None:
        meta = self._prepared()
        self.train_shards = load_split(self.cache_dir, "train", meta)
        (self.val_tokens,) = load_split(self.cache_dir, "val", meta)
        longest = max(len(s) for s in self.train_shards)
        for split, tokens in (("training", longest), ("validation", len(self.val_tokens))):
            if tokens < self.block_size + 1:
                raise ConfigError(
                    f"the {split} split of {self.path} has {tokens} tokens, fewer than one window of "
                    f"block_size + 1 = {self.block_size + 1}; use a larger corpus or a smaller block_size"
                )

    def _rank_and_world_size(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, _ = self._rank_and_world_size()
        # A resumed run continues the offset stream at the batch it had reached.
        start_batch = self.trainer.global_step * self.trainer.accumulate_grad_batches if self.trainer else 0
        dataset = TrainWindows(self.train_shards, self.block_size)
        sampler = RandomWindowBatches(dataset.num_windows, self.batch_size, self.seed, rank, start_batch)
        # batch_size=None: each sampler item is already a whole batch of offsets, gathered in one numpy call.
        return DataLoader(dataset, batch_size=None, sampler=sampler, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._rank_and_world_size()
        dataset = ValidationWindows(self.val_tokens, self.block_size, rank, world_size)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, **self._loader_options())

    def _loader_options(self) -> dict:
        # Workers (when asked for) gather the next batches while the device computes, and live across validations;
        # page-locked batches let Lightning's host-to-GPU copy run asynchronously.
        cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        # Each new iterator draws its workers' base seed from `generator`: a generator of its own keeps that draw off
        # torch's global one, so validations and restarts leave the training random stream (dropout) unchanged.
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0, "pin_memory": cuda,
                "generator": torch.Generator()}  # fmt: skip

    def test_dataloader(self) -> DataLoader:
        """``lit-gpt test`` evaluates on the validation split: a single corpus has no separate test split."""
        return self.val_dataloader()
