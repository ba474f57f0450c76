"""LoRA against full fine-tuning of the same base on the same data: trainable parameters, training-state and peak
memory, step time, checkpoint size and the final val/loss, side by side.

    python bench/lora_vs_full.py --config configs/lora-shakespeare.yaml [--steps N] [--warmup 20] \
        [--full_learning_rate 3e-4] [-- FLAGS]

The config must be a LoRA fine-tuning config (``model.init_weights`` and ``model.lora``); its base must exist (for
configs/lora-shakespeare.yaml: ``lit-gpt fit --config configs/tinystories.yaml`` first). Two runs, each in a fresh
process through the real path (LightningCLI -> Trainer.fit): ``lora`` as configured, and ``full`` with
``--model.lora null`` and ``--model.learning_rate`` / ``--model.min_lr`` set to ``--full_learning_rate`` and a tenth
of it (full fine-tuning wants a smaller rate than adapters). Everything after ``--`` goes to both (before those).
Each run trains ``--steps`` optimizer steps (default: the config's ``trainer.max_steps``) with the config's
validations, and reports:

- trainable parameters (``requires_grad``) against the model's;
- training state: the bytes of the weights, the gradients and AdamW's two moments (the memory that LoRA saves,
  counted from the tensors), and the peak memory of the process (CUDA: the allocator's peak; CPU: the peak resident
  set, which includes Python, torch and the data);
- ms per optimizer step, timed after ``--warmup`` steps (compilation included in those);
- the size of ``last.ckpt`` (LoRA: adapters and optimizer state only);
- ``val/loss`` of the final weights (one validation after the last step, on the config's validation data).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from lightning.pytorch import Callback
from train_throughput import StepTimer  # bench/train_throughput.py

from lit_gpt.train.lightning_cli import build_cli


class TrainingState(Callback):
    """Bytes of the weights, gradients and optimizer state, after the first optimizer step (all exist then)."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.bytes:
            return
        params = list(pl_module.parameters())
        optimizer = trainer.optimizers[0]
        states = [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
        self.bytes = {
            "weights": sum(p.numel() * p.element_size() for p in params),
            "gradients": sum(p.numel() * p.element_size() for p in params if p.requires_grad),  # allocated by step 1
            "optimizer": sum(t.numel() * t.element_size() for t in states),
        }


def measure(config: str, variant: str, steps: int | None, warmup: int, full_lr: float, extra: list[str]) -> dict:
    """Fine-tune one variant in this process; return its figures."""
    flags = (
        []
        if variant == "lora"
        else ["--model.lora", "null", "--model.learning_rate", str(full_lr), "--model.min_lr", str(full_lr / 10)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "--config",
            config,
            "--trainer.logger.init_args.save_dir",
            tmp,
            "--checkpoint.dirpath",
            tmp,
            "--trainer.enable_progress_bar",
            "false",
            *(["--trainer.max_steps", str(steps)] if steps else []),
            *extra,
            *flags,
        ]  # the variant's flags last, so that they win
        cli = build_cli(args, run=False)
        if variant == "lora" and cli.model.lora is None:
            raise SystemExit(f"error: {config} has no model.lora: pass a LoRA fine-tuning config")
        timer, state = StepTimer(warmup), TrainingState()
        cli.trainer.callbacks.extend([timer, state])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        (validation,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
        checkpoint_bytes = (Path(tmp) / "last.ckpt").stat().st_size
    cuda = torch.cuda.is_available()
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = cli.model.model
    return {
        "variant": variant,
        "steps": timer.steps,
        "seconds": timer.seconds,
        "peak_memory": peak,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for n, p in model.named_parameters() if ".lora_" not in n),  # the base's
        "training_state": state.bytes,
        "checkpoint_bytes": checkpoint_bytes,
        "val_loss": validation["val/loss"],
        "precision": str(cli.trainer.precision),
        "compile": bool(cli.model.hparams.compile),
        "device": torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads",
    }


def run_variant(args, variant: str, extra: list[str]) -> dict | None:
    command = [
        sys.executable,
        __file__,
        "--config",
        args.config,
        "--warmup",
        str(args.warmup),
        "--full_learning_rate",
        str(args.full_learning_rate),
        "--one",
        variant,
        *(["--steps", str(args.steps)] if args.steps else []),
        "--",
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        print(f"{variant}: failed (exit {done.returncode})\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT ") :])


def row(r: dict) -> str:
    mib = 2**20
    state = r["training_state"]
    total = sum(state.values())
    return (
        f"| {r['variant']} | {r['trainable']:,} ({100 * r['trainable'] / r['parameters']:.2f}%) | "
        f"{state['weights'] / mib:,.1f} + {state['gradients'] / mib:,.1f} + {state['optimizer'] / mib:,.1f} = "
        f"{total / mib:,.1f} MiB | {r['peak_memory'] / mib:,.0f} MiB | {1000 * r['seconds'] / r['steps']:.1f} | "
        f"{r['checkpoint_bytes'] / mib:,.2f} MiB | {r['val_loss']:.4f} |"
    )


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a LoRA fine-tuning config (model.init_weights + model.lora)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the config's max_steps)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed optimizer steps first")
    parser.add_argument("--full_learning_rate", type=float, default=3e-4, help="peak learning rate of the full run")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one variant
    args = parser.parse_args(argv)
    if args.one:
        result = measure(args.config, args.one, args.steps, args.warmup, args.full_learning_rate, extra)
        print("RESULT " + json.dumps(result))
        return
    results = [r for variant in ("lora", "full") if (r := run_variant(args, variant, extra)) is not None]
    if not results:
        sys.exit(1)
    first = results[0]
    print(f"config: {args.config} {' '.join(extra)}")
    print(
        f"machine: {first['device']}; torch {torch.__version__}; precision {first['precision']}, compile "
        f"{first['compile']}; {first['steps']} timed steps after {args.warmup} warm-up steps"
    )
    print(
        "\n| run | trainable parameters | weights + gradients + AdamW state | peak memory | ms/step | last.ckpt | "
        "val/loss |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(row(result))


if __name__ == "__main__":
    main()
