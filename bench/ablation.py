"""An ablation of issue 14's optimizer and architecture switches: final val/loss and ms/step per variant and seed.

    python bench/ablation.py [--config configs/shakespeare-char.yaml] [--variants baseline qk_norm ...]
        [--combo muon qk_norm relu2 [--combo ...]] [--seeds 1337 1338 1339] [--steps N] [--out FILE] [-- FLAGS]

Each run is ``lit-gpt fit --config CONFIG --seed_everything SEED VARIANT-FLAGS FLAGS`` in a fresh process (logs and
checkpoints in a temporary folder, no text samples), at the config's length unless ``--steps`` shortens it (a quick
check; validation then runs at the end only). Variants: ``baseline`` (the config as it is), each switch alone
(``VARIANTS``), and every ``--combo`` (the flags of the named variants together, named ``a+b+c``).

Recorded per run: the last ``val/loss`` (the config validates on the whole validation split), and ms/step: the
training time that ``ThroughputMonitor`` logs (``train/throughput/time``, validation excluded) between the first
logged step after a quarter of the run (compilation and warm-up excluded) and the last, divided by the steps between
them. Results go to ``--out`` (JSON, rewritten after every run, so an interrupted ablation keeps what it finished)
and a markdown table: mean ± sample standard deviation over the seeds, per variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "muon": ["--model.optimizer", "muon"],
    "qk_norm": ["--model.config.qk_norm", "true"],
    "relu2": ["--model.config.mlp", "relu2"],
    "zero_init_proj": ["--model.config.zero_init_proj", "true"],
    "logit_softcap": ["--model.config.logit_softcap", "15.0"],  # modded-nanogpt's cap (Gemma 2 uses 30)
    "value_residual": ["--model.config.value_residual", "true"],
}
"""Variant name -> the ``lit-gpt fit`` flags that switch it on."""


def variant_flags(name: str) -> list[str]:
    """The flags of a variant or of a ``+``-joined combination of variants."""
    return [flag for part in name.split("+") for flag in VARIANTS[part]]


def read_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard tag -> [(step, value), ...] of one run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def ms_per_step(times: list[tuple[int, float]], steps: int) -> float:
    """Milliseconds per step from the cumulative training time (step, seconds), after a quarter of the run."""
    later = [(s, t) for s, t in times if s >= steps // 4] or times[-1:]
    (s0, t0), (s1, t1) = later[0], later[-1]
    if s1 == s0:  # one logged point: its average since the start
        return 1000 * t1 / max(1, s1 + 1)
    return 1000 * (t1 - t0) / (s1 - s0)


def run_one(config: str, variant: str, seed: int, steps: int | None, extra: list[str]) -> dict:
    """One ``lit-gpt fit`` run; returns its record (variant, seed, val_loss, ms_per_step, steps, seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        flags = [
            "--seed_everything",
            str(seed),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            f"{tmp}/runs",
            "--checkpoint.dirpath",
            f"{tmp}/ckpt",
            "--samples.max_new_tokens",
            "0",
        ]
        if steps is not None:
            flags += ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps)]
        command = [
            sys.executable,
            "-m",
            "lit_gpt.cli",
            "fit",
            "--config",
            config,
            *flags,
            *variant_flags(variant),
            *extra,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{variant} (seed {seed}) failed:\n{' '.join(command)}\n{done.stderr[-3000:]}")
        (run,) = Path(tmp, "runs").glob("*/version_0")
        scalars = read_scalars(run)
    last_step, val_loss = scalars["val/loss"][-1]
    return {
        "variant": variant,
        "seed": seed,
        "val_loss": val_loss,
        "steps": last_step + 1,
        "seconds": seconds,
        "ms_per_step": ms_per_step(scalars["train/throughput/time"], last_step + 1),
    }


def spread(values: list[float], digits: int) -> str:
    """``mean ± sample standard deviation`` (just the value for one seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(records: list[dict]) -> str:
    """A markdown table: per variant, in order of first appearance, val/loss and ms/step over the seeds."""
    lines = ["| variant | seeds | val/loss | ms/step |", "|---|---:|---:|---:|"]
    for variant in dict.fromkeys(r["variant"] for r in records):
        runs = [r for r in records if r["variant"] == variant]
        lines.append(
            f"| {variant} | {len(runs)} | {spread([r['val_loss'] for r in runs], 4)} | "
            f"{spread([r['ms_per_step'] for r in runs], 1)} |"
        )
    return "\n".join(lines)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options before ``--``, and the flags after it (passed to every run)."""
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shakespeare-char.yaml")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="single variants to run (none: only the --combo ones)",
    )
    parser.add_argument(
        "--combo",
        nargs="+",
        action="append",
        default=[],
        choices=list(VARIANTS),
        help="variants to combine into one run (repeat for several combinations)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1337, 1338, 1339])
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the config's trainer.max_steps)")
    parser.add_argument("--out", default="runs/ablation.json", help="JSON file of every run's record")
    return parser.parse_args(argv), extra


def main(argv: list[str] | None = None) -> None:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    variants = [*args.variants, *("+".join(combo) for combo in args.combo)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in args.seeds:  # seed-major: a slow drift of the machine spreads over every variant alike
        for variant in variants:
            records.append(run_one(args.config, variant, seed, args.steps, extra))
            r = records[-1]
            print(f"{variant} seed {seed}: val/loss {r['val_loss']:.4f}, {r['ms_per_step']:.1f} ms/step", flush=True)
            meta = {"config": args.config, "steps": args.steps, "extra": extra, "command": sys.argv}
            out.write_text(json.dumps({**meta, "runs": records}, indent=1))
    print(f"\n{args.config}, seeds {' '.join(map(str, args.seeds))}; records in {out}\n")
    print(table(records))


if __name__ == "__main__":
    main()
