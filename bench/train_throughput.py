"""Training throughput of a config through the real path (LightningCLI -> Trainer.fit), steady state.

    python bench/train_throughput.py --config configs/shakespeare-char.yaml [--steps 300 --warmup 50] [-- FLAGS]

Everything after ``--`` is passed to the CLI (e.g. ``-- --trainer.precision bf16-mixed``). Validation and
checkpointing are switched off; the first ``--warmup`` optimizer steps are not timed. Prints optimizer steps/s,
ms/step, tokens/s and the peak resident memory of the process (or peak CUDA memory on a GPU).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time

import torch
from lightning.pytorch import Callback

from lit_gpt.cli import lightning_cli


class StepTimer(Callback):
    """Wall time of optimizer steps ``warmup`` .. end, and the tokens they consumed."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.tokens, self.steps = warmup, None, 0, 0

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


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=300, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=50, help="untimed optimizer steps first")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        cli = lightning_cli(
            [
                "--config", args.config,
                "--trainer.max_steps", str(args.warmup + args.steps),
                "--trainer.limit_val_batches", "0",
                "--trainer.logger.init_args.save_dir", tmp,
                "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false",
                "--checkpoint.dirpath", tmp,
                *extra,
            ],  # fmt: skip
            run=False,
        )
        timer = StepTimer(args.warmup)
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    steps_per_s = timer.steps / timer.seconds
    config = cli.model.config
    print(f"config: {args.config} {' '.join(extra)}")
    print(f"model: {cli.model.model.num_params():,} parameters, block_size {config.block_size}, "
          f"batch {cli.datamodule.batch_size}, precision {cli.trainer.precision}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    print(f"timed: {timer.steps} optimizer steps after {args.warmup} warm-up steps, {timer.seconds:.2f} s")
    tokens_per_s = timer.tokens / timer.seconds
    print(f"throughput: {steps_per_s:.2f} steps/s, {1000 / steps_per_s:.2f} ms/step, {tokens_per_s:,.0f} tokens/s")
    if torch.cuda.is_available():
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB")
    else:
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
