"""A whole training run as a user starts it, timed from process start to exit, optionally beside nanoGPT's.

    python bench/whole_run.py --config configs/shakespeare-char.yaml [--peer nanogpt PATH/TO/nanoGPT] [--cold]
        [--rounds 1] [-- FLAGS]

Runs ``lit-gpt fit --config CONFIG FLAGS`` in a fresh process (checkpoints and TensorBoard logs in a temporary folder;
the progress bar off, as in a log file) and reports the wall time, the final ``val/loss`` (over the whole validation
split) and the choice line. ``--cold`` gives it an empty Inductor cache (``TORCHINDUCTOR_CACHE_DIR`` and ``TMPDIR``),
as on a first run; by default the cache is warm from earlier runs, as on every later run.

``--peer nanogpt DIR`` also runs nanoGPT's README CPU recipe on a temporary copy of a karpathy/nanoGPT checkout
(never copied into this repository): ``train.py config/train_shakespeare_char.py --device=cpu --compile=False
--eval_iters=20 --log_interval=1`` with the config's shape, steps and evaluation interval, and no dropout, on the
characters of the config's ``data.path``. Its val loss is its own estimate (``eval_iters`` batches), not the whole
split. ``--rounds N`` alternates the two N times.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from train_throughput import prepare_nanogpt  # noqa: E402  (the same working copy of nanoGPT)


def config_value(config: dict, extra: list[str], key: str, default=None):
    """``key`` (dotted) from the flags if given there, else from the YAML ``config``."""
    flag = f"--{key}"
    if flag in extra:
        return yaml.safe_load(extra[extra.index(flag) + 1])
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def run_ours(config_path: str, extra: list[str], cold: bool, cache_dir: Path | None = None) -> dict:
    """One ``lit-gpt fit`` process: its wall time, last ``val/loss`` and choice line. ``cold``: an empty Inductor
    cache; ``cache_dir``: the folder for Inductor's cache and ``TMPDIR`` (emptied first when ``cold``), so that a
    later warm run can reuse what a cold one compiled; None: a temporary folder when cold, the user's cache when
    warm."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if cold or cache_dir is not None:  # Inductor keeps its cache, and its precompiled header under TMPDIR
            folder = Path(cache_dir if cache_dir is not None else Path(tmp) / "fresh")
            if cold:
                shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
            env["TORCHINDUCTOR_CACHE_DIR"] = env["TMPDIR"] = str(folder)
        command = [
            sys.executable,
            "-m",
            "lit_gpt.cli",
            "fit",
            "--config",
            config_path,
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            f"{tmp}/runs",
            "--checkpoint.dirpath",
            f"{tmp}/ckpt",
            *extra,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"lit-gpt fit failed:\n{done.stderr[-3000:]}")
        (run,) = Path(tmp, "runs").glob("*/version_0")
        events = EventAccumulator(str(run))
        events.Reload()
        # a run shorter than trainer.val_check_interval never validates
        val = events.Scalars("val/loss")[-1] if "val/loss" in events.Tags()["scalars"] else None
    choice = next((line for line in done.stderr.splitlines() if line.startswith("lit-gpt: ")), "")
    return {
        "name": "lit-gpt fit" + (" (cold Inductor cache)" if cold else ""),
        "seconds": seconds,
        "val_loss": None if val is None else val.value,
        "step": None if val is None else val.step + 1,
        "note": choice,
    }


def run_nanogpt(work: Path, shape: dict) -> dict:
    flags = [
        "config/train_shakespeare_char.py",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=20",
        "--log_interval=1",
        f"--eval_interval={shape['eval_interval']}",
        f"--block_size={shape['block_size']}",
        f"--batch_size={shape['batch_size']}",
        f"--n_layer={shape['n_layer']}",
        f"--n_head={shape['n_head']}",
        f"--n_embd={shape['n_embd']}",
        f"--max_iters={shape['steps']}",
        f"--lr_decay_iters={shape['steps']}",
        "--dropout=0.0",
    ]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "train.py", *flags], cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    evals = re.findall(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", done.stdout, re.M)
    if done.returncode != 0 or not evals:
        raise RuntimeError(f"nanoGPT failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    step, _, val = evals[-1]
    return {
        "name": "nanoGPT train.py (float32, eager)",
        "seconds": seconds,
        "val_loss": float(val),
        "step": int(step),
        "note": "val loss estimated on 20 batches",
    }


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--peer", nargs=2, metavar=("NAME", "DIR"), help="nanogpt DIR: also run nanoGPT's train.py")
    parser.add_argument("--cold", action="store_true", help="an empty Inductor cache for lit-gpt (a first run)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    shape = {
        key.split(".")[-1]: config_value(config, extra, key)
        for key in (
            "model.config.n_layer",
            "model.config.n_head",
            "model.config.n_embd",
            "model.config.block_size",
            "data.batch_size",
        )
    }
    shape["steps"] = config_value(config, extra, "trainer.max_steps", 2000)
    shape["eval_interval"] = config_value(config, extra, "trainer.val_check_interval", 250)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = prepare_nanogpt(args.peer[1], config_value(config, extra, "data.path"), tmp) if args.peer else None
        for _ in range(args.rounds):
            results.append(run_ours(args.config, extra, args.cold))
            if work is not None:
                results.append(run_nanogpt(work, shape))
    import torch

    from lit_gpt.train.hardware import cpu_class

    print(f"config: {args.config} {' '.join(extra)}; CPU {cpu_class()}, {torch.get_num_threads()} threads\n")
    print("| run | wall time (s) | val loss at the last step | note |\n|---|---:|---:|---|")
    for r in results:
        loss = "not validated" if r["val_loss"] is None else f"{r['val_loss']:.4f} (step {r['step']})"
        print(f"| {r['name']} | {r['seconds']:.1f} | {loss} | {r['note']} |")


if __name__ == "__main__":
    main()
