"""``TextDataModule``: the LightningDataModule that prepares a corpus once and serves its token windows.

Preparation is ``lit_gpt.data.prepare.prepare_corpus`` (download if missing, tokenize into shards, reuse while
fresh); the windows and their sampling are ``lit_gpt.data.windows``'s (its docstring gives the sampling choice).
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_gpt.data.corpus import Cleaning
from lit_gpt.data.prepare import default_cache_dir, load_split, prepare_corpus
from lit_gpt.data.windows import RandomWindowBatches, TrainWindows, ValidationWindows
from lit_gpt.errors import ConfigError


def data_parallel_rank(trainer) -> tuple[int, int]:
    """(rank, number) of this process among the data-parallel replicas, which must each see different batches:
    Lightning's ``strategy.distributed_sampler_kwargs`` (all processes under DDP; only the data-parallel dimension
    under ``ModelParallelStrategy``, whose tensor-parallel ranks must see the same batches), or (0, 1) without a
    trainer or on one device."""
    kwargs = getattr(getattr(trainer, "strategy", None), "distributed_sampler_kwargs", None) or {}
    return kwargs.get("rank", 0), kwargs.get("num_replicas", 1)


VAL_LOGITS_BYTES = 2 * 2**30
"""Bytes of float32 logits one validation batch may hold on a GPU when ``val_batch_size`` is None."""


class TextDataModule(LightningDataModule):
    """Train/val token windows from one or more text files, tokenized once into memory-mapped files.

    Args:
        path: a file, a folder (its ``.txt``/``.jsonl`` files and ``.gz`` forms) or a glob (see
            ``lit_gpt.data.corpus``).
        tokenizer: ``char`` (character vocabulary of the corpus), a tiktoken encoding (``gpt2``, ``cl100k_base``),
            or a folder written by ``lit-gpt train-tokenizer``.
        block_size: tokens per training window; linked from ``model.config.block_size`` on the command line.
        batch_size: training windows per batch (per device).
        val_batch_size: validation windows per batch (per device). None sizes it for the device: ``batch_size`` on
            a CPU (larger batches were slower there: their activations leave the cache, bench/validation_cost.py);
            on a GPU as many windows as keep one batch's float32 logits within 2 GiB, between ``batch_size`` and
            8 x ``batch_size``. It changes speed only, never ``val/loss``.
        val_fraction: share of the corpus used for validation: whole documents drawn by a seeded hash
            (``split_by: document``), or the last tokens of a one-document corpus (``tail``); see ``split_by``.
        cache_dir: where the token files go; default ``data/prepared/<name>-<tokenizer>-<hash of path>``.
        download_url: fetched into ``path`` when ``path`` is a missing file (Tiny Shakespeare's configs set it).
        seed: seed of the training offsets.
        num_workers: DataLoader worker processes (batches are one numpy gather each: 0 is fastest on a small CPU;
            on a GPU, 1-2 workers take batch preparation off the training step's critical path).
        val_path: the validation corpus (e.g. a dataset's valid.txt), instead of splitting ``path``.
        separator: string that separates documents inside ``.txt`` files (e.g. ``<|endoftext|>``).
        text_field: the field holding the text in ``.jsonl`` records.
        cleaning: cleaning and deduplication switches (``lit_gpt.data.corpus.Cleaning``).
        split_by: ``auto``, ``document`` or ``tail`` (see ``lit_gpt.data.prepare``).
        num_threads: tokenizer threads; None uses every core.
    """

    def __init__(
        self,
        path: str = "data/tinyshakespeare/input.txt",
        tokenizer: str = "gpt2",
        block_size: int = 256,
        batch_size: int = 12,
        val_batch_size: int | None = None,
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
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ConfigError(f"data.batch_size and data.val_batch_size must be positive integers, got {batch_size} "
                              f"and {val_batch_size}")  # fmt: skip
        self.path, self.tokenizer_name, self.block_size, self.batch_size = path, tokenizer, block_size, batch_size
        self.val_batch_size = val_batch_size
        self.seed, self.num_workers = seed, num_workers
        self.cache_dir = cache_dir or default_cache_dir(path, tokenizer)
        # the arguments of prepare_corpus, which decide the token files
        self.corpus_options = dict(
            path=path, tokenizer=tokenizer, val_fraction=val_fraction, cache_dir=self.cache_dir,
            download_url=download_url, seed=seed, val_path=val_path, separator=separator, text_field=text_field,
            cleaning=cleaning or Cleaning(), split_by=split_by, num_threads=num_threads,
        )  # fmt: skip
        self._meta: dict | None = None
        self.train_shards: list[np.ndarray] = []
        self.val_tokens: np.ndarray | None = None

    def _prepared(self) -> dict:
        """Download (if configured and missing) and tokenize (if stale) once per process; return the metadata."""
        if self._meta is None:
            _, self._meta = prepare_corpus(**self.corpus_options)
        return self._meta

    @property
    def meta(self) -> dict:
        """The prepared folder's metadata (see ``lit_gpt.data.prepare``); prepares the corpus on first use."""
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

    def train_dataloader(self) -> DataLoader:
        rank, replicas = data_parallel_rank(self.trainer)
        # A resumed run continues the offset stream at the batch it had reached.
        start_batch = self.trainer.global_step * self.trainer.accumulate_grad_batches if self.trainer else 0
        dataset = TrainWindows(self.train_shards, self.block_size)
        sampler = RandomWindowBatches(dataset.num_windows, self.batch_size, self.seed, rank, start_batch, replicas)
        # batch_size=None: each sampler item is already a whole batch of offsets, gathered in one numpy call.
        return DataLoader(dataset, batch_size=None, sampler=sampler, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        rank, replicas = data_parallel_rank(self.trainer)
        dataset = ValidationWindows(self.val_tokens, self.block_size, rank, replicas)
        batch_size = self.val_batch_size or self._val_batch_size_for_device()
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **self._loader_options())

    def _val_batch_size_for_device(self) -> int:
        """Validation windows per batch when ``val_batch_size`` is None (see the class docstring)."""
        device = self.trainer.strategy.root_device.type if self.trainer is not None else "cpu"
        if device == "cpu":
            return self.batch_size
        logits_per_window = self.block_size * self._prepared()["vocab_size"] * 4  # float32 bytes
        return int(min(max(VAL_LOGITS_BYTES // logits_per_window, self.batch_size), 8 * self.batch_size))

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
