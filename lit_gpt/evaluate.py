"""Perplexity and bits per byte of a model on a text, with sliding windows so that every token gets context.

Text to tokens: documents are joined as training joins them (``lit_gpt.data.prepare``: end-of-text between documents)
and one end-of-text token is put in front as the context of the first token, so every token of the text is a target
and every byte is scored: ``[eot] doc1 [eot] doc2 ...``. The end-of-text targets between documents count as tokens
(predicting where a document ends is part of the text's probability) and have no bytes.

Sliding windows (``sliding_windows``): windows of ``block_size`` tokens whose ends advance by ``stride``; each scores
the targets not scored before, at its end, so every target is scored exactly once; a target after the first window
sees at least ``block_size - stride`` tokens of context. ``stride == block_size`` gives the disjoint windows of
training's validation (``lit_gpt.data.windows.ValidationWindows``, whose last window is also full-length) and of
lm-eval's rolling log-likelihood; a smaller stride costs ``block_size / stride`` times the forward passes and gives
lower, less context-starved losses (Hugging Face's "Perplexity of fixed-length models" guide describes the method).

Loss per position (``loss_by_position``): disjoint windows, every position scored, averaged in powers-of-two buckets
of window positions; a model that uses long contexts has lower losses at later positions.

Numbers (``Evaluation``): ``loss`` is the mean negative log-likelihood in nats per token, ``perplexity`` its exp,
``bits_per_byte`` the total in bits over the text's UTF-8 bytes: tokenizer-independent, so a character model and a
BPE model can be compared on the same text (bits per byte = loss x tokens / bytes / ln 2). The output head runs on the
scored positions only, in chunks, so a 50k-token vocabulary never needs (batch, block_size, V) logits at once.
Torch only; ``lit-gpt evaluate`` (``lit_gpt.cli.evaluate``) reads the files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from lit_gpt.errors import ConfigError
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

LOGITS_PER_CHUNK = 1 << 26
"""float32 logits computed at a time by ``negative_log_likelihood`` (256 MiB): 1334 positions of a 50304-token head."""


@dataclass(frozen=True)
class Evaluation:
    """Totals of an evaluation: ``tokens`` targets scored, ``nll`` their summed negative log-likelihood in nats,
    ``bytes`` the UTF-8 bytes of the text they spell (0 when unknown)."""

    tokens: int
    nll: float
    bytes: int = 0

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood, nats per token (comparable with ``val/loss``)."""
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2)

    @property
    def bits_per_byte(self) -> float | None:
        """Total bits over the text's UTF-8 bytes; None when the bytes are unknown."""
        return self.nll / math.log(2) / self.bytes if self.bytes else None

    def to_dict(self) -> dict:
        """The totals and every derived number, JSON-ready."""
        derived = {k: getattr(self, k) for k in ("loss", "perplexity", "bits_per_token", "bits_per_byte")}
        return {**asdict(self), **derived}


def sliding_windows(n_targets: int, block_size: int, stride: int) -> list[tuple[int, int]]:
    """The windows that score ``n_targets`` targets once each: ``(start, scored)`` per window, where the window's
    inputs are positions ``start .. start + T - 1`` (T = min(block_size, n_targets)) and it scores its last ``scored``
    targets. Window ends advance by ``stride`` (the first ends at T, the last at n_targets).

    Raises:
        ValueError: unless n_targets >= 1 and 1 <= stride <= block_size.
    """
    if n_targets < 1 or not 1 <= stride <= block_size:
        raise ValueError(f"need n_targets >= 1 and 1 <= stride <= block_size, got {n_targets}, {stride}, {block_size}")
    T = min(block_size, n_targets)
    windows, end = [], 0
    while end < n_targets:
        new_end = min(end + stride, n_targets) if end else T
        windows.append((new_end - T, new_end - end))
        end = new_end
    return windows


@torch.no_grad()
def negative_log_likelihood(
    model: GPT, tokens: torch.Tensor, block_size: int | None = None, stride: int | None = None, batch_size: int = 8
) -> Evaluation:
    """Score ``tokens[1:]`` given what precedes each, with ``sliding_windows`` (see the module docstring).

    Args:
        tokens: (N,) int64 token ids, N >= 2; moved to the model's device a batch at a time.
        block_size: window length (default and maximum: the model's ``block_size``).
        stride: advance of the windows' ends (default: ``block_size``, disjoint windows).
        batch_size: windows per forward pass.
    Returns:
        ``Evaluation(tokens=N - 1, nll=...)`` (no byte count).
    Raises:
        ConfigError: for fewer than 2 tokens, a block_size outside [1, model block_size], a stride outside
            [1, block_size], or batch_size < 1.
    """
    block_size = model.config.block_size if block_size is None else block_size
    stride = block_size if stride is None else stride
    if tokens.numel() < 2:
        raise ConfigError("the text has fewer than 2 tokens: nothing to score")
    if not 1 <= block_size <= model.config.block_size or not 1 <= stride <= block_size or batch_size < 1:
        raise ConfigError(
            f"need 1 <= block_size <= {model.config.block_size} (the model's), 1 <= stride <= block_size and "
            f"batch_size >= 1; got {block_size}, {stride}, {batch_size}"
        )
    windows = sliding_windows(tokens.numel() - 1, block_size, stride)
    T = min(block_size, tokens.numel() - 1)
    device = model.lm_head.weight.device
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size]
        rows = torch.stack([tokens[start : start + T + 1] for start, _ in batch]).to(device)  # (b, T + 1)
        keep = max(scored for _, scored in batch)  # the scored targets are at each window's end
        hidden = model.hidden_states(rows[:, :-1])[:, T - keep :]  # (b, keep, C)
        counts = torch.tensor([n for _, n in batch], device=device)  # (b,)
        scored = torch.arange(keep, device=device) >= keep - counts[:, None]  # (b, keep): the last counts[i] of row i
        total += _summed_cross_entropy(model, hidden[scored], rows[:, T - keep + 1 :][scored])
    return Evaluation(tokens=tokens.numel() - 1, nll=total.item())


def _summed_cross_entropy(model: GPT, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed float32 cross-entropy of ``model.head(hidden)`` (M, C) against ``targets`` (M,), as a float64
    scalar, in chunks of ``LOGITS_PER_CHUNK`` logits."""
    rows = max(1, LOGITS_PER_CHUNK // model.config.padded_vocab_size)
    total = torch.zeros((), dtype=torch.float64, device=hidden.device)
    for h, t in zip(hidden.split(rows), targets.split(rows)):
        total += F.cross_entropy(model.head(h).float(), t, reduction="sum").double()
    return total


def position_buckets(block_size: int) -> list[tuple[int, int]]:
    """Powers-of-two buckets of window positions ``[start, end)``: [0, 1), [1, 2), [2, 4), ... up to ``block_size``
    (the last bucket ends there)."""
    edges = [0] + [1 << k for k in range(block_size.bit_length()) if 1 << k < block_size] + [block_size]
    return list(zip(edges[:-1], edges[1:]))


@torch.no_grad()
def loss_by_position(
    model: GPT, tokens: torch.Tensor, block_size: int | None = None, batch_size: int = 8
) -> list[dict]:
    """Mean loss per position in the window, in ``position_buckets``: how well a model uses longer contexts.

    The text is cut into disjoint windows of ``block_size`` tokens (a tail shorter than a window is left out); the
    target after window position p has p + 1 tokens of context. Returns one record per bucket: ``{"positions":
    [start, end - 1], "tokens", "loss", "perplexity"}`` (loss in nats per token).

    Raises:
        ConfigError: for a block_size outside [1, model block_size], batch_size < 1, or a text shorter than one
            window plus its last target.
    """
    T = block_size or model.config.block_size
    if not 1 <= T <= model.config.block_size or batch_size < 1:
        raise ConfigError(
            f"need 1 <= block_size <= {model.config.block_size} and batch_size >= 1, got {T}, {batch_size}"
        )
    n_windows = (tokens.numel() - 1) // T
    if n_windows < 1:
        raise ConfigError(f"the text has {tokens.numel()} tokens, fewer than one window of block_size + 1 = {T + 1}")
    device = model.lm_head.weight.device
    sums = torch.zeros(T, dtype=torch.float64, device=device)
    rows_per_chunk = max(1, LOGITS_PER_CHUNK // model.config.padded_vocab_size)
    for first in range(0, n_windows, batch_size):
        starts = range(first * T, min(first + batch_size, n_windows) * T, T)
        rows = torch.stack([tokens[start : start + T + 1] for start in starts]).to(device)  # (b, T + 1)
        hidden, targets = model.hidden_states(rows[:, :-1]).flatten(0, 1), rows[:, 1:].flatten()  # (b*T, C), (b*T,)
        nll = torch.cat(
            [
                F.cross_entropy(model.head(h).float(), t, reduction="none")
                for h, t in zip(hidden.split(rows_per_chunk), targets.split(rows_per_chunk))
            ]
        )
        sums += nll.view(len(starts), T).double().sum(0)
    records = []
    for start, end in position_buckets(T):
        count = n_windows * (end - start)
        loss = sums[start:end].sum().item() / count
        records.append({"positions": [start, end - 1], "tokens": count, "loss": loss, "perplexity": math.exp(loss)})
    return records


def document_tokens(tokenizer: Tokenizer, documents: Iterable[str]) -> tuple[torch.Tensor, int, int]:
    """``[eot] doc1 [eot] doc2 ...`` as a (N,) int64 tensor, the documents' total UTF-8 bytes, and their number.

    Raises:
        ConfigError: for a character-level tokenizer meeting a character outside its vocabulary.
    """
    ids, n_bytes, n_documents = [tokenizer.eot_id], 0, 0
    for document in documents:
        if n_documents:
            ids.append(tokenizer.eot_id)
        ids.extend(tokenizer.encode(document))
        n_bytes += len(document.encode("utf-8", "surrogatepass"))
        n_documents += 1
    return torch.tensor(ids, dtype=torch.long), n_bytes, n_documents


def evaluate_documents(
    model: GPT,
    tokenizer: Tokenizer,
    documents: Iterable[str],
    block_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
) -> Evaluation:
    """``negative_log_likelihood`` of ``document_tokens(tokenizer, documents)``, with the byte count, so that
    ``bits_per_byte`` is set. Raises ``ConfigError`` as those two do."""
    tokens, n_bytes, _ = document_tokens(tokenizer, documents)
    result = negative_log_likelihood(model, tokens, block_size, stride, batch_size)
    return Evaluation(tokens=result.tokens, nll=result.nll, bytes=n_bytes)
