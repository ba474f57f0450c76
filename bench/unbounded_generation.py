"""Generation past ``block_size``: perplexity and tokens/s of the KV-cache policies on a stream many times
``block_size`` long, and the tokens/s of each quarter of a long generation.

    python bench/unbounded_generation.py --checkpoint runs/shakespeare-char/checkpoints/last.ckpt \
        --text data/tinyshakespeare/input.txt [--val_fraction 0.1] [--max_tokens N] [--streams 1] [--sinks 4] \
        [--part perplexity|speed|both] [--json PATH]

Perplexity (``--part perplexity``): the stream is the last ``--val_fraction`` of the text's tokens (for Tiny
Shakespeare and ``char`` tokens, the validation split of configs/shakespeare-char.yaml), or its first
``--max_tokens``, cut into ``--streams`` consecutive pieces read side by side as one batch (each piece is a
stream of its own, with its own first tokens as sinks; the perplexity is over all of them). It is read token by
token, teacher-forced (``lit_gpt.generate.forced_logits``): each token is predicted from what the policy keeps of
the tokens before it, with the forward passes generation would run, so the perplexity is that of the text a generation with that policy would see:
- ``reprefill``: the last ``block_size`` tokens prefilled afresh at every step (the reference: what the model
  computes without a cache);
- ``rolling, 0 sinks``: a rolling cache of ``block_size`` entries, the most recent tokens only;
- ``rolling, N sinks``: the same, keeping the stream's first N tokens (``--sinks``).
tokens/s is the stream's length over the time of that pass (one forward per token, no sampling).

Speed (``--part speed``): ``16 x block_size`` tokens generated greedily (``lit_gpt.generate.iter_tokens``, no
end-of-text stop) from the stream's first ``--prompt_length`` tokens, with each policy; the tokens/s of each quarter
of them. Constant per-token cost shows as equal quarters.

Prints the machine and markdown tables; ``--json`` writes the figures too.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from lit_gpt.checkpoint import load_checkpoint
from lit_gpt.generate import forced_logits, iter_tokens
from lit_gpt.train.hardware import cpu_class


def policies(sinks: int) -> list[tuple[str, str, int]]:
    """(label, kv_cache, sinks) of the contenders."""
    return [
        ("reprefill", "reprefill", 0),
        ("rolling, 0 sinks", "rolling", 0),
        (f"rolling, {sinks} sinks", "rolling", sinks),
    ]


def perplexity(model, stream: torch.Tensor, kv_cache: str, sinks: int) -> dict:
    """Teacher-forced perplexity of each row of ``stream`` (B, N), tokens 1 .. N-1, through one policy, and the
    tokens/s of the pass (B x (N - 1) tokens scored)."""
    total, start = 0.0, time.perf_counter()
    for n, logits in enumerate(forced_logits(model, stream[:, :-1], kv_cache, sinks)):
        total += F.cross_entropy(logits.float(), stream[:, n + 1], reduction="sum").item()
    seconds = time.perf_counter() - start
    count = stream.size(0) * (stream.size(1) - 1)
    return {"loss": total / count, "ppl": math.exp(total / count), "tokens_per_s": count / seconds}


def quarters(model, prompt: torch.Tensor, new_tokens: int, kv_cache: str, sinks: int) -> list[float]:
    """tokens/s of each quarter of ``new_tokens`` tokens generated greedily from ``prompt`` (1, P)."""
    stamps = [time.perf_counter()]
    for _ in iter_tokens(model, prompt, new_tokens, temperature=0.0, kv_cache=kv_cache, sinks=sinks):
        stamps.append(time.perf_counter())
    quarter = new_tokens // 4
    return [quarter / (stamps[(q + 1) * quarter] - stamps[q * quarter]) for q in range(4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a lit_gpt checkpoint (any form load_checkpoint reads)")
    parser.add_argument("--text", required=True, help="the text file whose tail is the stream")
    parser.add_argument("--val_fraction", type=float, default=0.1, help="the tail of the text's tokens to read")
    parser.add_argument("--max_tokens", type=int, default=None, help="read only the stream's first N tokens")
    parser.add_argument("--streams", type=int, default=1, help="pieces of the stream read as one batch (perplexity)")
    parser.add_argument("--sinks", type=int, default=4, help="attention sinks of the rolling cache with sinks")
    parser.add_argument("--part", choices=("perplexity", "speed", "both"), default="both")
    parser.add_argument("--prompt_length", type=int, default=16, help="prompt tokens of the speed part")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    torch.manual_seed(0)
    model, tokenizer = load_checkpoint(args.checkpoint)
    model.eval()
    tokens = tokenizer.encode(open(args.text, encoding="utf-8").read())
    stream = torch.tensor(tokens[len(tokens) - int(len(tokens) * args.val_fraction) :])[None]
    stream = stream[:, : args.max_tokens] if args.max_tokens else stream
    block = model.config.block_size
    print(f"{cpu_class()}, {torch.get_num_threads()} threads, torch {torch.__version__}; block_size {block}; ", end="")
    print(f"a stream of {stream.size(1):,} tokens ({stream.size(1) / block:.0f} x block_size)\n")
    figures: dict = {"block_size": block, "stream_tokens": stream.size(1)}
    if args.part in ("perplexity", "both"):
        pieces = stream[:, : stream.size(1) // args.streams * args.streams].view(args.streams, -1)
        print(f"perplexity: {args.streams} piece(s) of {pieces.size(1):,} tokens read as one batch")
        print("| policy | loss | perplexity | vs reprefill | tokens/s |\n|---|---:|---:|---:|---:|")
        for label, kv_cache, sinks in policies(args.sinks):
            result = figures.setdefault("perplexity", {})[label] = perplexity(model, pieces, kv_cache, sinks)
            reference = figures["perplexity"]["reprefill"]["ppl"]
            cells = [label, f"{result['loss']:.4f}", f"{result['ppl']:.4f}", f"{result['ppl'] / reference:.3f}x"]
            print("| " + " | ".join(cells + [f"{result['tokens_per_s']:,.0f}"]) + " |", flush=True)
    if args.part in ("speed", "both"):
        new = 16 * block
        print(f"\ntokens/s per quarter of {new:,} generated tokens (greedy, prompt {args.prompt_length} tokens)")
        print("| policy | Q1 | Q2 | Q3 | Q4 | Q4 / Q1 |\n|---|---:|---:|---:|---:|---:|")
        for label, kv_cache, sinks in policies(args.sinks):
            rates = quarters(model, stream[:, : args.prompt_length], new, kv_cache, sinks)
            figures.setdefault("quarters", {})[label] = rates
            print(f"| {label} | " + " | ".join(f"{r:,.0f}" for r in rates) + f" | {rates[3] / rates[0]:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
