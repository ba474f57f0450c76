"""The ``data`` section of a training config, as dataclasses: what a corpus is, how batches are cut, and the whole
argument set of each data module. No Lightning.

Each setting is declared once, here, with its meaning. ``Corpus`` describes one corpus (its sources and the options
that decide its token files); ``TextData`` is the data section of ``lit_gpt.train.datamodule.TextDataModule``: the
fields of one ``Corpus`` at the top level (or ``mixture``, a list of them), the tokenizer, and the batch settings of
``Batching``. ``StreamingData`` is the data section of ``lit_gpt.train.streaming.StreamingTextDataModule``: one
litdata export (``input_dir``) or a mixture of ``StreamingCorpus``, and the same ``Batching``.

The data modules take these fields as keyword arguments and build the dataclass from them, so ``lit-gpt fit``
(LightningCLI) and ``lit-gpt prepare`` (jsonargparse on ``TextData``) read the same YAML sections and ``--data.*``
flags, with the field documentation below as their help. A data section with a bad value raises ``ConfigError``
when it is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from lit_gpt.data.corpus import Cleaning
from lit_gpt.data.mixture import mixture_weights, require_shared_vocabulary
from lit_gpt.errors import ConfigError

SPLIT_BY = ("auto", "document", "tail")
"""The ways to split a corpus without ``val_path`` (see ``lit_gpt.data.prepare``)."""


@dataclass
class Corpus:
    """One corpus: its sources and the options that decide its token files (``lit_gpt.data.prepare``).

    Args:
        path: a file, a folder (its ``.txt``/``.jsonl`` files and ``.gz`` forms) or a glob (see
            ``lit_gpt.data.corpus``).
        val_path: the validation corpus (e.g. a dataset's valid.txt), instead of splitting ``path``.
        val_fraction: share of the corpus used for validation, in (0, 1): whole documents drawn by a seeded hash
            (``split_by: document``), or the last tokens of a one-document corpus (``tail``); unused with
            ``val_path``.
        separator: string that separates documents inside ``.txt`` files (e.g. ``<|endoftext|>``).
        text_field: the field holding the text in ``.jsonl`` records.
        cleaning: cleaning, quality filters and deduplication switches (``lit_gpt.data.corpus.Cleaning``); None:
            ``Cleaning``'s defaults.
        split_by: ``auto``, ``document`` or ``tail`` (see ``lit_gpt.data.prepare``).
        cache_dir: where the token files go; None: ``data/prepared/<name>-<tokenizer>-<hash of path>``
            (``lit_gpt.data.prepare.default_cache_dir``).
        download_url: fetched into ``path`` when ``path`` is a missing file (Tiny Shakespeare's configs set it).
        name: names a corpus of ``data.mixture`` in logs (``val/loss/<name>``) and in a litdata export
            (``OUT/<name>``): letters, digits, ``_``, ``.`` and ``-``. Required in a mixture; unused otherwise.
        weight: relative share of a mixture's training windows (normalised over the mixture); unused outside one.

    Raises:
        ConfigError: for a ``val_fraction`` outside (0, 1) without ``val_path``, or an unknown ``split_by``.
    """

    path: str
    val_path: str | None = None
    val_fraction: float = 0.1
    separator: str | None = None
    text_field: str = "text"
    cleaning: Cleaning | None = None
    split_by: str = "auto"
    cache_dir: str | None = None
    download_url: str | None = None
    name: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.val_path is None and not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if self.split_by not in SPLIT_BY:
            raise ConfigError(f"split_by must be 'auto', 'document' or 'tail', got {self.split_by!r}")


@dataclass
class Batching:
    """How a data module cuts its corpora into batches of windows.

    Args:
        block_size: tokens per training window; linked from ``model.config.block_size`` on the command line.
        batch_size: training windows per batch (per device).
        val_batch_size: validation windows per batch (per device). None sizes it for the device: ``batch_size`` on
            a CPU; on a GPU as many windows as keep one batch's float32 logits within
            ``lit_gpt.train.datamodule.VAL_LOGITS_BYTES`` (2 GiB), between ``batch_size`` and 8 x ``batch_size``.
            It changes speed only, never ``val/loss``.
        seed: seed of the data's order: the document split, the training offsets (litdata's shuffle when
            streaming) and a mixture's draws.
        num_workers: DataLoader worker processes (per corpus when streaming). A memory-mapped batch is one numpy
            gather, so 0 suits a CPU run; on a GPU, workers take batch preparation off the training step.
        document_mask: attention stays within documents, in training and validation: a token sees only the earlier
            tokens of its own document in the window (``lit_gpt.attention.document_mask``). Documents are joined by
            the tokenizer's end-of-text token, which begins the document after it; each batch carries its tokens'
            document ids (``lit_gpt.data.windows.document_inputs``). Needs a corpus of several documents.
        reset_positions: with ``document_mask``, positions restart at 0 at each document's first token instead of
            counting through the window.

    Raises:
        ConfigError: for a ``batch_size`` or ``val_batch_size`` below 1, or ``reset_positions`` without
            ``document_mask``.
    """

    block_size: int = 256
    batch_size: int = 12
    val_batch_size: int | None = None
    seed: int = 1337
    num_workers: int = 0
    document_mask: bool = False
    reset_positions: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or (self.val_batch_size is not None and self.val_batch_size < 1):
            raise ConfigError(
                f"data.batch_size and data.val_batch_size must be positive integers, got {self.batch_size} and "
                f"{self.val_batch_size}"
            )
        if self.reset_positions and not self.document_mask:
            raise ConfigError("data.reset_positions restarts positions at document boundaries: set data.document_mask")


@dataclass
class TextData(Batching, Corpus):
    """The data section of ``TextDataModule`` and ``lit-gpt prepare``: one corpus (the ``Corpus`` fields at the top
    level) or ``mixture``, tokenized once into memory-mapped token files, and the batch settings.

    Args:
        path: as ``Corpus.path``, with a default: ``data/tinyshakespeare/input.txt``, where Tiny Shakespeare's configs
            download it (each corpus of ``mixture`` names its own).
        tokenizer: ``char`` (character vocabulary of the corpus), a tiktoken encoding (``gpt2``, ``cl100k_base``),
            a folder written by ``lit-gpt train-tokenizer``, or a Hugging Face model folder (``tokenizer.json``, or
            a SentencePiece ``tokenizer.model`` with the ``sentencepiece`` extra) or hub id ``org/name``, whose
            documents then start with its BOS when it adds one (``lit_gpt.tokenizer.Tokenizer.from_name``).
        num_threads: tokenizer threads; None uses every core.
        mixture: several corpora (``Corpus``: each with its ``name``, ``path``, ``weight``, ``val_path``,
            ``cleaning``, ...) instead of the one that the top-level corpus fields describe; ``tokenizer``,
            ``seed`` and ``num_threads`` are shared. Validation then logs ``val/loss/<name>`` per corpus and their
            weighted sum as ``val/loss`` (see ``lit_gpt.data.mixture``).
        verify: read every shard at setup, checking its token ids and SHA-256 against its stamp; without it only the
            shards whose size or mtime changed are read (``lit_gpt.data.shards``).
        build: tokenize each corpus when its token files are missing or stale (once per machine: processes of one
            machine take turns). False refuses instead, saying to run ``lit-gpt prepare``: ``lit-gpt fit`` sets it
            for runs on several machines (``trainer.num_nodes`` > 1), whose locks cannot see each other.
            ``lit-gpt prepare`` always builds.

    Raises:
        ConfigError: for a bad corpus or batch setting (see ``Corpus`` and ``Batching``), a bad mixture (see
            ``lit_gpt.data.mixture.mixture_weights``), or a mixture with the ``char`` tokenizer.
    """

    path: str = "data/tinyshakespeare/input.txt"
    tokenizer: str = "gpt2"
    num_threads: int | None = None
    mixture: list[Corpus] | None = None
    verify: bool = False
    build: bool = True

    def __post_init__(self) -> None:
        Batching.__post_init__(self)
        Corpus.__post_init__(self)
        if self.mixture is not None:
            mixture_weights(self.mixture)
            require_shared_vocabulary(self.tokenizer)

    def corpora(self) -> list[Corpus]:
        """The corpora to prepare, in order: those of ``mixture``, or the one of the top-level fields."""
        if self.mixture is not None:
            return list(self.mixture)
        return [Corpus(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Corpus)})]

    def weights(self) -> np.ndarray:
        """Each corpus's share of the training windows, float64 of shape (len(corpora()),), summing to 1."""
        return mixture_weights(self.mixture) if self.mixture is not None else np.ones(1)


@dataclass
class StreamingCorpus:
    """One corpus of a streaming mixture.

    Args:
        name: as ``Corpus.name``.
        input_dir: a folder or URL (``s3://...``) that ``lit-gpt prepare`` exported to in the litdata format.
        weight: relative share of the training windows (normalised over the mixture).
    """

    name: str
    input_dir: str
    weight: float = 1.0


@dataclass
class StreamingData(Batching):
    """The data section of ``StreamingTextDataModule``: one litdata export or a mixture of them, and the batch
    settings.

    Args:
        input_dir: a folder or URL (``s3://...``) that ``lit-gpt prepare`` exported to in the litdata format.
        mixture: several exports with weights (``StreamingCorpus``: ``name``, ``input_dir``, ``weight``) instead of
            ``input_dir``; validation then logs ``val/loss/<name>`` per corpus and their weighted sum as
            ``val/loss``.
        cache_dir: where litdata keeps the chunks it downloads from a URL (default: litdata's, under
            ``~/.lightning``), and where ``meta.json`` is fetched to.
        max_cache_size: how much of that cache litdata may fill (e.g. ``"50GB"``; None: litdata's default).

    Raises:
        ConfigError: for a bad batch setting, neither or both of ``input_dir`` and ``mixture``, or a bad mixture.
    """

    input_dir: str | None = None
    mixture: list[StreamingCorpus] | None = None
    cache_dir: str | None = None
    max_cache_size: str | None = None

    def __post_init__(self) -> None:
        if (self.input_dir is None) == (self.mixture is None):
            raise ConfigError("StreamingTextDataModule needs data.input_dir or data.mixture (one of them)")
        Batching.__post_init__(self)
        if self.mixture is not None:
            mixture_weights(self.mixture)

    def corpora(self) -> list[StreamingCorpus]:
        """The exports to stream, in order: those of ``mixture``, or ``input_dir`` (named ``corpus``)."""
        return list(self.mixture) if self.mixture is not None else [StreamingCorpus("corpus", self.input_dir)]

    def weights(self) -> np.ndarray:
        """Each export's share of the training windows, float64 of shape (len(corpora()),), summing to 1."""
        return mixture_weights(self.corpora())
