"""The data modules' shared validation (``TokenDataModule``) and ``TextDataModule``, which prepares corpora once into
memory-mapped token shards and serves their windows.

``TokenDataModule`` is what ``lit-gpt fit`` accepts as ``data`` (``data.class_path``; ``TextDataModule`` is the
default, ``lit_gpt.train.streaming.StreamingTextDataModule`` streams litdata chunks). It owns validation: each
corpus's whole validation split in non-overlapping windows (``lit_gpt.data.windows.ValidationWindows``, every target
once), one loader per corpus of a mixture, so ``val/loss`` is exact (see ``lit_gpt.data.mixture`` for mixtures).
Under ``document_mask`` it adds the tokens' document ids to every batch once on the device (training and validation
batches alike: ``(x, y)`` becomes ``(x, y, inputs)``, ``inputs`` being ``GPT.forward`` keyword arguments).

``TextDataModule``: preparation is ``lit_gpt.data.prepare.prepare_corpus`` (download if missing, tokenize into
shards, reuse while fresh); opening the shards checks their sizes and verification stamps and reads them only when
asked (``verify``) or changed (``lit_gpt.data.shards``); the windows and their sampling are ``lit_gpt.data.windows``'s.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_gpt.data.prepare import load_split, prepare_corpus
from lit_gpt.data.settings import StreamingData, TextData
from lit_gpt.data.windows import (
    MixtureWindowBatches,
    RandomWindowBatches,
    TrainWindows,
    ValidationWindows,
    document_inputs,
)
from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import Tokenizer


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

    Args:
        settings: the data section (``lit_gpt.data.settings.TextData`` or ``StreamingData``), kept as ``settings``:
            the batch settings (``Batching``), the corpora and their weights.

    A subclass sets, in ``setup``, ``val_tokens`` (one 1-D token array per corpus) and calls ``_setup_documents``;
    it implements ``metas()`` (each corpus's prepared metadata) and ``train_dataloader()``.
    """

    def __init__(self, settings: TextData | StreamingData) -> None:
        super().__init__()
        self.settings = settings
        mixture = settings.mixture
        self.names: list[str] | None = None if mixture is None else [c.name for c in mixture]
        self.weights: np.ndarray = settings.weights()  # normalised, shape (corpora,)
        self.val_tokens: list[np.ndarray] = []
        self.eot_id: int | None = None  # the end-of-text id between documents, under document masking (setup)

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
            raise ConfigError(
                f"the corpora of data.mixture must share one tokenizer, got {', '.join(kinds)} (a 'char' "
                "vocabulary is built per corpus: use a BPE for a mixture)"
            )
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

    def _setup_documents(self) -> None:
        """Under ``settings.document_mask``, find the end-of-text id that separates documents (``eot_id``).

        Raises:
            ConfigError: when no corpus's training split holds an end-of-text token (each is one document).
        """
        self.eot_id = None
        if not self.settings.document_mask:
            return
        if max(meta.get("documents", {}).get("train", 0) for meta in self.metas()) < 2:
            raise ConfigError(
                "data.document_mask needs documents separated by end-of-text tokens, but the training split is one "
                "document: set data.separator (e.g. <|endoftext|>) to cut the corpus into documents, or turn "
                "data.document_mask off"
            )
        self.eot_id = Tokenizer.from_spec(self.tokenizer_spec).eot_id

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Under ``document_mask``, ``(x, y)`` -> ``(x, y, inputs)`` with ``lit_gpt.data.windows.document_inputs``
        of x, computed on the device: the ``documents`` (and with ``reset_positions``, ``positions``) of
        ``GPT.forward``."""
        if self.eot_id is None:
            return batch
        x, y = batch
        return x, y, document_inputs(x, self.eot_id, self.settings.reset_positions)

    def _check_windows(self, what: str, split: str, tokens: int) -> None:
        block_size = self.settings.block_size
        if tokens < block_size + 1:
            raise ConfigError(
                f"the {split} split of {what} has {tokens} tokens, fewer than one window of block_size + 1 = "
                f"{block_size + 1}; use a larger corpus or a smaller block_size"
            )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The whole validation split of each corpus, once: one loader, or one per corpus of a mixture."""
        rank, replicas = data_parallel_rank(self.trainer)
        batch_size = self.settings.val_batch_size or self._val_batch_size_for_device()
        loaders = [
            DataLoader(
                ValidationWindows(tokens, self.settings.block_size, rank, replicas),
                batch_size=batch_size,
                shuffle=False,
                **self._loader_options(),
            )
            for tokens in self.val_tokens
        ]
        return loaders if self.names is not None else loaders[0]

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """``lit-gpt test`` evaluates on the validation split: a corpus has no separate test split."""
        return self.val_dataloader()

    def _val_batch_size_for_device(self) -> int:
        """Validation windows per batch when ``val_batch_size`` is None (see ``lit_gpt.data.settings.Batching``)."""
        device = self.trainer.strategy.root_device.type if self.trainer is not None else "cpu"
        batch_size = self.settings.batch_size
        if device == "cpu":
            return batch_size
        logits_per_window = self.settings.block_size * self.vocab_size * 4  # float32 bytes
        return int(min(max(VAL_LOGITS_BYTES // logits_per_window, batch_size), 8 * batch_size))

    def _loader_options(self) -> dict:
        # Workers (when asked for) gather the next batches while the device computes, and live across validations;
        # page-locked batches let Lightning's host-to-GPU copy run asynchronously.
        cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        # Each new iterator draws its workers' base seed from `generator`: a generator of its own keeps that draw off
        # torch's global one, so validations and restarts leave the training random stream (dropout) unchanged.
        workers = self.settings.num_workers
        return {
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": cuda,
            "generator": torch.Generator(),
        }


class TextDataModule(TokenDataModule):
    """Train/val token windows from one corpus or a mixture of corpora, tokenized once into memory-mapped files.

    Its arguments are the fields of ``lit_gpt.data.settings.TextData``, as keywords (documented there, and by
    ``lit-gpt fit --data.help TextDataModule``): a corpus (``path``, ``val_path``, ``cleaning``, ...) or ``mixture``,
    the ``tokenizer``, and the batch settings. The data module holds them as ``settings``.

    Raises:
        ConfigError: for a bad data section (see ``TextData``); from ``prepare_data`` and ``setup``, for a corpus
            that cannot be prepared or is shorter than one window.
    """

    def __init__(self, **settings) -> None:
        super().__init__(TextData(**settings))
        self._metas: list[dict] | None = None
        self.cache_dirs: list[str] = []  # each corpus's token folder, known once prepared
        self.train_shards: list[np.ndarray] = []
        self.corpus_windows: list[int] = []

    def metas(self) -> list[dict]:
        """Download (if configured and missing) and tokenize (if stale) once per process; each corpus's metadata, in
        the order of ``settings.corpora()`` (their folders in ``cache_dirs``)."""
        if self._metas is None:
            s = self.settings
            prepared = [
                prepare_corpus(corpus, s.tokenizer, seed=s.seed, num_threads=s.num_threads, build=s.build)
                for corpus in s.corpora()
            ]
            self.cache_dirs = [folder for folder, _ in prepared]
            self._metas = [meta for _, meta in prepared]
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
        verify = self.settings.verify
        for corpus, cache_dir, meta in zip(self.settings.corpora(), self.cache_dirs, self.metas()):
            train = load_split(cache_dir, "train", meta, verify=verify)
            (val,) = load_split(cache_dir, "val", meta, verify=verify)
            self._check_windows(corpus.path, "training", max(len(s) for s in train))
            self._check_windows(corpus.path, "validation", len(val))
            self.train_shards += train
            self.corpus_windows.append(TrainWindows(train, self.settings.block_size).num_windows)
            self.val_tokens.append(val)
        self._setup_documents()

    def train_dataloader(self) -> DataLoader:
        s = self.settings
        rank, replicas = data_parallel_rank(self.trainer)
        # A resumed run continues the offset stream at the batch it had reached.
        start_batch = self.trainer.global_step * self.trainer.accumulate_grad_batches if self.trainer else 0
        dataset = TrainWindows(self.train_shards, s.block_size)
        if self.names is None:
            sampler = RandomWindowBatches(dataset.num_windows, s.batch_size, s.seed, rank, start_batch, replicas)
        else:
            sampler = MixtureWindowBatches(
                self.corpus_windows, self.weights, s.batch_size, s.seed, rank, start_batch, replicas
            )
        # batch_size=None: each sampler item is already a whole batch of offsets, gathered in one numpy call.
        return DataLoader(dataset, batch_size=None, sampler=sampler, **self._loader_options())
