"""Training throughput of a config through the real path (LightningCLI -> Trainer.fit), steady state, side by side.

    python bench/train_throughput.py --config configs/shakespeare-char.yaml \
        --settings 32-true 32-true+compile bf16-mixed bf16-mixed+compile [--steps 300 --warmup 50] \
        [--peak_flops 7.9e11] [-- FLAGS]

Each setting is a Lightning precision, optionally ``+compile`` (``--model.compile true``); each runs in a fresh
process, so compilation caches and peak memory do not leak from one to the next. Everything after ``--`` is passed
to the CLI of every setting (e.g. ``-- --data.batch_size 32``). Validation and checkpointing are off; the first
``--warmup`` optimizer steps (compilation included) are not timed.

Prints one markdown row per setting: ms per optimizer step, tokens/s, model FLOP utilisation (MFU: the model's
training FLOPs from ``lit_gpt.model.flops_per_token`` per second, over the peak) and peak memory (CUDA: the
allocator's peak; CPU: the process's peak resident set). The peak FLOP/s comes from ``--peak_flops`` or, on a
GPU, from Lightning's table of devices (``get_available_flops``); a CPU has none, so MFU is left blank there
unless given.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_gpt.model import flops_per_token
from lit_gpt.train.lightning_cli import build_cli


class StepTimer(Callback):
    """Wall time of optimizer steps ``warmup`` .. end, and the tokens they consumed."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.tokens, self.steps, self.seconds = warmup, None, 0, 0, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and self.start is None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()
        elif self.start is not None:
            self.tokens += batch[0].numel()
            self.steps = trainer.global_step - self.warmup

    def on_train_end(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def measure(config: str, setting: str, steps: int, warmup: int, extra: list[str]) -> dict:
    """Train ``warmup + steps`` optimizer steps with one setting in this process; return its figures."""
    precision, _, compile_flag = setting.partition("+")
    if compile_flag not in ("", "compile"):
        raise SystemExit(f"error: setting {setting!r}: write PRECISION or PRECISION+compile, e.g. bf16-mixed+compile")
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_cli(
            [
                "--config", config,
                "--trainer.precision", precision,
                "--model.compile", str(bool(compile_flag)).lower(),
                "--trainer.max_steps", str(warmup + steps),
                "--trainer.limit_val_batches", "0",
                "--trainer.logger.init_args.save_dir", tmp,
                "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false",
                "--checkpoint.dirpath", tmp,
                "--trainer.default_root_dir", tmp,
                *extra,
            ],  # fmt: skip
            run=False,
        )
        cli.trainer.callbacks = [c for c in cli.trainer.callbacks if not isinstance(c, ModelCheckpoint)]
        timer = StepTimer(warmup)
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    config_ = cli.model.config
    cuda = torch.cuda.is_available()
    if cuda:
        peak_memory = torch.cuda.max_memory_allocated()
    else:
        peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is in KiB on Linux
    return {
        "setting": setting,
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "parameters": cli.model.model.num_params(),
        "block_size": config_.block_size,
        "batch_size": cli.datamodule.batch_size,
        "tokens_per_step": timer.tokens / timer.steps,
        "steps": timer.steps,
        "seconds": timer.seconds,
        "flops_per_token": flops_per_token(config_, config_.block_size, training=True),
        "peak_memory": peak_memory,
        "available_flops": _available_flops(precision),
    }


def _available_flops(precision: str) -> float | None:
    """Lightning's peak FLOP/s for this GPU at the precision's compute dtype; None on CPU or an unknown device."""
    if not torch.cuda.is_available():
        return None
    from lightning.fabric.utilities.throughput import get_available_flops

    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision.split("-")[0], torch.float32)
    return get_available_flops(torch.device("cuda"), dtype)


def row(result: dict, peak_flops: float | None) -> str:
    steps_per_s = result["steps"] / result["seconds"]
    tokens_per_s = steps_per_s * result["tokens_per_step"]
    peak = peak_flops or result["available_flops"]
    mfu = f"{100 * tokens_per_s * result['flops_per_token'] / peak:.1f}%" if peak else "-"
    return (
        f"| {result['setting']} | {1000 / steps_per_s:.2f} | {tokens_per_s:,.0f} | {mfu} "
        f"| {result['peak_memory'] / 2**20:,.0f} MiB |"
    )


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--settings", nargs="+", default=["32-true", "bf16-mixed", "bf16-mixed+compile"],
                        help="PRECISION or PRECISION+compile, each measured in its own process")  # fmt: skip
    parser.add_argument("--steps", type=int, default=300, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=50, help="untimed optimizer steps first")
    parser.add_argument("--peak_flops", type=float, default=None,
                        help="peak FLOP/s of the device for MFU (default: Lightning's table on a GPU, none on CPU)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: measure one setting
    args = parser.parse_args(argv)

    if args.one:
        print("RESULT " + json.dumps(measure(args.config, args.settings[0], args.steps, args.warmup, extra)))
        return
    results = []
    for setting in args.settings:
        command = [sys.executable, __file__, "--config", args.config, "--settings", setting, "--steps",
                   str(args.steps), "--warmup", str(args.warmup), "--one", "--", *extra]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"{setting}: failed (exit {done.returncode})\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(lines[-1][len("RESULT "):]))
    if not results:
        sys.exit(1)
    first = results[0]
    print(f"config: {args.config} {' '.join(extra)}")
    print(f"model: {first['parameters']:,} parameters, block_size {first['block_size']}, batch {first['batch_size']} "
          f"({first['tokens_per_step']:,.0f} tokens per optimizer step), {first['device']}")  # fmt: skip
    print(f"timed: {args.steps} optimizer steps after {args.warmup} warm-up steps; "
          f"{first['flops_per_token'] / 1e6:,.2f} MFLOP per token (training)")  # fmt: skip
    print("\n| setting | ms/step | tokens/s | MFU | peak memory |\n|---|---:|---:|---:|---:|")
    for result in results:
        print(row(result, args.peak_flops))


if __name__ == "__main__":
    main()
