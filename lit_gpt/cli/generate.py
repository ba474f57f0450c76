"""``lit-gpt generate --checkpoint PATH --prompt TEXT [...]``: sample text from a trained model.

The checkpoint carries the model config and the tokenizer spec, so no YAML is needed. Decoding is
``lit_gpt.generate.iter_tokens`` (KV cache, left-padded batches); past ``block_size`` tokens a RoPE model keeps a
rolling cache with ``--sinks`` attention sinks, so each token stays one single-token forward pass (``--kv_cache
reprefill`` prefills the last ``block_size`` tokens at every step instead, as models with learned positions do). Text
is printed as it comes, holding back what could be the start of a ``--stop`` string. ``--quantize int8|int4`` quantizes the weights after loading
(``lit_gpt.quantize``). No Lightning is imported.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch

from lit_gpt.cli.args import ArgumentParser
from lit_gpt.cli.loading import add_model_arguments, load_for_inference
from lit_gpt.errors import ConfigError
from lit_gpt.generate import KV_CACHE_POLICIES, check_kv_cache, check_sampling, default_kv_cache, iter_tokens, left_pad
from lit_gpt.tokenizer import Tokenizer


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lit-gpt generate", description="Sample text from a lit_gpt checkpoint.")
    add_model_arguments(parser)
    parser.add_argument(
        "--prompt", action="append", help="text to continue (repeat for a batch); none starts from end-of-text"
    )
    parser.add_argument("--max_new_tokens", type=int, default=500, help="tokens to generate per sample")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 is greedy")
    parser.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens only")
    parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    parser.add_argument("--num_samples", type=int, default=1, help="samples per prompt, generated as one batch")
    parser.add_argument("--stop", action="append", default=[], help="stop a sample at this string (repeatable)")
    parser.add_argument("--no_cache", action="store_true", help="recompute the context every step (slow)")
    parser.add_argument(
        "--kv_cache",
        choices=KV_CACHE_POLICIES,
        default=None,
        help="past block_size: a rolling cache with attention sinks, or a prefill of the last block_size tokens "
        "per step (default: rolling for RoPE models, reprefill for learned positions and dynamic RoPE scaling)",
    )
    parser.add_argument("--sinks", type=int, default=4, help="first tokens the rolling cache keeps (default 4)")
    return parser


def main(args: list[str]) -> None:
    """Print continuations of each ``--prompt`` (``args`` is ``["generate", flags...]``), streaming a single one.

    Raises:
        ConfigError: for bad flags or sampling options, an unusable checkpoint, or a prompt outside the vocabulary.
    """
    opts = _parser().parse_args(args[1:])
    try:
        check_sampling(opts.temperature, opts.top_k, opts.top_p)
    except ConfigError as err:
        raise ConfigError(f"--{err}") from None  # the message starts with the option's name
    if opts.max_new_tokens < 0 or opts.num_samples < 1:
        raise ConfigError("--max_new_tokens must be >= 0 and --num_samples >= 1")
    model, tokenizer, device = load_for_inference(opts)
    kv_cache = opts.kv_cache or default_kv_cache(model)
    try:
        check_kv_cache(model, kv_cache, opts.sinks)
    except ConfigError as err:
        raise ConfigError(f"--{err}") from None  # the message starts with the option's name
    prompts = [p for p in (opts.prompt or [""]) for _ in range(opts.num_samples)]
    encoded = _encode(prompts, tokenizer, model.config.block_size)
    if len(set(map(len, encoded))) > 1 and opts.no_cache:
        raise ConfigError("prompts of different lengths are batched with the KV cache; drop --no_cache")
    idx, pad = left_pad(encoded, tokenizer.eot_id)
    generator = torch.Generator(device)
    if opts.seed is not None:
        generator.manual_seed(opts.seed)
    else:
        generator.seed()
    tokens = iter_tokens(
        model,
        idx.to(device),
        opts.max_new_tokens,
        temperature=opts.temperature,
        top_k=opts.top_k,
        top_p=opts.top_p,
        vocab_size=tokenizer.vocab_size,
        generator=generator,
        pad=pad.to(device) if pad.any() else None,
        eos_id=tokenizer.eot_id,
        use_cache=not opts.no_cache,
        kv_cache=kv_cache,
        sinks=opts.sinks,
    )
    if len(prompts) == 1:
        _print_streaming(prompts[0], tokens, tokenizer, opts.stop)
    else:
        rows = torch.stack(list(tokens), dim=1).tolist() if opts.max_new_tokens else [[] for _ in prompts]
        _print_batch(prompts, rows, tokenizer, opts.stop)


def _encode(prompts: list[str], tokenizer: Tokenizer, block_size: int) -> list[list[int]]:
    """Token ids of each prompt after the tokenizer's ``document_prefix`` (a Hugging Face tokenizer's BOS; without
    one, end-of-text for an empty prompt), keeping the last ``block_size`` with a warning."""
    encoded = []
    for text in prompts:
        ids = tokenizer.document_prefix + tokenizer.encode(text)
        ids = ids or [tokenizer.eot_id]
        if len(ids) > block_size:
            print(
                f"warning: the prompt has {len(ids)} tokens, more than block_size {block_size}; keeping the last "
                f"{block_size}",
                file=sys.stderr,
            )
            ids = ids[-block_size:]
        encoded.append(ids)
    return encoded


def _cut(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string in it, and whether one was found."""
    cuts = [text.find(s) for s in stops if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _print_streaming(prompt: str, tokens: Iterator[torch.Tensor], tokenizer: Tokenizer, stops: list[str]) -> None:
    """Print the prompt, then text as tokens arrive, up to end-of-text or a stop string."""
    print(prompt, end="", flush=True)
    stream_text(tokens, tokenizer, stops, {tokenizer.eot_id})


def stream_text(tokens: Iterator[torch.Tensor], tokenizer: Tokenizer, stops: list[str], stop_ids: set[int]) -> str:
    """Print the text of ``tokens`` (each a (1,) tensor) as they arrive, up to a token of ``stop_ids`` or the first
    of the ``stops`` strings (neither printed), then a newline; returns the text printed.

    What could be the start of a stop string, or an unfinished multi-byte character, is held back until the next
    tokens decide it.
    """
    hold = max((len(s) for s in stops), default=1) - 1
    new: list[int] = []
    text, shown = "", 0
    for token in tokens:
        if token.item() in stop_ids:
            break
        new.append(token.item())
        text, stopped = _cut(tokenizer.decode(new), stops)
        if stopped:
            break
        if not text.endswith("\ufffd"):  # not in the middle of a multi-byte character
            end = max(shown, len(text) - hold)  # never a negative index while the text is shorter than ``hold``
            print(text[shown:end], end="", flush=True)
            shown = end
    print(text[shown:], flush=True)
    return text


def _print_batch(prompts: list[str], rows: list[list[int]], tokenizer: Tokenizer, stops: list[str]) -> None:
    """Print each prompt with its continuation (up to end-of-text or a stop string), separated by rules."""
    for i, (head, row) in enumerate(zip(prompts, rows)):
        row = row[: row.index(tokenizer.eot_id)] if tokenizer.eot_id in row else row
        if i:
            print("\n" + "-" * 40)
        print(head + _cut(tokenizer.decode(row), stops)[0])
