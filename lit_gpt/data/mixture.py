"""Mixtures of corpora: the check of their names and weights, and the seeded weighted draw of each window's corpus.

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

The corpora themselves are described in ``lit_gpt.data.settings`` (``Corpus`` for the memory-mapped
``TextDataModule``, ``StreamingCorpus`` for ``StreamingTextDataModule``); this module reads only their ``name`` and
``weight``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from lit_gpt.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def mixture_weights(corpora: Sequence) -> np.ndarray:
    """The weights of ``corpora`` (each with a ``name`` and a ``weight``: ``lit_gpt.data.settings.Corpus`` or
    ``StreamingCorpus``) normalised to sum to 1, float64 of shape (len(corpora),).

    Raises:
        ConfigError: for an empty mixture, a repeated or unusable name, or a weight that is not a positive number.
    """
    if not corpora:
        raise ConfigError("data.mixture is empty; name at least one corpus, or leave it out")
    names = [c.name for c in corpora]
    for name in names:
        if not _NAME.fullmatch(name or ""):
            raise ConfigError(
                f"data.mixture name {name!r} must be letters, digits, '_', '.' or '-' (it names val/loss/<name> and a "
                "folder)"
            )
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
        raise ConfigError(
            "a 'char' vocabulary is built per corpus, so the corpora of data.mixture would not share "
            "one; use a BPE tokenizer (gpt2, or lit-gpt train-tokenizer) for a mixture"
        )


def draw_corpora(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """The corpus index of each of ``size`` windows, int64 of shape (size,): a weighted choice with replacement.
    The memory-mapped and streaming samplers call it first on ``default_rng((seed, b))`` for batch ``b``, so with
    one device both give batch ``b`` the same corpora."""
    if len(weights) == 1:
        return np.zeros(size, dtype=np.int64)
    return rng.choice(len(weights), size=size, p=weights).astype(np.int64)
