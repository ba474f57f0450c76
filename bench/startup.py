"""Whole-process wall time of the light commands, as a user starts them: ``lit-gpt --help``, ``lit-gpt prepare`` of a
10 KB text, ``lit-gpt generate`` of 20 tokens from a small checkpoint, ``lit-gpt export`` of it, and
``lit-gpt presets``.

    python bench/startup.py --text ../shared/data/tinyshakespeare/input.txt [--repeats 5]

The checkpoint is a 2-step ``configs/tiny.yaml`` run (a real ``.ckpt``, 25k parameters), trained first in a temporary
folder; ``prepare`` writes a fresh cache folder on every repeat, so it always tokenizes. Prints the median and the
range over ``--repeats`` runs, and whether the command loaded Lightning's trainer (``lightning.pytorch``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import sys, runpy; sys.argv = ['lit-gpt', *sys.argv[1:]]\ntry:\n    from lit_gpt.cli import main; main()\n"
    "finally:\n    print('LIGHTNING', 'lightning.pytorch' in sys.modules, file=sys.stderr)"
)


def timed(args: list[str], cwd: Path) -> tuple[float, bool]:
    """Seconds for ``lit-gpt ARGS`` in a fresh interpreter, and whether it imported ``lightning.pytorch``."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"lit-gpt {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds, "LIGHTNING True" in done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--text", default="data/tinyshakespeare/input.txt", help="corpus for the checkpoint and for prepare"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    text = Path(args.text).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "10k.txt").write_bytes(text.read_bytes()[:10240])
        subprocess.run(
            [
                sys.executable,
                "-m",
                "lit_gpt.cli",
                "fit",
                "--config",
                str(REPO / "configs" / "tiny.yaml"),
                "--data.path",
                str(text),
                "--data.cache_dir",
                str(tmp / "cache"),
                "--trainer.max_steps",
                "2",
                "--trainer.limit_val_batches",
                "2",
                "--trainer.val_check_interval",
                "2",
                "--trainer.logger.init_args.save_dir",
                str(tmp / "runs"),
                "--checkpoint.dirpath",
                str(tmp / "ckpt"),
            ],
            check=True,
            capture_output=True,
        )
        checkpoint = str(tmp / "ckpt" / "last.ckpt")
        commands = {
            "lit-gpt --help": lambda i: ["--help"],
            "lit-gpt presets": lambda i: ["presets"],
            "lit-gpt prepare (10 KB, characters)": lambda i: [
                "prepare",
                "--data.path",
                str(tmp / "10k.txt"),
                "--data.tokenizer",
                "char",
                "--data.cache_dir",
                str(tmp / f"prepared{i}"),
            ],
            "lit-gpt generate (20 tokens)": lambda i: [
                "generate",
                "--checkpoint",
                checkpoint,
                "--prompt",
                "ROMEO:",
                "--max_new_tokens",
                "20",
                "--seed",
                "1",
            ],
            "lit-gpt export (hf)": lambda i: ["export", "--checkpoint", checkpoint, "--out", str(tmp / f"hf{i}")],
        }
        print(f"python {sys.version.split()[0]}; medians of {args.repeats} fresh processes\n")
        print("| command | seconds (median) | range | loads lightning.pytorch |\n|---|---:|---:|---|")
        for name, make in commands.items():
            runs = [timed(make(i), tmp) for i in range(args.repeats)]
            seconds = [s for s, _ in runs]
            print(
                f"| `{name}` | {statistics.median(seconds):.2f} | {min(seconds):.2f}-{max(seconds):.2f} "
                f"| {'yes' if any(loaded for _, loaded in runs) else 'no'} |"
            )


if __name__ == "__main__":
    main()
