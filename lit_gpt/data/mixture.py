"""Mixtures of corpora: how a data config names them, and the seeded weighted draw of each window's corpus.

A mixture trains on several prepared corpora at once, each with a weight (e.g. 70% TinyStories, 30% WikiText).
Weights are normalised to sum to 1, and each weight is the expected share of the training windows (hence tokens)
drawn from its corpus: every window of global batch ``b`` gets its corpus by a weighted choice from
``numpy.random.default_rng((seed, b))`` (``draw_corpora``), so the draw is stateless, deterministic and resumable,
like the memory-mapped sampler's offsets (``lit_gpt.data.windows``). Smaller corpora repeat more often than larger
ones (they are sampled, not concatenated). The realised shares over ``n`` windows are within about
``2 * sqrt(w (1 - w) / n)`` of the weights (binomial noise: +-0.8% for w = 0.7 over 1,000 batches of 12 windows).

Each corpus keeps its own validation split; validation reports each corpus's exact token-mean loss
(``val/loss/<name>``) and the weighted total ``val/loss = sum_k w_k * val/loss/<name_k>``: the expected loss per
token under the training mixture (a pooled mean over all validation tokens would weigh each corpus by the size of
its validation split instead, which is an accident of how it was split).

``Corpus`` describes one corpus for the memory-mapped ``lit_gpt.train.datamodule.TextDataModule`` (its sources and
preparation options); ``StreamingCorpus`` one folder or URL written by ``lit-gpt prepare --data.format litdata``
for ``lit_gpt.train.streaming.StreamingTextDataModule``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

from lit_gpt.data.corpus import Cleaning
from lit_gpt.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class Corpus:
    """One corpus of a memory-mapped mixture: a name, a weight, and its sources and preparation options (the
    per-corpus arguments of ``lit_gpt.data.prepare.prepare_corpus``; the tokenizer, seed and threads are the data
    module's, shared by all corpora).

    Args:
        name: names the corpus in logs (``val/loss/<name>``) and in ``lit-gpt prepare --data.format litdata``'s output
            (``OUT/<name>``): letters, digits, ``_``, ``.`` and ``-``.
        path: a file, a folder or a glob (see ``lit_gpt.data.corpus``).
        weight: relative share of the training windows (normalised over the mixture).
        val_path, val_fraction, separator, text_field, cleaning, split_by, cache_dir, download_url: as the data
            module's arguments of the same names, for this corpus.
    """

    name: str
    path: str
    weight: float = 1.0
    val_path: str | None = None
    val_fraction: float = 0.1
    separator: str | None = None
    text_field: str = "text"
    cleaning: Cleaning | None = None
    split_by: str = "auto"
    cache_dir: str | None = None
    download_url: str | None = None

    def corpus_options(self) -> dict:
        """This corpus's keyword arguments of ``prepare_corpus`` (all but tokenizer, seed and num_threads)."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("name", "weight")}
        options["cleaning"] = self.cleaning or Cleaning()
        return options


@dataclass
class StreamingCorpus:
    """One corpus of a streaming mixture.

    Args:
        name: as ``Corpus.name``.
        input_dir: a folder or URL (``s3://...``) written by ``lit-gpt prepare --data.format litdata --out``.
        weight: relative share of the training windows (normalised over the mixture).
    """

    name: str
    input_dir: str
    weight: float = 1.0


def mixture_weights(corpora: list[Corpus] | list[StreamingCorpus]) -> np.ndarray:
    """The weights of ``corpora`` normalised to sum to 1, float64 of shape (len(corpora),).

    Raises:
        ConfigError: for an empty mixture, a repeated or unusable name, or a weight that is not a positive number.
    """
    if not corpora:
        raise ConfigError("data.mixture is empty; name at least one corpus, or leave it out")
    names = [c.name for c in corpora]
    for name in names:
        if not _NAME.fullmatch(name or ""):
            raise ConfigError(f"data.mixture name {name!r} must be letters, digits, '_', '.' or '-' (it names "
                              "val/loss/<name> and a folder)")  # fmt: skip
    if len(set(names)) != len(names):
        raise ConfigError(f"data.mixture names must differ, got {names}")
    weights = [c.weight for c in corpora]
    if not all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in weights):
        raise ConfigError(f"data.mixture weights must be positive numbers, got {weights}")
    weights = np.asarray(weights, dtype=np.float64)
    return weights / weights.sum()


def require_shared_vocabulary(tokenizer: str) -> None:
    """Raise ConfigError for a mixture with the ``char`` tokenizer, whose vocabulary is built from each corpus (the
    corpora of a mixture must share one vocabulary)."""
    if tokenizer == "char":
        raise ConfigError("a 'char' vocabulary is built per corpus, so the corpora of data.mixture would not share "
                          "one; use a BPE tokenizer (gpt2, or lit-gpt train-tokenizer) for a mixture")  # fmt: skip


def draw_corpora(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """The corpus index of each of ``size`` windows, int64 of shape (size,): a weighted choice with replacement.
    The memory-mapped and streaming samplers call it first on ``default_rng((seed, b))`` for batch ``b``, so with
    one device both give batch ``b`` the same corpora."""
    if len(weights) == 1:
        return np.zeros(size, dtype=np.int64)
    return rng.choice(len(weights), size=size, p=weights).astype(np.int64)
