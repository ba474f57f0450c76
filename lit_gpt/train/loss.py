"""The training loss: next-token cross-entropy over whole logits, or over chunks of the sequence so that the logits
never exist whole.

``next_token_loss`` takes logits (B, T, V). ``chunked_next_token_loss`` takes the final hidden states (B, T, C) and
the output head (``GPT.head``: ``lm_head`` and the logit soft cap, tied to the embeddings or not), and computes the
head and the loss ``chunk_size`` tokens at a time, each chunk under ``torch.utils.checkpoint`` (non-reentrant): a
chunk's logits are freed as soon as its loss is summed and computed again in the backward pass, so at most one chunk's
logits (float32, with their log-softmax and gradients) exist at a time instead of B x T x V. The loss and the
gradients are those of ``next_token_loss(head(hidden), targets)`` up to the order of float sums; the price is one more
forward of the head per chunk in the backward pass. The same idea as torchtune's chunked cross-entropy, Liger
Kernel's fused linear cross-entropy and Apple's Cut Cross-Entropy (Wijmans et al. 2024,
https://arxiv.org/abs/2411.09009), in plain PyTorch.

``batch_loss`` is what ``lit_gpt.train.module.LitGPT`` calls for a batch: one or the other, with the batch's model
inputs (``lit_gpt.train.datamodule``: document ids and positions under document masking).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from lit_gpt.data.windows import IGNORE_INDEX
from lit_gpt.errors import ConfigError
from lit_gpt.model import GPT


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (float32) of ``logits`` (B, T, V) against ``targets`` (B, T), skipping ``IGNORE_INDEX``."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


def _summed_loss(hidden: torch.Tensor, targets: torch.Tensor, head: Callable) -> torch.Tensor:
    """Summed float32 cross-entropy of ``head(hidden)`` (N, V) against ``targets`` (N,), skipping ``IGNORE_INDEX``."""
    return F.cross_entropy(head(hidden).float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_next_token_loss(
    hidden: torch.Tensor, targets: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], chunk_size: int
) -> torch.Tensor:
    """``next_token_loss(head(hidden), targets)``, computed ``chunk_size`` tokens at a time (see the module docstring).

    Args:
        hidden: final hidden states (B, T, C), the input of the output head.
        targets: (B, T) next-token ids, ``IGNORE_INDEX`` where none.
        head: hidden states (N, C) -> logits (N, V), e.g. ``GPT.head``.
        chunk_size: tokens of the flattened batch (B x T) per chunk.
    Returns:
        the mean float32 loss over the targets that are not ``IGNORE_INDEX`` (NaN when there are none, as
        ``next_token_loss`` gives).
    Raises:
        ConfigError: if ``chunk_size`` < 1.
    """
    if chunk_size < 1:
        raise ConfigError(f"the loss chunk size must be >= 1 token, got {chunk_size}")
    flat_hidden, flat_targets = hidden.flatten(0, 1), targets.flatten()  # (N, C), (N,)
    total = None
    for start in range(0, flat_targets.numel(), chunk_size):
        part = slice(start, start + chunk_size)
        # under no_grad (validation) checkpoint only runs the function: the logits are freed chunk by chunk there too
        loss = torch.utils.checkpoint.checkpoint(
            _summed_loss, flat_hidden[part], flat_targets[part], head, use_reentrant=False
        )
        total = loss if total is None else total + loss
    return total / (flat_targets != IGNORE_INDEX).sum()


def batch_loss(
    model: GPT,
    batch: tuple,
    chunk_size: int | None = None,
    run: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """The mean next-token loss of ``model`` on one batch.

    Args:
        batch: ``(x, y)`` token ids and targets, both (B, T), or ``(x, y, inputs)`` with ``inputs`` a dict of
            keyword arguments for ``GPT.forward`` (``documents``, ``positions``).
        chunk_size: None for ``next_token_loss`` over the whole logits; else ``chunked_next_token_loss`` with
            chunks of that many tokens.
        run: what to call in place of ``model.forward`` (or of ``model.hidden_states`` with ``chunk_size``), e.g.
            its ``torch.compile``d form.
    """
    x, y, *rest = batch
    inputs = rest[0] if rest else {}
    if chunk_size is None:
        return next_token_loss((run or model)(x, **inputs), y)
    return chunked_next_token_loss((run or model.hidden_states)(x, **inputs), y, model.head, chunk_size)
