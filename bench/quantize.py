"""Model memory, perplexity and decode speed of one checkpoint in float32, bfloat16, int8 and int4, side by side.

    python bench/quantize.py --checkpoint runs/wikitext2-124m/checkpoints/last.ckpt \
        --data ../shared/data/wikitext-2/valid.txt [--modes fp32 bf16 int8 int4] [--group_size 64] \
        [--block_size N --stride S --max_tokens N] [--decode_tokens 128] [--device cpu|cuda]

Each mode loads the checkpoint afresh in its own process (``lit_gpt.load_checkpoint``), then casts (``bf16``) or
quantizes it (``int8`` / ``int4``: ``lit_gpt.quantize``, int4 in groups of ``--group_size``) and measures:

- memory: the bytes of the model's parameters and buffers (``lit_gpt.quantize.model_bytes``: for torchao tensors, the
  integer data and scales they hold), and the share of float32's;
- perplexity and bits per byte of ``--data`` (``lit_gpt.evaluate``: the whole text, or its first ``--max_tokens``
  tokens, after an end-of-text token; windows of ``--block_size`` tokens, default the model's, advancing by
  ``--stride``, default block_size), and the change against float32;
- decode speed: tokens per second of greedy KV-cache decoding of one sequence (batch 1) after a 32-token prompt,
  from the second generated token to the last (``--decode_tokens``), so the prefill is not counted.

It prints the machine, the model, one markdown row per mode, and whether int8 and int4 meet issue 13's goals
(int8: perplexity at most +1% and memory at most 30% of float32; int4: +5% and 20%). On a CPU, int4 is torchao's
CPU path (``PrototypeInt4WeightOnlyConfig`` in torchao 0.18) with float32 activations; on a GPU the tinygemm path in
bfloat16. For a meaningful perplexity use a trained model: configs/wikitext2-124m.yaml trains the llama-124m preset
on WikiText-2 (a Hugging Face GPT-2 folder, if you have one, works too: ``--checkpoint path/to/gpt2``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from lit_gpt.checkpoint import load_checkpoint
from lit_gpt.data.corpus import Cleaning, iter_documents, resolve_sources
from lit_gpt.evaluate import Evaluation, document_tokens, negative_log_likelihood
from lit_gpt.generate import iter_tokens
from lit_gpt.quantize import model_bytes, quantize

MODES = ("fp32", "bf16", "int8", "int4")
GOALS = {"int8": (0.01, 0.30), "int4": (0.05, 0.20)}
"""Issue 13's goals: (largest perplexity increase over float32, largest share of float32's memory)."""
PROMPT_TOKENS = 32


def prepare(model, mode: str, group_size: int):
    """``model`` in ``mode``: float32 as loaded, cast to bfloat16, or quantized."""
    if mode == "bf16":
        return model.to(torch.bfloat16)
    if mode in ("int8", "int4"):
        return quantize(model, mode, group_size)
    return model


def text_tokens(path: str, tokenizer, max_tokens: int | None) -> tuple[torch.Tensor, int]:
    """The token stream ``lit-gpt evaluate`` scores for ``path`` (cut to ``max_tokens`` targets) and its bytes."""
    documents = iter_documents(resolve_sources(path), Cleaning(remove_control=False, deduplicate=False))
    tokens, n_bytes, _ = document_tokens(tokenizer, documents)
    if max_tokens is not None and max_tokens + 1 < tokens.numel():
        tokens = tokens[: max_tokens + 1]
        n_bytes = len(tokenizer.decode([t for t in tokens[1:].tolist() if t != tokenizer.eot_id]).encode("utf-8"))
    return tokens, n_bytes


def decode_speed(model, prompt: torch.Tensor, new_tokens: int, vocab_size: int) -> float:
    """Greedy KV-cache decoding tokens/s of one sequence, timed from the first generated token to the last."""
    sync = torch.cuda.synchronize if prompt.device.type == "cuda" else (lambda: None)
    list(iter_tokens(model, prompt, 4, temperature=0.0, vocab_size=vocab_size))  # warm-up
    started = None
    for i, _ in enumerate(iter_tokens(model, prompt, new_tokens, temperature=0.0, vocab_size=vocab_size)):
        if i == 0:
            sync()
            started = time.perf_counter()
    sync()
    return (new_tokens - 1) / (time.perf_counter() - started)


def measure(args, mode: str) -> dict:
    """Every figure of one mode, in this process."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_checkpoint(args.checkpoint, device)
    config = model.config
    model = prepare(model, mode, args.group_size)
    tokens, n_bytes = text_tokens(args.data, tokenizer, args.max_tokens)
    started = time.perf_counter()
    result = negative_log_likelihood(model, tokens, args.block_size, args.stride, args.batch_size)
    evaluation = Evaluation(tokens=result.tokens, nll=result.nll, bytes=n_bytes)
    eval_seconds = time.perf_counter() - started
    prompt = tokens[1 : PROMPT_TOKENS + 1][None].to(device)
    new_tokens = min(args.decode_tokens, config.block_size - PROMPT_TOKENS)
    speed = decode_speed(model, prompt, new_tokens, tokenizer.vocab_size)
    return {
        "mode": mode,
        "bytes": model_bytes(model),
        "perplexity": evaluation.perplexity,
        "bits_per_byte": evaluation.bits_per_byte,
        "tokens": evaluation.tokens,
        "eval_seconds": eval_seconds,
        "decode_tokens_per_s": speed,
        "decode_tokens": new_tokens,
        "parameters": config.num_params(),
        "config": config.to_dict(),
        "device": _device_name(device),
        "tokenizer": tokenizer.name,
    }


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    from lit_gpt.train.hardware import cpu_class

    return f"CPU {cpu_class()}, {torch.get_num_threads()} threads"


def run_mode(argv: list[str], mode: str) -> dict | None:
    """``measure`` in a fresh process (nothing from another mode stays in memory or caches)."""
    done = subprocess.run([sys.executable, __file__, *argv, "--one", mode], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        print(f"{mode}: failed (exit {done.returncode})\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT ") :])


def report(results: dict[str, dict], args) -> None:
    first = next(iter(results.values()))
    c = first["config"]
    print(
        f"checkpoint: {args.checkpoint} ({first['parameters']:,} parameters: {c['n_layer']} layers, n_embd "
        f"{c['n_embd']}, vocabulary {c['vocab_size']}, {first['tokenizer']})"
    )
    print(f"machine: {first['device']}; torch {torch.__version__}")
    print(
        f"text: {args.data}, {first['tokens']:,} tokens scored; windows of {args.block_size or c['block_size']} "
        f"advancing by {args.stride or args.block_size or c['block_size']}; decode: batch 1, {PROMPT_TOKENS}-token "
        f"prompt, {first['decode_tokens']} tokens; int4 groups of {args.group_size}\n"
    )
    base = results.get("fp32")
    print("| mode | memory | vs fp32 | perplexity | vs fp32 | bits per byte | decode tokens/s | eval s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode, r in results.items():
        memory = f"{100 * r['bytes'] / base['bytes']:.1f}%" if base else "-"
        change = f"{100 * (r['perplexity'] / base['perplexity'] - 1):+.2f}%" if base else "-"
        print(
            f"| {mode} | {r['bytes'] / 2**20:,.1f} MiB | {memory} | {r['perplexity']:.3f} | {change} | "
            f"{r['bits_per_byte']:.4f} | {r['decode_tokens_per_s']:.1f} | {r['eval_seconds']:.1f} |"
        )
    for mode, (max_increase, max_share) in GOALS.items():
        if base and mode in results:
            increase = results[mode]["perplexity"] / base["perplexity"] - 1
            share = results[mode]["bytes"] / base["bytes"]
            verdict = "met" if increase <= max_increase and share <= max_share else "NOT met"
            print(
                f"goal {mode}: perplexity {100 * increase:+.2f}% (at most +{100 * max_increase:.0f}%), memory "
                f"{100 * share:.1f}% (at most {100 * max_share:.0f}%) of float32: {verdict}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="any checkpoint lit_gpt.load_checkpoint reads")
    parser.add_argument("--data", required=True, help="the text to score (e.g. WikiText-2's valid.txt)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--group_size", type=int, default=64, help="int4: weights per scale (32, 64 or 128)")
    parser.add_argument("--block_size", type=int, default=None, help="evaluation window (default: the model's)")
    parser.add_argument("--stride", type=int, default=None, help="window advance (default: block_size)")
    parser.add_argument("--max_tokens", type=int, default=None, help="score only the first N tokens of --data")
    parser.add_argument("--batch_size", type=int, default=8, help="evaluation windows per forward pass")
    parser.add_argument("--decode_tokens", type=int, default=128, help="tokens generated for the decode speed")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one mode
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args, args.one)))
        return
    argv = [a for a in sys.argv[1:]]
    results = {mode: r for mode in args.modes if (r := run_mode(argv, mode)) is not None}
    if not results:
        sys.exit(1)
    report(results, args)


if __name__ == "__main__":
    main()
