"""The ``lit-gpt`` command.

``lit-gpt fit|validate|test`` is LightningCLI over ``LitGPT`` and ``TextDataModule``, configured by YAML
(``--config configs/...yaml``) and flags. ``lit-gpt generate`` samples from a checkpoint (see
``lit_gpt.generate``), ``lit-gpt export`` writes a Hugging Face or safetensors folder (see ``lit_gpt.export``),
``lit-gpt train-tokenizer`` trains a byte-level BPE on a corpus (see ``lit_gpt.bpe``), ``lit-gpt lr-find`` runs a
learning-rate range test (see ``lit_gpt.lr_find``) and ``lit-gpt presets`` lists the model presets with their
parameter counts.

Facts live in one place and the parser copies them: ``model.config.block_size`` into ``data.block_size`` when
parsing, and the data module's ``vocab_size`` and tokenizer spec into the model when instantiating.
"""

from __future__ import annotations

import importlib
import sys
import warnings

from jsonargparse import ArgumentError

from lit_gpt.config import PRESETS, Config, ConfigError

USAGE = """\
usage: lit-gpt {fit,validate,test} --config CONFIG.yaml [--section.key VALUE ...]
       lit-gpt prepare --config CONFIG.yaml [--data.key VALUE ...]
       lit-gpt lr-find --config CONFIG.yaml [--section.key VALUE ...] [--lr_find.num_training N --lr_find.plot PNG ...]
       lit-gpt generate --checkpoint PATH --prompt TEXT [--max_new_tokens N --temperature T --top_k K --top_p P ...]
       lit-gpt export --checkpoint PATH --out DIR [--format hf|lit_gpt]
       lit-gpt presets [--vocab_size N]
       lit-gpt train-tokenizer --data.path PATH --vocab_size N --out DIR [--val_path PATH] [--val_fraction F]

Train (fit), evaluate (validate/test) and sample from LLaMA- or GPT-2-style language models.
`lit-gpt fit --help` lists every training option; `lit-gpt generate --help` the sampling ones."""


def lightning_cli(args: list[str] | None = None, run: bool = True):
    """Build (and with ``run=True`` execute) the LightningCLI for ``args`` (None: ``sys.argv[1:]``).

    With ``run=False`` there is no subcommand: the returned CLI holds ``model``, ``datamodule`` and ``trainer``
    built from the arguments, as the benchmark scripts use it.
    """
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from lit_gpt.callbacks import HParams, TextSamples, ThroughputMonitor
    from lit_gpt.data import TextDataModule
    from lit_gpt.lit_module import LitGPT
    from lit_gpt.stability import LossGuard

    class LitGPTCLI(LightningCLI):
        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            return {name: keys for name, keys in LightningCLI.subcommands().items() if name != "predict"}

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults(
                {
                    "checkpoint.dirpath": "runs/checkpoints",
                    "checkpoint.monitor": "val/loss",
                    "checkpoint.mode": "min",
                    "checkpoint.save_last": True,
                    "checkpoint.filename": "step{step:06d}-val_loss{val/loss:.4f}",
                    "checkpoint.auto_insert_metric_name": False,
                }
            )
            parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
            parser.set_defaults({"lr_monitor.logging_interval": "step"})
            # tokens/s, FLOP/s and MFU (--throughput.peak_flops where Lightning knows no peak, e.g. on CPU),
            # a text sample at every validation, and the run in TensorBoard's HParams tab
            parser.add_lightning_class_args(ThroughputMonitor, "throughput")
            parser.add_lightning_class_args(TextSamples, "samples")
            parser.add_lightning_class_args(HParams, "hparams")
            parser.add_lightning_class_args(LossGuard, "stability")  # non-finite / spiking steps: stop or skip
            parser.link_arguments("model.config.block_size", "data.block_size")
            parser.link_arguments("data.vocab_size", "model.config.vocab_size", apply_on="instantiate")
            parser.link_arguments("data.tokenizer_spec", "model.tokenizer", apply_on="instantiate")

    # The training loader yields infinitely many batches, so validation runs every `val_check_interval`
    # batches rather than per epoch, and the data module shards batches across ranks itself.
    trainer_defaults = {
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": "runs", "name": "lit-gpt", "default_hp_metric": False},
        },
        "max_steps": 2000,
        "val_check_interval": 250,
        "check_val_every_n_epoch": None,
        "log_every_n_steps": 10,
        "use_distributed_sampler": False,
    }
    # Batches are one numpy gather each; worker processes cost more than they save at these sizes.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # main() hands LightningCLI the arguments after the subcommand it dispatched on, by design
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        return LitGPTCLI(
            LitGPT,
            TextDataModule,
            trainer_defaults=trainer_defaults,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
            auto_configure_optimizers=False,  # LitGPT.configure_optimizers owns AdamW and the schedule
            parser_kwargs={"description": USAGE, "exit_on_error": False},  # main() prints parse errors as one line
        )
    except MisconfigurationException as err:  # Lightning's setting errors, e.g. a strategy whose package is missing
        raise ConfigError(" ".join(str(err).split())) from err


def prepare(args: list[str]) -> None:
    """``lit-gpt prepare``: tokenize a config's corpus ahead of training (prepare once, train many times).

    Takes the same ``--config`` and ``--data.*`` flags as ``fit``; prints where the shards went and their counts.
    """
    if any(a in ("-h", "--help") for a in args):
        print(prepare.__doc__.strip() + "\n\nThe flags are those of `lit-gpt fit` (see `lit-gpt fit --help`).")
        return
    cli = lightning_cli(args, run=False)  # instantiating the data module prepares the corpus (vocab_size link)
    data = cli.datamodule
    meta = data.meta
    print(f"prepared {data.path} with tokenizer {data.tokenizer_name!r} (vocab {meta['vocab_size']}) "
          f"in {data.cache_dir}")  # fmt: skip
    for split in ("train", "val"):
        print(f"  {split}: {meta['tokens'][split]:,} tokens, {meta['documents'][split]:,} documents, "
              f"{len(meta['shards'][split])} shard(s)")  # fmt: skip
    corpus = meta["corpus"] if "files" in meta["corpus"] else meta["corpus"]["train"]
    print("  cleaning: " + ", ".join(f"{k} {v:,}" for k, v in corpus.items() if isinstance(v, int)))


def presets(args: list[str]) -> None:
    """Print each preset's shape and its exact parameter count for a vocabulary size (default GPT-2's)."""
    import argparse

    parser = argparse.ArgumentParser(prog="lit-gpt presets", description=presets.__doc__)
    parser.add_argument("--vocab_size", type=int, default=50257)
    vocab_size = parser.parse_args(args).vocab_size
    print(f"{'preset':<12}{'n_embd':>8}{'n_head':>8}{'n_layer':>8}{'block':>7}  {'parameters':>13}  style")
    for name in PRESETS:
        config = Config.from_name(name, vocab_size=vocab_size)
        style = "gpt-2" if config.position_embedding == "learned" else "llama"
        print(
            f"{name:<12}{config.n_embd:>8}{config.n_head:>8}{config.n_layer:>8}{config.block_size:>7}"
            f"  {config.num_params():>13,}  {style}"
        )


def destroy_process_group() -> None:
    """Leave torch.distributed's default process group, if this process joined one (a multi-device run).

    Lightning destroys the group at exit only for NCCL. A Gloo group (DDP on CPU) left alive can abort the
    interpreter at exit (SIGABRT, status 134) when Gloo's threads free tensors during finalization
    (pytorch/pytorch#179291), so every ``lit-gpt`` command ends by destroying it while Python is intact.
    """
    if "torch" not in sys.modules:  # nothing distributed happened; keep `lit-gpt --help` light
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# Subcommands whose module has its own ``main(args)``.
MODULE_COMMANDS = {
    "generate": "lit_gpt.generate",
    "export": "lit_gpt.export",
    "lr-find": "lit_gpt.lr_find",
    "train-tokenizer": "lit_gpt.bpe",
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lit-gpt`` console script. Bad input exits with status 2 and one ``error:`` line."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if not args or args[0] in ("-h", "--help"):
            print(USAGE)
        elif args[0] in MODULE_COMMANDS:  # imported on use, so `lit-gpt generate` never loads Lightning's trainer
            importlib.import_module(MODULE_COMMANDS[args[0]]).main(args[1:])
        elif args[0] == "presets":
            presets(args[1:])
        elif args[0] == "prepare":
            prepare(args[1:])
        else:
            from lit_gpt.stability import TrainingStopped

            try:
                lightning_cli(None if argv is None else args)  # None: LightningCLI reads sys.argv
            except TrainingStopped as err:  # a non-finite or spiking step; the message names the saved state
                print(f"error: {err}", file=sys.stderr)
                sys.exit(1)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except ArgumentError as err:  # jsonargparse: an unknown key, a wrong type, a missing value
        command = f"lit-gpt {args[0]} --help" if args[0] in ("fit", "validate", "test", "lr-find") else "lit-gpt --help"
        print(f"error: {' '.join(str(err).split())} (see `{command}`)", file=sys.stderr)
        sys.exit(2)
    finally:
        destroy_process_group()


if __name__ == "__main__":
    main()
