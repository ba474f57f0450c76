"""Sampling from a trained checkpoint: ``lit-gpt generate --checkpoint PATH --prompt TEXT``.

The checkpoint carries the model config and the tokenizer spec, so no YAML is needed. Decoding uses the
model's KV cache (prefill, then one token per step), batches prompts of different lengths with left padding,
stops at end-of-text or at stop strings, and streams text as it comes. No Lightning is imported here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import torch

from lit_gpt.checkpoint import load_checkpoint
from lit_gpt.config import ConfigError
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
    """Raise ConfigError unless temperature >= 0, top_k is None or >= 1, and top_p is None or in (0, 1]."""
    if temperature < 0:
        raise ConfigError(f"--temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"--top_p must be in (0, 1], got {top_p}")


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists of different lengths into one batch, padded on the left.

    Returns ``idx`` (B, T_max) int64 and ``pad`` (B,) int64, the number of padding tokens in each row.
    """
    longest = max(len(p) for p in prompts)
    idx = torch.tensor([[pad_id] * (longest - len(p)) + list(p) for p in prompts], dtype=torch.long)
    return idx, torch.tensor([longest - len(p) for p in prompts], dtype=torch.long)


@torch.no_grad()
def stream(
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
        eos_id: a row that produced it keeps producing it, and the stream ends when every row has.
        temperature, top_k, top_p, generator: see ``sample_next``.
    Raises:
        ConfigError: for bad sampling options (see ``sample_next``).
        ValueError: for ``pad`` without ``use_cache``.
    """
    check_sampling(temperature, top_k, top_p)
    if pad is not None and not use_cache:
        raise ValueError("left-padded batches need the KV cache (use_cache=True)")
    B, block_size = idx.size(0), model.config.block_size
    cache_length = min(idx.size(1) + max_new_tokens, block_size)
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
    tokens = idx
    try:
        for step in range(max_new_tokens):
            length = tokens.size(1)
            if not use_cache:
                hidden = model.hidden_states(tokens[:, -block_size:])
            elif step == 0 or length > cache_length:  # prefill the prompt, or the window after an overflow
                window = tokens[:, -cache_length:]
                shift = length - window.size(1)
                model.setup_kv_cache(B, cache_length, None if pad is None else (pad - shift).clamp(min=0))
                hidden = model.hidden_states(window, input_pos=torch.arange(window.size(1), device=idx.device))
            else:  # one new token at cache index length - 1
                input_pos = torch.tensor([length - 1], device=idx.device)
                hidden = model.hidden_states(tokens[:, -1:], input_pos=input_pos)
            logits = model.lm_head(hidden[:, -1])  # (B, V): the head on the last position only
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


def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    """``idx`` (B, T) extended by up to ``max_new_tokens`` tokens: (B, T + n), n < max_new_tokens only when every
    row reached ``eos_id``. Keyword arguments and errors as for ``stream``.
    """
    new = list(stream(model, idx, max_new_tokens, **kwargs))
    return torch.cat([idx, torch.stack(new, dim=1)], dim=1) if new else idx


def _cut(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string in it, and whether one was found."""
    cuts = [text.find(s) for s in stops if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def main(argv: list[str] | None = None) -> None:
    """``lit-gpt generate``: print continuations of ``--prompt``, streaming them when there is one."""
    parser = argparse.ArgumentParser(prog="lit-gpt generate", description="Sample text from a lit_gpt checkpoint.")
    parser.add_argument("--checkpoint", required=True,
                        help="a .ckpt written by `lit-gpt fit`, or a folder written by `lit-gpt export`")  # fmt: skip
    parser.add_argument("--prompt", action="append", help="text to continue (repeat for a batch); none starts "
                        "from end-of-text")  # fmt: skip
    parser.add_argument("--max_new_tokens", type=int, default=500, help="tokens to generate per sample")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 is greedy")
    parser.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens only")
    parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    parser.add_argument("--num_samples", type=int, default=1, help="samples per prompt, generated as one batch")
    parser.add_argument("--stop", action="append", default=[], help="stop a sample at this string (repeatable)")
    parser.add_argument("--no_cache", action="store_true", help="recompute the context every step (slow)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    check_sampling(args.temperature, args.top_k, args.top_p)
    if args.max_new_tokens < 0 or args.num_samples < 1:
        raise ConfigError("--max_new_tokens must be >= 0 and --num_samples >= 1")

    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    block_size = model.config.block_size
    prompts = [p for p in (args.prompt or [""]) for _ in range(args.num_samples)]
    encoded = []
    for text in prompts:
        ids = tokenizer.encode(text) if text else [tokenizer.eot_id]
        if len(ids) > block_size:
            print(f"warning: the prompt has {len(ids)} tokens, more than block_size {block_size}; keeping the last "
                  f"{block_size}", file=sys.stderr)  # fmt: skip
            ids = ids[-block_size:]
        encoded.append(ids)
    if len(set(map(len, encoded))) > 1 and args.no_cache:
        raise ConfigError("prompts of different lengths are batched with the KV cache; drop --no_cache")
    idx, pad = left_pad(encoded, tokenizer.eot_id)
    generator = torch.Generator(args.device)
    if args.seed is not None:
        generator.manual_seed(args.seed)
    else:
        generator.seed()
    tokens = stream(
        model, idx.to(args.device), args.max_new_tokens, args.temperature, args.top_k, args.top_p,
        tokenizer.vocab_size, generator, pad.to(args.device) if pad.any() else None, tokenizer.eot_id,
        use_cache=not args.no_cache,
    )  # fmt: skip
    if len(prompts) == 1:  # stream: print text as it comes, holding back what could start a stop string
        hold = max((len(s) for s in args.stop), default=1) - 1
        print(prompts[0], end="", flush=True)
        new: list[int] = []
        shown = 0
        for token in tokens:
            if token.item() == tokenizer.eot_id:
                break
            new.append(token.item())
            text, stopped = _cut(tokenizer.decode(new), args.stop)
            if stopped:
                break
            if not text.endswith("\ufffd"):  # not in the middle of a multi-byte character
                print(text[shown : len(text) - hold], end="", flush=True)
                shown = max(shown, len(text) - hold)
        print(text[shown:] if new else "", flush=True)
        return
    rows = torch.stack(list(tokens), dim=1).tolist() if args.max_new_tokens else [[] for _ in prompts]
    for i, (head, row) in enumerate(zip(prompts, rows)):
        row = row[: row.index(tokenizer.eot_id)] if tokenizer.eot_id in row else row
        if i:
            print("\n" + "-" * 40)
        print(head + _cut(tokenizer.decode(row), args.stop)[0])
