"""The data modules' shared validation (``TokenDataModule``) and ``TextDataModule``, which prepares corpora once into
memory-mapped token shards and serves their windows.

``TokenDataModule`` is what ``lit-gpt fit`` accepts as ``data`` (``--data.class_path``; ``TextDataModule`` is the
default, ``lit_gpt.train.streaming.StreamingTextDataModule`` streams litdata chunks). It owns validation: each
corpus's whole validation split in non-overlapping windows (``lit_gpt.data.windows.ValidationWindows``, every target
once), one loader per corpus of a mixture, so ``val/loss`` is exact (see ``lit_gpt.data.mixture`` for mixtures).

``TextDataModule``: preparation is ``lit_gpt.data.prepare.prepare_corpus`` (download if missing, tokenize into
shards, reuse while fresh); opening the shards checks their sizes and verification stamps and reads them only when
asked (``verify``) or changed (``lit_gpt.data.shards``); the windows and their sampling are ``lit_gpt.data.windows``'s.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_gpt.data.corpus import Cleaning
from lit_gpt.data.mixture import Corpus, mixture_weights, require_shared_vocabulary
from lit_gpt.data.prepare import default_cache_dir, load_split, prepare_corpus
from lit_gpt.data.windows import MixtureWindowBatches, RandomWindowBatches, TrainWindows, ValidationWindows
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


class TokenDataModule(LightningDataModule):
    """The base of lit_gpt's data modules: the tokenizer facts that ``lit-gpt fit`` links into the model, and exact
    validation over each corpus's validation split.

    A subclass sets ``block_size``, ``batch_size``, ``val_batch_size``, ``num_workers``, ``names`` (one per corpus,
    or None for a single corpus), ``weights`` (normalised, shape (corpora,)) and, in ``setup``, ``val_tokens`` (one
    1-D token array per corpus); it implements ``metas()`` (each corpus's prepared metadata) and
    ``train_dataloader()``.
    """

    block_size: int
    batch_size: int
    val_batch_size: int | None
    num_workers: int
    names: list[str] | None
    weights: np.ndarray
    val_tokens: list[np.ndarray]

    def metas(self) -> list[dict]:
        """The metadata of each corpus's prepared data, in order (``meta.json``)."""
        raise NotImplementedError

    def _shared(self, key: str):
        """``meta[key]`` of the first corpus, which every corpus must share.

        Raises:
            ConfigError: when the corpora of a mixture were tokenized differently.
        """
        metas = self.metas()
        if any(meta["tokenizer"] != metas[0]["tokenizer"] for meta in metas[1:]):
            kinds = [f"{name}: {meta['tokenizer_name']}" for name, meta in zip(self.names or [], metas)]
            raise ConfigError(f"the corpora of data.mixture must share one tokenizer, got {', '.join(kinds)} (a 'char' "
                              "vocabulary is built per corpus: use a BPE for a mixture)")  # fmt: skip
        return metas[0][key]

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer; linked into ``model.config.vocab_size`` on the command line."""
        return self._shared("vocab_size")

    @property
    def tokenizer_spec(self) -> dict:
        """The tokenizer's spec (see ``lit_gpt.tokenizer.Tokenizer.spec``), stored in checkpoints."""
        return self._shared("tokenizer")

    @property
    def val_corpora(self) -> list[tuple[str, float]] | None:
        """(name, weight) of each corpus of a mixture, in the order of the validation loaders; None for a single
        corpus. ``lit_gpt.train.module.LitGPT`` logs ``val/loss/<name>`` and their weighted sum as ``val/loss``."""
        return None if self.names is None else [(n, float(w)) for n, w in zip(self.names, self.weights)]

    def _check_windows(self, what: str, split: str, tokens: int) -> None:
        if tokens < self.block_size + 1:
            raise ConfigError(
                f"the {split} split of {what} has {tokens} tokens, fewer than one window of block_size + 1 = "
                f"{self.block_size + 1}; use a larger corpus or a smaller block_size"
            )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The whole validation split of each corpus, once: one loader, or one per corpus of a mixture."""
        rank, replicas = data_parallel_rank(self.trainer)
        batch_size = self.val_batch_size or self._val_batch_size_for_device()
        loaders = [DataLoader(ValidationWindows(tokens, self.block_size, rank, replicas), batch_size=batch_size,
                              shuffle=False, **self._loader_options()) for tokens in self.val_tokens]  # fmt: skip
        return loaders if self.names is not None else loaders[0]

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """``lit-gpt test`` evaluates on the validation split: a corpus has no separate test split."""
        return self.val_dataloader()

    def _val_batch_size_for_device(self) -> int:
        """Validation windows per batch when ``val_batch_size`` is None (see ``TextDataModule``)."""
        device = self.trainer.strategy.root_device.type if self.trainer is not None else "cpu"
        if device == "cpu":
            return self.batch_size
        logits_per_window = self.block_size * self.vocab_size * 4  # float32 bytes
        return int(min(max(VAL_LOGITS_BYTES // logits_per_window, self.batch_size), 8 * self.batch_size))

    def _loader_options(self) -> dict:
        # Workers (when asked for) gather the next batches while the device computes, and live across validations;
        # page-locked batches let Lightning's host-to-GPU copy run asynchronously.
        cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        # Each new iterator draws its workers' base seed from `generator`: a generator of its own keeps that draw off
        # torch's global one, so validations and restarts leave the training random stream (dropout) unchanged.
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0, "pin_memory": cuda,
                "generator": torch.Generator()}  # fmt: skip


class TextDataModule(TokenDataModule):
    """Train/val token windows from one corpus or a mixture of corpora, tokenized once into memory-mapped files.

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
        seed: seed of the document split, the training offsets and a mixture's draws.
        num_workers: DataLoader worker processes (batches are one numpy gather each: 0 is fastest on a small CPU;
            on a GPU, 1-2 workers take batch preparation off the training step's critical path).
        val_path: the validation corpus (e.g. a dataset's valid.txt), instead of splitting ``path``.
        separator: string that separates documents inside ``.txt`` files (e.g. ``<|endoftext|>``).
        text_field: the field holding the text in ``.jsonl`` records.
        cleaning: cleaning, quality filters and deduplication switches (``lit_gpt.data.corpus.Cleaning``).
        split_by: ``auto``, ``document`` or ``tail`` (see ``lit_gpt.data.prepare``).
        num_threads: tokenizer threads; None uses every core.
        mixture: several corpora with weights (``lit_gpt.data.mixture.Corpus``: each has its own ``path``,
            ``val_path``, ``cleaning``, ...) instead of the one corpus that ``path`` and the options above describe;
            ``tokenizer``, ``seed`` and ``num_threads`` are shared. Validation then logs ``val/loss/<name>`` per
            corpus and their weighted sum as ``val/loss`` (see ``lit_gpt.data.mixture``).
        verify: read every shard at setup, checking its token ids and SHA-256 against its stamp; without it only the
            shards whose size or mtime changed are read (``lit_gpt.data.shards``).
        build: tokenize each corpus when its token files are missing or stale (once per machine: processes of one
            machine take turns). False refuses instead, saying to run ``lit-gpt prepare``: ``lit-gpt fit`` sets it
            for runs on several machines (``trainer.num_nodes`` > 1), whose locks cannot see each other.
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
        mixture: list[Corpus] | None = None,
        verify: bool = False,
        build: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ConfigError(f"data.batch_size and data.val_batch_size must be positive integers, got {batch_size} "
                              f"and {val_batch_size}")  # fmt: skip
        self.path, self.tokenizer_name, self.block_size, self.batch_size = path, tokenizer, block_size, batch_size
        self.val_batch_size, self.seed, self.num_workers, self.verify = val_batch_size, seed, num_workers, verify
        single = Corpus(name="corpus", path=path, val_path=val_path, val_fraction=val_fraction, separator=separator,
                        text_field=text_field, cleaning=cleaning, split_by=split_by, cache_dir=cache_dir,
                        download_url=download_url)  # fmt: skip
        self.corpora = list(mixture) if mixture is not None else [single]
        self.weights = mixture_weights(self.corpora)
        if mixture is not None:
            require_shared_vocabulary(tokenizer)
        self.names = [c.name for c in self.corpora] if mixture is not None else None
        # the arguments of prepare_corpus for each corpus, which decide its token files
        self.corpus_options = [
            {**c.corpus_options(), "cache_dir": c.cache_dir or default_cache_dir(c.path, tokenizer),
             "tokenizer": tokenizer, "seed": seed, "num_threads": num_threads,
             "build": build} for c in self.corpora
        ]  # fmt: skip
        self.cache_dir = self.corpus_options[0]["cache_dir"]
        self._metas: list[dict] | None = None
        self.train_shards: list[np.ndarray] = []
        self.corpus_windows: list[int] = []
        self.val_tokens = []

    def metas(self) -> list[dict]:
        """Download (if configured and missing) and tokenize (if stale) once per process; each corpus's metadata."""
        if self._metas is None:
            self._metas = [prepare_corpus(**options)[1] for options in self.corpus_options]
        return self._metas

    @property
    def meta(self) -> dict:
        """The first corpus's prepared metadata (see ``lit_gpt.data.prepare``); prepares the corpora on first use."""
        return self.metas()[0]

    def prepare_data(self) -> None:
        self.metas()

    def setup(self, stage: str) -> None:
        self.vocab_size  # noqa: B018  (prepares, and checks that the corpora share a tokenizer)
        self.train_shards, self.corpus_windows, self.val_tokens = [], [], []
        for corpus, options, meta in zip(self.corpora, self.corpus_options, self.metas()):
            train = load_split(options["cache_dir"], "train", meta, verify=self.verify)
            (val,) = load_split(options["cache_dir"], "val", meta, verify=self.verify)
            self._check_windows(corpus.path, "training", max(len(s) for s in train))
            self._check_windows(corpus.path, "validation", len(val))
            self.train_shards += train
            self.corpus_windows.append(TrainWindows(train, self.block_size).num_windows)
            self.val_tokens.append(val)

    def train_dataloader(self) -> DataLoader:
        rank, replicas = data_parallel_rank(self.trainer)
        # A resumed run continues the offset stream at the batch it had reached.
        start_batch = self.trainer.global_step * self.trainer.accumulate_grad_batches if self.trainer else 0
        dataset = TrainWindows(self.train_shards, self.block_size)
        if self.names is None:
            sampler = RandomWindowBatches(dataset.num_windows, self.batch_size, self.seed, rank, start_batch, replicas)
        else:
            sampler = MixtureWindowBatches(self.corpus_windows, self.weights, self.batch_size, self.seed, rank,
                                           start_batch, replicas)  # fmt: skip
        # batch_size=None: each sampler item is already a whole batch of offsets, gathered in one numpy call.
        return DataLoader(dataset, batch_size=None, sampler=sampler, **self._loader_options())
