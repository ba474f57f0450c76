"""Training throughput of a config through the real path (LightningCLI -> Trainer.fit), steady state, side by side,
optionally against nanoGPT's training script on the same machine in the same invocation.

    python bench/train_throughput.py --config configs/shakespeare-char.yaml \
        --settings auto 32-true 32-true+compile bf16-mixed+compile [--steps 300 --warmup 50] \
        [--peer nanogpt PATH/TO/nanoGPT] [--rounds 2] [--peak_flops 7.9e11] [-- FLAGS]

Each setting is a Lightning precision, optionally ``+compile`` (``--model.compile true``), or ``auto`` (what
``lit-gpt fit`` chooses on this machine, lit_gpt/train/hardware.py); each runs in a fresh process, so compilation
caches and peak memory do not leak from one to the next. Everything after ``--`` is passed to the CLI of every
setting (e.g. ``-- --data.path ../shared/data/tinyshakespeare/input.txt``). Validation and checkpointing are off;
the first ``--warmup`` optimizer steps (compilation included) are not timed.

``--peer nanogpt DIR`` also runs nanoGPT's ``train.py`` (a checkout of karpathy/nanoGPT: it is never copied into this
repository) on a temporary copy, with the config's shape (layers, heads, width, block, batch), float32 on CPU, no
compile, no dropout (its README's CPU recipe), on the same characters: the corpus at ``data.path`` is written to
its ``data/shakespeare_char/input.txt`` and tokenized by its ``prepare.py``. Its per-iteration times after the
same warm-up are summed the same way. ``--rounds N`` repeats every contender N times, interleaved (A B A B ...), and
reports each one's median, since a shared machine drifts by +-10%.

Prints the machine (CPU class from lit_gpt.train.hardware.cpu_class, threads), then one markdown row per contender:
ms per optimizer step, tokens/s, the ratio to the peer, model FLOP utilisation (MFU: training FLOPs from
``lit_gpt.flops.flops_per_token`` per second over ``--peak_flops``, or Lightning's GPU table) and peak memory (CUDA:
the allocator's peak; CPU: the process's peak resident set).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_gpt.flops import flops_per_token
from lit_gpt.train.hardware import cpu_class
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


def setting_flags(setting: str) -> list[str]:
    """CLI flags for a setting: ``auto`` (none: the machine chooses), ``PRECISION`` or ``PRECISION+compile``."""
    if setting == "auto":
        return []
    precision, _, compile_flag = setting.partition("+")
    if compile_flag not in ("", "compile"):
        raise SystemExit(f"error: setting {setting!r}: write auto, PRECISION or PRECISION+compile")
    return ["--trainer.precision", precision, "--model.compile", str(bool(compile_flag)).lower()]


def measure(config: str, setting: str, steps: int, warmup: int, extra: list[str]) -> dict:
    """Train ``warmup + steps`` optimizer steps with one setting in this process; return its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        flags = [
            "--config",
            config,
            *setting_flags(setting),
            "--trainer.max_steps",
            str(warmup + steps),
            "--trainer.limit_val_batches",
            "0",
            "--trainer.logger.init_args.save_dir",
            tmp,
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--checkpoint.dirpath",
            tmp,
            "--trainer.default_root_dir",
            tmp,
            *extra,
        ]
        cli = build_cli(flags, run=False)
        cli.trainer.callbacks = [c for c in cli.trainer.callbacks if not isinstance(c, ModelCheckpoint)]
        timer = StepTimer(warmup)
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    config_ = cli.model.config
    cuda = torch.cuda.is_available()
    if cuda:
        peak_memory = torch.cuda.max_memory_allocated()
    else:
        peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "name": setting
        if setting != "auto"
        else f"auto ({cli.trainer.precision}{', compile' if cli.model.hparams.compile else ''})",
        "device": torch.cuda.get_device_name() if cuda else f"CPU {cpu_class()}, {torch.get_num_threads()} threads",
        "parameters": cli.model.model.num_params(),
        "shape": {
            "n_layer": config_.n_layer,
            "n_head": config_.n_head,
            "n_embd": config_.n_embd,
            "block_size": config_.block_size,
            "batch_size": cli.datamodule.settings.batch_size,
            "data": cli.datamodule.settings.path,
        },
        "tokens_per_step": timer.tokens / timer.steps,
        "steps": timer.steps,
        "seconds": timer.seconds,
        "flops_per_token": flops_per_token(config_, config_.block_size, training=True),
        "peak_memory": peak_memory,
        "available_flops": _available_flops(str(cli.trainer.precision)),
    }


def _available_flops(precision: str) -> float | None:
    """Lightning's peak FLOP/s for this GPU at the precision's compute dtype; None on CPU or an unknown device."""
    if not torch.cuda.is_available():
        return None
    from lightning.fabric.utilities.throughput import get_available_flops

    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision.split("-")[0], torch.float32)
    return get_available_flops(torch.device("cuda"), dtype)


def nanogpt_flags(shape: dict, max_iters: int) -> list[str]:
    """nanoGPT's README CPU recipe (``train.py config/train_shakespeare_char.py --device=cpu --compile=False ...``)
    with our config's shape; evaluation only at iteration 0, on one batch; a line per iteration."""
    return [
        "config/train_shakespeare_char.py",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=1",
        f"--eval_interval={max_iters + 1}",
        "--log_interval=1",
        f"--block_size={shape['block_size']}",
        f"--batch_size={shape['batch_size']}",
        f"--n_layer={shape['n_layer']}",
        f"--n_head={shape['n_head']}",
        f"--n_embd={shape['n_embd']}",
        f"--max_iters={max_iters}",
        f"--lr_decay_iters={max_iters}",
        "--dropout=0.0",
        "--always_save_checkpoint=False",
    ]


def prepare_nanogpt(source: str, corpus: str, into: str) -> Path:
    """A working copy of the nanoGPT checkout ``source`` in ``into``, with ``corpus`` tokenized by its prepare.py."""
    work = Path(into) / "nanoGPT"
    shutil.copytree(source, work, ignore=shutil.ignore_patterns(".git", "out*"))
    data = work / "data" / "shakespeare_char"
    shutil.copyfile(corpus, data / "input.txt")  # its prepare.py downloads only when input.txt is missing
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)
    return work


def measure_nanogpt(work: Path, shape: dict, steps: int, warmup: int) -> dict:
    """Run nanoGPT's train.py for ``warmup + steps`` iterations; sum its per-iteration times after ``warmup``."""
    done = subprocess.run(
        [sys.executable, "train.py", *nanogpt_flags(shape, warmup + steps)], cwd=work, capture_output=True, text=True
    )
    lines = re.finditer(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", done.stdout, re.M)
    times = {int(m[1]): float(m[2]) for m in lines}
    timed = [ms for it, ms in times.items() if it > warmup]
    if done.returncode != 0 or not timed:
        raise RuntimeError(f"nanoGPT failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    tokens_per_step = shape["block_size"] * shape["batch_size"]
    return {
        "name": "nanoGPT (float32, eager)",
        "steps": len(timed),
        "seconds": sum(timed) / 1000,
        "tokens_per_step": tokens_per_step,
        "peak_memory": None,
        "available_flops": None,
    }


def row(result: dict, peak_flops: float | None, flops_per_token_: float, peer: dict | None) -> str:
    steps_per_s = result["steps"] / result["seconds"]
    tokens_per_s = steps_per_s * result["tokens_per_step"]
    peak = peak_flops or result["available_flops"]
    mfu = f"{100 * tokens_per_s * flops_per_token_ / peak:.1f}%" if peak else "-"
    ratio = ""
    if peer is not None:
        ratio = f" {tokens_per_s / (peer['steps'] * peer['tokens_per_step'] / peer['seconds']):.2f}x |"
    memory = f"{result['peak_memory'] / 2**20:,.0f} MiB" if result["peak_memory"] else "-"
    return f"| {result['name']} | {1000 / steps_per_s:.2f} | {tokens_per_s:,.0f} |{ratio} {mfu} | {memory} |"


def run_setting(args, setting: str, extra: list[str]) -> dict | None:
    command = [
        sys.executable,
        __file__,
        "--config",
        args.config,
        "--settings",
        setting,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--one",
        "--",
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        print(f"{setting}: failed (exit {done.returncode})\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT ") :])


def median_result(results: list[dict]) -> dict:
    """The result whose tokens/s is the median of ``results`` (one contender's rounds)."""
    ordered = sorted(results, key=lambda r: r["steps"] * r["tokens_per_step"] / r["seconds"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["auto"],
        help="auto, PRECISION or PRECISION+compile, each measured in its own process",
    )
    parser.add_argument("--steps", type=int, default=300, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=50, help="untimed optimizer steps first")
    parser.add_argument("--peer", nargs=2, metavar=("NAME", "DIR"), help="nanogpt DIR: also run nanoGPT's train.py")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions; each contender's median")
    parser.add_argument(
        "--peak_flops",
        type=float,
        default=None,
        help="peak FLOP/s of the device for MFU (default: Lightning's table on a GPU, none on CPU)",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: measure one setting
    args = parser.parse_args(argv)
    if args.peer and args.peer[0] != "nanogpt":
        parser.error("--peer takes nanogpt DIR")

    if args.one:
        print("RESULT " + json.dumps(measure(args.config, args.settings[0], args.steps, args.warmup, extra)))
        return
    rounds: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = None
        for _ in range(args.rounds):
            for setting in args.settings:
                result = run_setting(args, setting, extra)
                if result is not None:
                    rounds.setdefault(setting, []).append(result)
            if args.peer and rounds:
                shape = next(iter(rounds.values()))[0]["shape"]
                work = work or prepare_nanogpt(args.peer[1], shape["data"], tmp)
                rounds.setdefault("peer", []).append(measure_nanogpt(work, shape, args.steps, args.warmup))
    if not rounds:
        sys.exit(1)
    results = {name: median_result(found) for name, found in rounds.items()}
    peer = results.pop("peer", None)
    first = next(iter(results.values()))
    shape = first["shape"]
    print(f"config: {args.config} {' '.join(extra)}")
    print(f"machine: {first['device']}; torch {torch.__version__}")
    print(
        f"model: {first['parameters']:,} parameters, {shape['n_layer']} layers, {shape['n_head']} heads, n_embd "
        f"{shape['n_embd']}, block {shape['block_size']}, batch {shape['batch_size']} "
        f"({first['tokens_per_step']:,.0f} tokens per optimizer step)"
    )
    print(
        f"timed: {args.steps} optimizer steps after {args.warmup} warm-up steps, median of {args.rounds} "
        f"interleaved round(s); {first['flops_per_token'] / 1e6:,.2f} MFLOP per token (training)"
    )
    ratio = " vs nanoGPT |" if peer else ""
    print(f"\n| setting | ms/step | tokens/s |{ratio} MFU | peak memory |")
    print(f"|---|---:|---:|{'---:|' if peer else ''}---:|---:|")
    for result in [*results.values(), *([peer] if peer else [])]:
        print(row(result, args.peak_flops, first["flops_per_token"], peer))


if __name__ == "__main__":
    main()
