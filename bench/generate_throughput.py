"""Generation speed: prompt processing (prefill) and decode tokens/s, and peak memory, side by side for
lit_gpt with the KV cache, lit_gpt without it, and Hugging Face transformers' ``generate``.

    python bench/generate_throughput.py --preset llama-124m --new_tokens 256
    python bench/generate_throughput.py --checkpoint runs/shakespeare-char/checkpoints/last.ckpt --prompt_length 32

The model (a preset with random weights, or a checkpoint) is exported once with ``lit_gpt.checkpoint.save_hf``; every
contender loads that same folder, in its own process, so the peak resident memory of each is its own. Decoding
is greedy, with a random prompt of ``--prompt_length`` tokens; each contender is warmed up first. Prefill time is
the median time to the first new token over 5 runs; decode tokens/s counts the remaining ``new_tokens - 1`` per
row. The script also checks that the contenders produce the same tokens. transformers is needed for the ``hf``
contender only.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CONTENDERS = ("lit_gpt", "lit_gpt_no_cache", "hf")


def run_contender(
    name: str, folder: str, batch_size: int, prompt_length: int, new_tokens: int, vocab_size: int, repeats: int = 5
) -> dict:
    """Time one contender in this process; returns its figures and generated ids.

    Prefill: the median over ``repeats`` runs of the time to the first new token. Decode: one run of
    ``new_tokens`` tokens, its total time less that median, over ``new_tokens - 1`` tokens.
    """
    torch.manual_seed(0)
    if name == "hf":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder).eval()

        def generate(idx: torch.Tensor, n: int) -> torch.Tensor:
            kwargs = dict(do_sample=False, eos_token_id=None, pad_token_id=0, attention_mask=torch.ones_like(idx))
            return model.generate(idx, max_new_tokens=n, min_new_tokens=n, **kwargs)[:, idx.size(1) :]

    else:
        from lit_gpt.checkpoint import load_model
        from lit_gpt.generate import iter_tokens

        model = load_model(folder)

        def generate(idx: torch.Tensor, n: int) -> torch.Tensor:
            return torch.stack(list(iter_tokens(model, idx, n, temperature=0.0, use_cache=name == "lit_gpt")), dim=1)

    def timed(n: int) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        out = generate(idx, n)
        return time.perf_counter() - start, out

    # the same prompt for every contender: ids of the tokenizer (below the padded vocabulary of the HF export)
    idx = torch.randint(0, vocab_size, (batch_size, prompt_length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        generate(idx, 3)  # warm-up
        prefill_s = statistics.median(timed(1)[0] for _ in range(repeats))
        total_s, new = timed(new_tokens)
    decode_s = total_s - prefill_s
    return {
        "contender": name,
        "prefill_tokens_per_s": batch_size * prompt_length / prefill_s,
        "decode_tokens_per_s": batch_size * (new_tokens - 1) / decode_s,
        "decode_ms_per_step": 1000 * decode_s / (new_tokens - 1),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ids": new.tolist(),
    }


def export_model(args: argparse.Namespace, out_dir: str) -> str:
    from lit_gpt.checkpoint import load_checkpoint, save_hf
    from lit_gpt.config import Config
    from lit_gpt.model import GPT
    from lit_gpt.tokenizer import Tokenizer

    if args.checkpoint:
        model, tokenizer = load_checkpoint(args.checkpoint)
        description = args.checkpoint
    else:
        torch.manual_seed(0)
        tokenizer = Tokenizer.from_name("gpt2")
        model = GPT(Config.from_name(args.preset, vocab_size=tokenizer.vocab_size))
        description = f"preset {args.preset} (random weights)"
    architecture = save_hf(model, tokenizer, out_dir)
    print(f"model: {description}, {model.num_params():,} parameters, exported as {architecture}")
    return out_dir, tokenizer.vocab_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a .ckpt or export folder")
    source.add_argument("--preset", default="llama-124m", help="a lit_gpt.config preset, random weights")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--prompt_length", type=int, default=128)
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma-separated from {CONTENDERS}")
    parser.add_argument("--_run", help=argparse.SUPPRESS)  # internal: run one contender and print JSON
    parser.add_argument("--_folder", help=argparse.SUPPRESS)
    parser.add_argument("--_vocab_size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._run:
        print(
            json.dumps(
                run_contender(
                    args._run, args._folder, args.batch_size, args.prompt_length, args.new_tokens, args._vocab_size
                )
            )
        )
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder, vocab_size = export_model(args, str(Path(tmp) / "hf"))
        print(
            f"batch {args.batch_size}, prompt {args.prompt_length} tokens, {args.new_tokens} new tokens, greedy, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}"
        )
        results = []
        for name in args.contenders.split(","):
            command = [
                sys.executable,
                __file__,
                "--_run",
                name,
                "--_folder",
                folder,
                "--batch_size",
                str(args.batch_size),
                "--prompt_length",
                str(args.prompt_length),
                "--new_tokens",
                str(args.new_tokens),
                "--_vocab_size",
                str(vocab_size),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("\n| contender | prefill tokens/s | decode tokens/s | decode ms/token | peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['contender']} | {r['prefill_tokens_per_s']:,.0f} | {r['decode_tokens_per_s']:,.1f} | "
            f"{r['decode_ms_per_step']:.1f} | {r['peak_rss_mib']:,.0f} |"
        )
    by_name = {r["contender"]: r for r in results}
    if "lit_gpt" in by_name:
        for other in ("lit_gpt_no_cache", "hf"):
            if other in by_name:
                speedup = by_name["lit_gpt"]["decode_tokens_per_s"] / by_name[other]["decode_tokens_per_s"]
                ours, theirs = by_name["lit_gpt"]["ids"][0], by_name[other]["ids"][0]
                agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(ours))
                print(f"lit_gpt decode vs {other}: {speedup:.2f}x; greedy tokens agree for {agree} of {len(ours)}")


if __name__ == "__main__":
    main()
