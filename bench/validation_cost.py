"""What one exact validation (the whole validation split, every target once) costs, eager against compiled, by batch
size: why ``LitGPT`` validates with the plain model and sizes ``data.val_batch_size`` by memory.

    python bench/validation_cost.py --config configs/shakespeare-char.yaml --batch_sizes 12 48 96 \
        [--rounds 3] [-- FLAGS]

The model is the config's, at its initial weights, in eval mode under ``torch.inference_mode`` (as Lightning
validates); ``compile`` is ``torch.compile(model.forward, dynamic=False)`` as ``LitGPT`` compiles training. For the
compiled forward it also reports the first pass, which includes its compilations (eval mode, and each new batch
shape: the last, partial batch is one). Times are medians over ``--rounds`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lit_gpt.data.windows import IGNORE_INDEX, ValidationWindows
from lit_gpt.train.hardware import cpu_class
from lit_gpt.train.lightning_cli import build_cli


def one_pass(forward, windows: ValidationWindows, batch_size: int) -> tuple[float, float]:
    """(seconds, mean loss) of one pass over ``windows``."""
    total, count = 0.0, 0
    start = time.perf_counter()
    with torch.inference_mode():
        for x, y in DataLoader(windows, batch_size=batch_size):
            total += F.cross_entropy(
                forward(x).flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            count += int((y != IGNORE_INDEX).sum())
    return time.perf_counter() - start, total / count


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[12, 48, 96])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cli = build_cli(["--config", args.config, "--trainer.logger", "false", *extra], run=False)
    data, model = cli.datamodule, cli.model.model.eval()
    data.setup("validate")
    windows = ValidationWindows(data.val_tokens[0], data.settings.block_size)
    compiled = torch.compile(model.forward, dynamic=False)
    contenders = {(name, bs): fn for bs in args.batch_sizes for name, fn in (("eager", model), ("compiled", compiled))}
    first = {key: one_pass(fn, windows, key[1])[0] for key, fn in contenders.items()}  # compiles the compiled ones
    times = {key: [] for key in contenders}
    for _ in range(args.rounds):
        for key, fn in contenders.items():
            times[key].append(one_pass(fn, windows, key[1])[0])
    tokens = len(data.val_tokens[0]) - 1
    print(
        f"config: {args.config} {' '.join(extra)}; CPU {cpu_class()}, {torch.get_num_threads()} threads"
        if not torch.cuda.is_available()
        else f"config: {args.config}; {torch.cuda.get_device_name()}"
    )
    print(f"validation split: {tokens:,} targets in {len(windows):,} windows of {data.settings.block_size}\n")
    print("| forward | val batch | seconds per validation | first validation (compiles) |\n|---|---:|---:|---:|")
    for (name, bs), found in times.items():
        print(f"| {name} | {bs} | {statistics.median(found):.2f} | {first[(name, bs)]:.2f} |")


if __name__ == "__main__":
    main()
