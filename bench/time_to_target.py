"""Time to nanoGPT's quality: whole-process wall time until lit_gpt reaches the val/loss of nanoGPT's whole run.

    python bench/time_to_target.py --nanogpt PATH/TO/nanoGPT [--config configs/shakespeare-char.yaml]
        [--steps 400 500 600 800] [--recipe NAME=FLAGS]... [--cold] [--plot FILE.png] [--out FILE.json]
        [--reference_steps N] [-- FLAGS]

1. nanoGPT's README CPU recipe (``train.py config/train_shakespeare_char.py --device=cpu --compile=False
   --eval_iters=20 --log_interval=1`` with the config's shape, steps and no dropout) runs once on a temporary copy of
   the checkout, on the characters of the config's ``data.path``; its wall time is the reference. Its checkpoint
   after the last iteration is scored with our exact evaluation: the validation windows that ``lit-gpt fit``
   validates on (``lit_gpt.data.windows.ValidationWindows`` over the same split, every target once), so both sides
   are measured the same way. That loss is the target.
2. For each recipe (default: the config as it is, ``default``), ``lit-gpt fit --trainer.max_steps S`` runs in a fresh
   process for every ``S`` of ``--steps`` (the whole schedule compressed to S steps, validated once at the end),
   with the Inductor cache warm from an earlier run. The first S whose final val/loss is at or below the target is
   the recipe's time to target; ``--cold`` repeats that S with an empty Inductor cache (``TORCHINDUCTOR_CACHE_DIR``
   and ``TMPDIR`` in a fresh folder), as a new user's first run.
3. ``--plot`` writes a PNG of val/loss against wall-clock seconds: each lit_gpt run as a point per recipe, nanoGPT's
   own estimates during its run (timed as its log lines arrive) and its exactly scored final point.

The CPU class is printed (``lit_gpt.train.hardware.cpu_class``); for the AVX2 class run the script under
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` with its own
``TORCHINDUCTOR_CACHE_DIR``: both sides inherit the environment. ``FLAGS`` (after ``--``) go to every lit_gpt run
(``--data.*`` ones to the validation windows too); the steps come from ``--steps``, not from ``FLAGS``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import whole_run  # noqa: E402
from train_throughput import prepare_nanogpt  # noqa: E402
from whole_run import config_value  # noqa: E402


def nanogpt_shape(config: dict, extra: list[str], steps: int | None = None) -> dict:
    """The config's model shape, batch size, steps (or ``steps``) and evaluation interval, as nanoGPT's flags name
    them."""
    keys = ("model.config.n_layer", "model.config.n_head", "model.config.n_embd", "model.config.block_size")
    shape = {key.split(".")[-1]: config_value(config, extra, key) for key in keys}
    shape["batch_size"] = config_value(config, extra, "data.batch_size")
    shape["steps"] = steps or config_value(config, extra, "trainer.max_steps", 2000)
    shape["eval_interval"] = config_value(config, extra, "trainer.val_check_interval", 250)
    if shape["steps"] % shape["eval_interval"]:  # its last evaluation (and checkpoint) must follow the last step
        shape["eval_interval"] = shape["steps"]
    return shape


def run_nanogpt(work: Path, shape: dict) -> dict:
    """nanoGPT's whole run; returns its wall seconds, its own val estimates as (seconds, step, loss) and its out dir.
    ``always_save_checkpoint`` keeps the checkpoint of the last evaluation (after ``steps`` iterations)."""
    flags = [
        "config/train_shakespeare_char.py",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=20",
        "--log_interval=1",
        f"--eval_interval={shape['eval_interval']}",
        *(f"--{key}={shape[key]}" for key in ("block_size", "batch_size", "n_layer", "n_head", "n_embd")),
        f"--max_iters={shape['steps']}",
        f"--lr_decay_iters={shape['steps']}",
        "--dropout=0.0",
        "--always_save_checkpoint=True",
        "--out_dir=out-target",
    ]
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-u", "train.py", *flags], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    curve = []
    for line in process.stdout:
        found = re.match(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", line)
        if found:
            curve.append((time.perf_counter() - start, int(found[1]), float(found[2])))
    stderr = process.stderr.read()
    if process.wait() != 0 or not curve:
        raise RuntimeError(f"nanoGPT failed (exit {process.returncode}):\n{stderr[-2000:]}")
    return {"seconds": time.perf_counter() - start, "curve": curve, "out": work / "out-target"}


def validation_windows(config: dict, extra: list[str], tmp: str) -> tuple[list[tuple[torch.Tensor, ...]], str]:
    """The (x, y) validation batches that ``lit-gpt fit`` scores for this config (its data section, with the
    ``--data.*`` flags of ``extra``), and its tokenizer's characters."""
    from lit_gpt.train.datamodule import TextDataModule

    data = dict(config["data"])
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag.startswith("--data."):
            data[flag.removeprefix("--data.")] = yaml.safe_load(value)
    data["block_size"] = config_value(config, extra, "model.config.block_size")
    module = TextDataModule(**{**data, "cache_dir": f"{tmp}/cache"})
    module.prepare_data()
    module.setup("validate")
    return [tuple(batch) for batch in module.val_dataloader()], module.tokenizer_spec["chars"]


@torch.inference_mode()
def score_nanogpt(work: Path, out: Path, batches: list, chars: str) -> float:
    """Mean cross-entropy (nats per target) of nanoGPT's checkpoint ``out/ckpt.pt`` on our validation ``batches``,
    whose ids (our character vocabulary ``chars``) are mapped to nanoGPT's (its ``meta.pkl``)."""
    import pickle

    sys.path.insert(0, str(work))
    from model import GPT, GPTConfig  # nanoGPT's model.py

    checkpoint = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state)
    model.eval()
    stoi = pickle.loads((work / "data" / "shakespeare_char" / "meta.pkl").read_bytes())["stoi"]
    to_theirs = torch.tensor([stoi.get(c, -1) for c in chars] + [-1])  # our end-of-text id last: not in theirs
    total, count = 0.0, 0
    for x, y in batches:
        x_theirs = to_theirs[x]
        if (x_theirs < 0).any():
            raise ValueError("the validation split has a character (or end-of-text) that nanoGPT's vocabulary lacks")
        valid = y >= 0
        y_theirs = torch.where(valid, to_theirs[y.clamp(min=0)], -1)
        logits, _ = model(x_theirs, y_theirs)  # with targets nanoGPT returns logits at every position
        nll = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), y_theirs.flatten(), ignore_index=-1, reduction="sum"
        )
        total, count = total + nll.item(), count + int(valid.sum())
    return total / count


def run_ours(config_path: str, flags: list[str], steps: int, cold: bool) -> dict:
    """One ``lit-gpt fit`` process of ``steps`` steps, validated at the end (``whole_run.run_ours``); its wall
    seconds and final val/loss."""
    schedule = ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps)]
    run = whole_run.run_ours(config_path, [*schedule, *flags], cold)
    return {"steps": steps, "seconds": run["seconds"], "val_loss": run["val_loss"], "cold": cold, "choice": run["note"]}


def plot(path: str, nanogpt: dict, target: float, recipes: dict[str, list[dict]]) -> None:
    """val/loss against wall-clock seconds: nanoGPT's curve and exact final point, and each recipe's runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    seconds, _, losses = zip(*nanogpt["curve"])
    axes.plot(seconds, losses, "o-", color="gray", label="nanoGPT (its 20-batch estimates)")
    axes.plot([nanogpt["seconds"]], [target], "s", color="black", label="nanoGPT, final, exact")
    axes.axhline(target, color="black", linewidth=0.5, linestyle=":")
    for name, runs in recipes.items():
        warm = sorted((r for r in runs if not r["cold"]), key=lambda r: r["seconds"])
        axes.plot([r["seconds"] for r in warm], [r["val_loss"] for r in warm], "o-", label=f"lit_gpt {name} (warm)")
        cold = [r for r in runs if r["cold"]]
        if cold:
            axes.plot([r["seconds"] for r in cold], [r["val_loss"] for r in cold], "x", label=f"lit_gpt {name} (cold)")
    axes.set_xlabel("wall-clock seconds, whole process")
    axes.set_ylabel("val/loss (whole split)")
    axes.set_ylim(min(1.5, target - 0.2), 3.0)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options before ``--``, and the flags after it (given to every lit_gpt run and to the data section)."""
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nanogpt", required=True, help="a karpathy/nanoGPT checkout (copied to a temporary folder)")
    parser.add_argument("--config", default="configs/shakespeare-char.yaml")
    parser.add_argument("--steps", nargs="+", type=int, default=[400, 500, 600, 700, 800, 1000])
    parser.add_argument(
        "--recipe",
        action="append",
        metavar="NAME=FLAGS",
        help="a named recipe and its lit-gpt fit flags, e.g. --recipe 'muon=--model.optimizer muon' (repeatable; "
        "default: the config as it is, named default)",
    )
    parser.add_argument("--cold", action="store_true", help="also time the target run with an empty Inductor cache")
    parser.add_argument("--reference_steps", type=int, help="nanoGPT's iterations (default: the config's steps)")
    parser.add_argument("--plot", help="a PNG of val/loss against wall-clock seconds")
    parser.add_argument("--out", default="runs/time_to_target.json")
    return parser.parse_args(argv), extra


def recipe_runs(args, flags: list[str], target: float) -> list[dict]:
    """The warm runs over ``args.steps`` until one reaches ``target``, then the cold run of that length."""
    runs = []
    for steps in sorted(args.steps):
        runs.append(run_ours(args.config, flags, steps, cold=False))
        print(f"  {steps} steps: {runs[-1]['seconds']:.1f} s, val/loss {runs[-1]['val_loss']:.4f}", flush=True)
        if runs[-1]["val_loss"] <= target:
            if args.cold:
                runs.append(run_ours(args.config, flags, steps, cold=True))
                print(f"  {steps} steps, cold: {runs[-1]['seconds']:.1f} s", flush=True)
            break
    return runs


def main(argv: list[str] | None = None) -> None:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    config = yaml.safe_load(Path(args.config).read_text())
    shape = nanogpt_shape(config, extra, args.reference_steps)
    recipes = {name: shlex.split(flags) for name, _, flags in (r.partition("=") for r in args.recipe or ["default="])}
    with tempfile.TemporaryDirectory() as tmp:
        work = prepare_nanogpt(args.nanogpt, config_value(config, extra, "data.path"), tmp)
        nanogpt = run_nanogpt(work, shape)
        batches, chars = validation_windows(config, extra, tmp)
        target = score_nanogpt(work, nanogpt["out"], batches, chars)
    print(f"nanoGPT: {nanogpt['seconds']:.1f} s for {shape['steps']} iterations; val/loss {target:.4f} (exact)")
    results = {}
    for name, flags in recipes.items():
        print(f"{name}: {' '.join(flags)}", flush=True)
        results[name] = recipe_runs(args, [*flags, *extra], target)
    from lit_gpt.train.hardware import cpu_class

    summary = {"cpu": cpu_class(), "threads": torch.get_num_threads(), "command": sys.argv, "target": target}
    summary |= {"nanogpt_seconds": nanogpt["seconds"], "nanogpt_curve": nanogpt["curve"], "recipes": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"\nCPU {summary['cpu']}, {summary['threads']} threads; target val/loss {target:.4f} (nanoGPT, exact)\n")
    print("| recipe | steps to target | warm s | cold s | val/loss | vs nanoGPT's whole run (warm / cold) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        hit = [r for r in runs if r["val_loss"] <= target]
        if not hit:
            print(f"| {name} | not reached by {max(args.steps)} | | | {runs[-1]['val_loss']:.4f} | |")
            continue
        warm = hit[0]
        cold = next((r for r in hit if r["cold"]), None)
        cold_s = f"{cold['seconds']:.1f}" if cold else ""
        ratio = f"{nanogpt['seconds'] / warm['seconds']:.2f}x" + (
            f" / {nanogpt['seconds'] / cold['seconds']:.2f}x" if cold else ""
        )
        print(f"| {name} | {warm['steps']} | {warm['seconds']:.1f} | {cold_s} | {warm['val_loss']:.4f} | {ratio} |")
    if args.plot:
        plot(args.plot, nanogpt, target, results)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
