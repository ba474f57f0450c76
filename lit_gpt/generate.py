"""Sampling from a ``GPT``: temperature, top-k and top-p (nucleus) sampling, KV-cache decoding, left-padded batches.

``iter_tokens`` yields the next token of every row, one step at a time: the prompt is processed once into the
model's KV cache (prefill), then each new token costs one single-token forward pass; a row that produced end-of-text
keeps producing it. Past ``block_size`` tokens, the KV-cache policy (``KV_CACHE_POLICIES``) decides: prefill the
last ``block_size`` tokens again at every step (``reprefill``, what a model without a cache computes), or keep a
rolling cache of the first tokens (attention sinks) and the most recent ones (``rolling``,
``lit_gpt.kv_cache.RollingKVCache``), where each step stays one single-token forward pass. ``generate`` collects the
tokens into one tensor. The command around them is ``lit_gpt.cli.generate``. Torch only: no Lightning, no file I/O
(``lit_gpt.load_checkpoint`` reads models).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from lit_gpt.errors import ConfigError
from lit_gpt.model import GPT

KV_CACHE_POLICIES = ("rolling", "reprefill")
"""What the KV cache does once a sequence outgrows ``block_size`` (see the module docstring)."""


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


def check_kv_cache(model: GPT, kv_cache: str, sinks: int) -> None:
    """Raise ConfigError unless ``kv_cache`` is one of ``KV_CACHE_POLICIES``, ``sinks`` is in [0, block_size) and a
    rolling cache has RoPE positions to move (learned position embeddings are added to the cached values' inputs)
    at frequencies that do not change with the length (not ``dynamic`` scaling past its original block size).

    The message starts with the name of the offending argument (``kv_cache``, ``sinks``), as ``check_sampling``'s.
    """
    if kv_cache not in KV_CACHE_POLICIES:
        raise ConfigError(f"kv_cache must be one of {', '.join(KV_CACHE_POLICIES)}, got {kv_cache!r}")
    if not 0 <= sinks < model.config.block_size:
        raise ConfigError(f"sinks must be in [0, block_size = {model.config.block_size}), got {sinks}")
    if kv_cache == "rolling" and model.config.position_embedding != "rope":
        raise ConfigError("kv_cache rolling needs RoPE positions; this model learns its positions: use reprefill")
    if kv_cache == "rolling" and _length_dependent_rope(model):
        raise ConfigError(
            "kv_cache rolling rotates cached keys by fixed frequencies, which dynamic RoPE scaling changes with the "
            "length past original_block_size: use reprefill"
        )


def _length_dependent_rope(model: GPT) -> bool:
    """Whether the model's RoPE frequencies depend on the pass's length (``dynamic`` scaling past its original
    block size, ``lit_gpt.rope.rope_at``)."""
    scaling = model.config.rope_scaling
    return scaling is not None and scaling.type == "dynamic" and model.config.block_size > scaling.original_block_size


def default_kv_cache(model: GPT) -> str:
    """The KV-cache policy past ``block_size`` that ``check_kv_cache`` accepts for ``model``: ``rolling`` for RoPE
    models with length-independent frequencies, else ``reprefill``."""
    rope = model.config.position_embedding == "rope"
    return "rolling" if rope and not _length_dependent_rope(model) else "reprefill"


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
    kv_cache: str = "reprefill",
    sinks: int = 4,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,) int64, up to ``max_new_tokens`` times.

    With ``use_cache`` the prompt (its last ``block_size`` tokens) is processed once (prefill) into a KV cache and
    each new token costs one single-token forward pass. Once the sequence no longer fits in ``block_size``:
    ``kv_cache="reprefill"`` prefills the last ``block_size`` tokens again at each step, so the tokens are the same
    as without the cache; ``"rolling"`` keeps each row's first ``sinks`` tokens and its most recent ones in a
    rolling cache of ``block_size`` entries, so each step stays a single-token forward pass (RoPE models). Without
    the cache, every step recomputes the whole sequence, cropped to its last ``block_size`` tokens.

    Args:
        idx: prompt token ids (B, T); with ``pad``, left-padded (see ``left_pad``).
        pad: (B,) padding tokens at the start of each row; needs ``use_cache``.
        vocab_size: ids >= this (the padding rows of a padded vocabulary) are never sampled.
        eos_id: a row that produced it keeps producing it, and the iteration ends when every row has.
        temperature, top_k, top_p, generator: see ``sample_next``.
        kv_cache, sinks: the KV-cache policy past ``block_size`` (``KV_CACHE_POLICIES``), the rolling cache's sinks.
    Raises:
        ConfigError: for bad sampling options (see ``sample_next``) or a bad KV-cache policy (``check_kv_cache``).
        ValueError: for ``pad`` without ``use_cache``.
    """
    check_sampling(temperature, top_k, top_p)
    check_kv_cache(model, kv_cache, sinks)
    if pad is not None and not use_cache:
        raise ValueError("left-padded batches need the KV cache (use_cache=True)")
    block_size, cache_length = model.config.block_size, min(idx.size(1) + max_new_tokens, model.config.block_size)
    rolling = kv_cache == "rolling" and idx.size(1) + max_new_tokens > block_size
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    tokens, length = idx[:, -block_size:], idx.size(1)  # the last block_size tokens of a sequence of `length`
    try:
        for step in range(max_new_tokens):
            hidden = _last_hidden(model, tokens, length, step, cache_length, pad, use_cache, sinks if rolling else None)
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
            tokens, length = torch.cat((tokens, next_token), dim=1)[:, -block_size:], length + 1
    finally:
        if use_cache:
            model.clear_kv_cache()


def _last_hidden(
    model: GPT,
    tokens: torch.Tensor,
    length: int,
    step: int,
    cache_length: int,
    pad: torch.Tensor | None,
    use_cache: bool,
    sinks: int | None,
) -> torch.Tensor:
    """Final hidden state (B, C) of the last position of a sequence of ``length`` tokens, whose last ones are
    ``tokens`` (B, L <= block_size), through the KV cache when ``use_cache``: at step 0, or once the sequence outgrew
    a cache without ``sinks`` (not rolling), the last ``cache_length`` tokens are prefilled afresh; otherwise only
    the newest token runs, at sequence index ``length - 1``."""
    if not use_cache:
        return model.hidden_states(tokens[:, -model.config.block_size :])[:, -1]
    if step == 0 or (sinks is None and length > cache_length):
        window = tokens[:, -cache_length:]
        shift = length - window.size(1)
        window_pad = None if pad is None else (pad - shift).clamp(min=0)
        model.setup_kv_cache(tokens.size(0), cache_length, window_pad, sinks=sinks)
        return model.hidden_states(window, input_pos=torch.arange(window.size(1), device=tokens.device))[:, -1]
    input_pos = torch.tensor([length - 1], device=tokens.device)
    return model.hidden_states(tokens[:, -1:], input_pos=input_pos)[:, -1]


@torch.no_grad()
def forced_logits(
    model: GPT, stream: torch.Tensor, kv_cache: str = "reprefill", sinks: int = 4, prompt_length: int = 1
) -> Iterator[torch.Tensor]:
    """Teacher forcing through a KV-cache policy: the next-token logits (B, V) after each prefix of ``stream``
    (B, N) of ``prompt_length`` .. N tokens, computed as ``iter_tokens`` computes them when it generates that text
    with that policy (the prompt prefilled, then one token per step; see ``iter_tokens`` for ``kv_cache`` and
    ``sinks``). Scoring ``stream[:, prompt_length:]`` against them measures the policy's perplexity.

    Raises:
        ConfigError: for a bad KV-cache policy (``check_kv_cache``).
    """
    check_kv_cache(model, kv_cache, sinks)
    block_size, N = model.config.block_size, stream.size(1)
    cache_length, rolling = min(N, block_size), kv_cache == "rolling" and N > block_size
    try:
        for step, length in enumerate(range(prompt_length, N + 1)):
            tokens = stream[:, max(0, length - block_size) : length]
            yield model.head(
                _last_hidden(model, tokens, length, step, cache_length, None, True, sinks if rolling else None)
            )
    finally:
        model.clear_kv_cache()


def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    """``idx`` (B, T) extended by up to ``max_new_tokens`` tokens: (B, T + n), n < max_new_tokens only when every
    row reached ``eos_id``. Keyword arguments and errors as for ``iter_tokens``.
    """
    new = list(iter_tokens(model, idx, max_new_tokens, **kwargs))
    return torch.cat([idx, torch.stack(new, dim=1)], dim=1) if new else idx
