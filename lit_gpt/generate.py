"""Sampling from a ``GPT``: temperature, top-k and top-p (nucleus) sampling, KV-cache decoding, left-padded batches.

``iter_tokens`` yields the next token of every row, one step at a time: the prompt is processed once into the
model's KV cache (prefill), then each new token costs one single-token forward pass; a row that produced end-of-text
keeps producing it. ``generate`` collects those tokens into one tensor. The command around them is
``lit_gpt.cli.generate``. Torch only: no Lightning, no file I/O (``lit_gpt.load_checkpoint`` reads models).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from lit_gpt.errors import ConfigError
from lit_gpt.model import GPT


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token id per row from next-token ``logits`` of shape (B, V); returns (B, 1) int64.

    ``temperature`` 0 picks the most likely token (greedy). Otherwise the logits are divided by ``temperature``
    and restricted to the ``top_k`` most likely tokens and then to the nucleus: the smallest set of most likely
    tokens whose probability adds up to at least ``top_p`` (Holtzman et al. 2020, https://arxiv.org/abs/1904.09751).
    The most likely token is always allowed.

    Raises:
        ConfigError: for a negative temperature, top_k < 1, or top_p outside (0, 1].
    """
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = mass_before >= top_p  # never drops rank 0, whose mass_before is 0
        drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ConfigError unless temperature >= 0, top_k is None or >= 1, and top_p is None or in (0, 1].

    The message starts with the name of the offending argument (``temperature``, ``top_k``, ``top_p``), so a caller
    that spells the option its own way prefixes it (``--`` on the command line, ``samples.`` in a training config).
    """
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists of different lengths into one batch, padded on the left.

    Returns ``idx`` (B, T_max) int64 and ``pad`` (B,) int64, the number of padding tokens in each row.
    """
    longest = max(len(p) for p in prompts)
    idx = torch.tensor([[pad_id] * (longest - len(p)) + list(p) for p in prompts], dtype=torch.long)
    return idx, torch.tensor([longest - len(p) for p in prompts], dtype=torch.long)


@torch.no_grad()
def iter_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    vocab_size: int | None = None,
    generator: torch.Generator | None = None,
    pad: torch.Tensor | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,) int64, up to ``max_new_tokens`` times.

    Every step conditions on the last ``block_size`` tokens. With ``use_cache`` the prompt is processed once
    (prefill) into a KV cache and each new token costs one single-token forward pass; once the sequence no longer
    fits in ``block_size``, each step prefills the last ``block_size`` tokens again, so the tokens are the same
    as without the cache. Without it, every step recomputes the whole (cropped) sequence.

    Args:
        idx: prompt token ids (B, T); with ``pad``, left-padded (see ``left_pad``).
        pad: (B,) padding tokens at the start of each row; needs ``use_cache``.
        vocab_size: ids >= this (the padding rows of a padded vocabulary) are never sampled.
        eos_id: a row that produced it keeps producing it, and the iteration ends when every row has.
        temperature, top_k, top_p, generator: see ``sample_next``.
    Raises:
        ConfigError: for bad sampling options (see ``sample_next``).
        ValueError: for ``pad`` without ``use_cache``.
    """
    check_sampling(temperature, top_k, top_p)
    if pad is not None and not use_cache:
        raise ValueError("left-padded batches need the KV cache (use_cache=True)")
    B = idx.size(0)
    cache_length = min(idx.size(1) + max_new_tokens, model.config.block_size)
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
    tokens = idx
    try:
        for step in range(max_new_tokens):
            hidden = _last_hidden(model, tokens, step, cache_length, pad, use_cache)  # (B, C)
            logits = model.head(hidden)  # (B, V): the head on the last position only
            if vocab_size is not None:
                logits[:, vocab_size:] = float("-inf")
            next_token = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            if eos_id is not None:
                next_token = next_token.masked_fill(finished[:, None], eos_id)
                finished |= next_token[:, 0] == eos_id
            yield next_token[:, 0]
            if eos_id is not None and bool(finished.all()):
                return
            tokens = torch.cat((tokens, next_token), dim=1)
    finally:
        if use_cache:
            model.clear_kv_cache()


def _last_hidden(
    model: GPT, tokens: torch.Tensor, step: int, cache_length: int, pad: torch.Tensor | None, use_cache: bool
) -> torch.Tensor:
    """Final hidden state (B, C) of the last position of ``tokens`` (B, L), through the KV cache when ``use_cache``:
    at step 0, or once the sequence outgrew the cache, the last ``cache_length`` tokens are prefilled afresh;
    otherwise only the newest token runs, at cache index L - 1."""
    length = tokens.size(1)
    if not use_cache:
        return model.hidden_states(tokens[:, -model.config.block_size :])[:, -1]
    if step == 0 or length > cache_length:
        window = tokens[:, -cache_length:]
        shift = length - window.size(1)
        model.setup_kv_cache(tokens.size(0), cache_length, None if pad is None else (pad - shift).clamp(min=0))
        return model.hidden_states(window, input_pos=torch.arange(window.size(1), device=tokens.device))[:, -1]
    input_pos = torch.tensor([length - 1], device=tokens.device)
    return model.hidden_states(tokens[:, -1:], input_pos=input_pos)[:, -1]


def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    """``idx`` (B, T) extended by up to ``max_new_tokens`` tokens: (B, T + n), n < max_new_tokens only when every
    row reached ``eos_id``. Keyword arguments and errors as for ``iter_tokens``.
    """
    new = list(iter_tokens(model, idx, max_new_tokens, **kwargs))
    return torch.cat([idx, torch.stack(new, dim=1)], dim=1) if new else idx
