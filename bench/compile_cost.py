"""What ``model.compile`` costs and saves on this machine: the figures behind ``lit_gpt.train.compile.COMPILE_COSTS``.

    python bench/compile_cost.py --config configs/shakespeare-char.yaml [--steps 100 1000] [--rounds 2] [-- FLAGS]

Times whole ``lit-gpt fit`` processes (``bench/whole_run.py``'s runner: a fresh process, checkpoints and logs in a
temporary folder) of a short and a long run, each eager, compiled with an empty Inductor cache (cold: a fresh
``TORCHINDUCTOR_CACHE_DIR`` and ``TMPDIR``, as on a first run) and compiled with the cache the cold run left (warm),
alternating the three in each round. From the means:

- saving per step: ``(eager(long) - eager(short) - (warm(long) - warm(short))) / (long - short)``, or ``--saving_ms``
  from ``bench/train_throughput.py`` (steady-state medians of interleaved runs: the difference of whole runs moves by
  several ms per step with the machine's drift);
- compile cost, cold and warm: ``compiled(short) - eager(short) + short x saving per step``;
- ``saving_per_element``: the saving per step over the blocks' activations per step (tokens x n_embd x n_layer),
  and ``graph_seconds``: the cold cost per compiled block graph (``block_kinds``).

Precision is the machine's choice unless FLAGS pin it. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from whole_run import config_value, run_ours  # noqa: E402


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, nargs=2, default=(100, 1000), metavar=("SHORT", "LONG"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--saving_ms",
        type=float,
        help="the saving per step from bench/train_throughput.py's steady state (median ms/step eager minus "
        "compiled) instead of the whole runs' difference, which the machine's drift makes noisy",
    )
    args = parser.parse_args(argv)
    short, long = args.steps
    if not 0 < short < long:
        sys.exit(f"error: --steps SHORT LONG needs 0 < SHORT < LONG, got {short} {long}")

    seconds: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as cache:
        for round_ in range(args.rounds):
            for steps in (short, long):
                flags = [*extra, "--trainer.max_steps", str(steps)]
                for kind in ("eager", "cold", "warm"):
                    compile_flag = ["--model.compile", "false" if kind == "eager" else "true"]
                    # the warm run reads what this round's cold run of the same length compiled
                    folder = Path(cache, f"{round_}-{steps}")
                    run = run_ours(args.config, [*flags, *compile_flag], cold=kind == "cold", cache_dir=folder)
                    seconds.setdefault((kind, steps), []).append(run["seconds"])
                    print(f"round {round_ + 1}, {steps} steps, {kind}: {run['seconds']:.1f} s", flush=True)

    mean = {key: statistics.mean(values) for key, values in seconds.items()}
    saving = (mean["eager", long] - mean["eager", short] - (mean["warm", long] - mean["warm", short])) / (long - short)
    if args.saving_ms is not None:
        print(f"saving per step from the whole runs: {saving * 1000:.2f} ms; from --saving_ms: {args.saving_ms} ms")
        saving = args.saving_ms / 1000
    cold = mean["cold", short] - mean["eager", short] + short * saving
    warm = mean["warm", short] - mean["eager", short] + short * saving

    import torch

    from lit_gpt.config import Config
    from lit_gpt.train.compile import block_kinds
    from lit_gpt.train.hardware import cpu_class

    config = yaml.safe_load(Path(args.config).read_text())
    model = Config(**config_value(config, extra, "model.config", {}))
    tokens = config_value(config, extra, "data.batch_size") * model.block_size
    elements = tokens * model.n_embd * model.n_layer
    kinds = block_kinds(model)
    print(f"\nconfig: {args.config} {' '.join(extra)}; CPU {cpu_class()}, {torch.get_num_threads()} threads")
    print(f"runs of {short} and {long} steps, mean of {args.rounds} rounds (s):")
    for kind in ("eager", "cold", "warm"):
        print(f"  {kind:5s} {mean[kind, short]:7.1f} {mean[kind, long]:7.1f}")
    print(f"saving per step: {saving * 1000:.2f} ms ({saving / elements:.2e} s per element of {elements:,})")
    print(f"compile cost: cold {cold:.1f} s ({cold / kinds:.1f} s per block graph), warm {warm:.1f} s")
    if saving > 0:
        print(f"a cold compile repays itself from about {cold / saving:.0f} steps, a warm one from {warm / saving:.0f}")


if __name__ == "__main__":
    main()
