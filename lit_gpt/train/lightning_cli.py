"""The LightningCLI that ``lit-gpt fit|validate|test`` (and ``lit-gpt lr-find``) runs: ``LitGPT`` and a data module,
configured by YAML (``--config configs/...yaml``) and flags.

The data module is any ``lit_gpt.train.datamodule.TokenDataModule``: ``TextDataModule`` (memory-mapped shards) unless
the config or ``--data.class_path`` names another, e.g. ``lit_gpt.train.streaming.StreamingTextDataModule``. A
``data`` section without ``class_path`` (every shipped config) gives ``TextDataModule``'s arguments.

Facts live in one place and the parser copies them: ``model.config.block_size`` into ``data.block_size`` when
parsing, and the data module's ``vocab_size`` and tokenizer spec into the model when instantiating. The callbacks
are configured sections: ``checkpoint`` (ModelCheckpoint), ``lr_monitor``, ``throughput``, ``samples``,
``hparams`` and ``stability``. Before a run resumes (``--ckpt_path``), the checkpoint is checked
(``lit_gpt.train.resume.check_resumable``, ``check_architecture``), so an unreadable or foreign file, or model
settings other than the checkpoint's, is one ``error:`` line. Before anything is built or any process starts,
``ModelParallelStrategy``'s sizes and Muon's strategy are checked (``check_launch``) and, for ``fit``, the checkpoint
and log folders are probed (``check_run_folders``); checkpoints are written by
``lit_gpt.train.checkpoint_io.AtomicCheckpointIO``, whose failed save stops the run (``CheckpointGuard`` stops every
process of a multi-process run together). Settings left unset (``trainer.precision``, ``model.compile`` (or
``auto``), ``trainer.deterministic``) are chosen from the machine (``lit_gpt.train.hardware``), and for compile from
the run's length too, before anything is built, said in one log line, and saved in the run's config.yaml.
A CPU run pads glibc's heap so that steps reuse resident pages, and one that trades speed for memory (gradient
checkpointing or a chunked loss) pins the mmap threshold low so that freed activations leave the resident set
(``lit_gpt.train.host_memory``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only, rank_zero_warn

from lit_gpt.config import Config
from lit_gpt.data.settings import Batching
from lit_gpt.errors import ConfigError
from lit_gpt.train.callbacks import HParams, TextSamples, ThroughputMonitor
from lit_gpt.train.checkpoint_io import CheckpointGuard, check_writable, use_atomic_checkpoint_io
from lit_gpt.train.compile import TrainingRun
from lit_gpt.train.datamodule import TokenDataModule
from lit_gpt.train.hardware import check_strategy, choose, device_type, strategy_name
from lit_gpt.train.host_memory import configure_heap
from lit_gpt.train.module import TRAINING_FIELDS, LitGPT
from lit_gpt.train.parallel import check_parallel_sizes
from lit_gpt.train.resume import NotResumable, check_architecture, check_resumable, newest_last_checkpoint
from lit_gpt.train.stability import LossGuard

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lit_gpt.train.logger.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "lit-gpt", "default_hp_metric": False},
    },
    "max_steps": 2000,
    "val_check_interval": 250,
    "check_val_every_n_epoch": None,
    "log_every_n_steps": 10,
    "use_distributed_sampler": False,
}
"""The training loader yields infinitely many batches, so validation runs every ``val_check_interval`` batches
rather than per epoch, and the data module shards batches across ranks itself (no DistributedSampler)."""

CHECKPOINT_DEFAULTS = {
    "checkpoint.dirpath": "runs/checkpoints",
    "checkpoint.monitor": "val/loss",
    "checkpoint.mode": "min",
    "checkpoint.save_last": True,
    "checkpoint.filename": "step{step:06d}-val_loss{val/loss:.4f}",
    "checkpoint.auto_insert_metric_name": False,
}

_QUIET = (
    ".*does not have many workers.*",  # batches are one numpy gather each; workers cost more than they save here
    "LightningCLI's args parameter is intended",  # lit-gpt hands LightningCLI the arguments after its command
)


DEFAULT_DATA = "lit_gpt.train.datamodule.TextDataModule"


class LitGPTCLI(LightningCLI):
    """``LightningCLI`` over ``LitGPT`` and a ``TokenDataModule`` (default ``TextDataModule``) with lit_gpt's
    callbacks, links and resume check."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name != "predict"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        # tokens/s, FLOP/s and MFU (--throughput.peak_flops where Lightning knows no peak, e.g. on CPU),
        # a text sample at every validation, and the run in TensorBoard's HParams tab
        parser.add_lightning_class_args(ThroughputMonitor, "throughput")
        parser.add_lightning_class_args(TextSamples, "samples")
        parser.add_lightning_class_args(HParams, "hparams")
        parser.add_lightning_class_args(LossGuard, "stability")  # non-finite / spiking steps: stop or skip
        parser.set_defaults({"data": {"class_path": DEFAULT_DATA}})
        parser.link_arguments("model.config.block_size", "data.init_args.block_size")
        parser.link_arguments("data.vocab_size", "model.config.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.tokenizer_spec", "model.tokenizer", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Choose the unset machine-dependent settings (``lit_gpt.train.hardware.choose``) and write them into the
        configuration that the Trainer, the model and config.yaml are built from."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer, model = config.trainer, config.model
        check_strategy(trainer.accelerator, trainer.strategy)
        check_launch(trainer, model)
        if self.subcommand == "fit" and rank_zero_only.rank == 0:  # the only rank that writes them
            check_run_folders(config)
        data = config.data.get("init_args", config.data) if config.get("data") is not None else {}
        run = _training_run(model, data, trainer) if self.subcommand == "fit" else None
        choice = choose(
            trainer.accelerator, trainer.precision, model.compile, trainer.deterministic, trainer.strategy, run
        )
        trainer.precision, model.compile, trainer.deterministic = choice.precision, choice.compile, choice.deterministic
        if choice.reasons:
            rank_zero_info("lit-gpt: " + "; ".join(choice.reasons))
        if device_type(trainer.accelerator) == "cpu":
            configure_heap(saves_memory(model))  # lit_gpt.train.host_memory
        if (trainer.num_nodes or 1) > 1 and "build" in data:
            data.build = False  # each machine's lock sees only its own processes: prepare ahead
        for warning in choice.warnings:
            rank_zero_warn(warning)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse as LightningCLI does, then check ``--ckpt_path`` before anything reads it (LightningCLI itself
        loads an explicit path next, for its hyperparameters)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            config = self.config[subcommand]
            resumed = _check_ckpt_path(config.get("ckpt_path"), config.get("checkpoint"))
            if resumed is not None:  # vocab_size is linked from the data later; loading the weights checks it
                check_architecture(resumed, config.model.config.as_dict(), ignore=TRAINING_FIELDS)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        """LightningCLI's Trainer, whose strategy writes checkpoints with
        ``lit_gpt.train.checkpoint_io.AtomicCheckpointIO`` unless a ``CheckpointIO`` plugin is configured.

        With deterministic kernels (``trainer.deterministic``, chosen on CPU), new tensors are not filled with NaN
        first (``torch.utils.deterministic.fill_uninitialized_memory``, on by default with them): that fill is a
        debugging aid for kernels that read memory they never wrote, adds a write pass over every allocation (its cost:
        docs/benchmarks.md), and leaves the results of every kernel that writes its whole output, which the bitwise
        resume tests check, unchanged."""
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoint_io(trainer.strategy)
        if torch.are_deterministic_algorithms_enabled():
            torch.utils.deterministic.fill_uninitialized_memory = False
        return trainer


def check_launch(trainer, model) -> None:
    """Raise ConfigError, before any process starts, for a ``ModelParallelStrategy`` whose sizes do not fit the
    devices or the model (``lit_gpt.train.parallel.check_parallel_sizes``), or for Muon under a sharded strategy.
    ``trainer`` and ``model``: the parsed sections."""
    name = strategy_name(trainer.strategy).replace("_", "")
    if model.optimizer == "muon" and name.startswith(("modelparallel", "fsdp", "deepspeed")):
        raise ConfigError(
            f"model.optimizer muon needs whole weight matrices on every device (Newton-Schulz orthogonalises each "
            f"matrix), but trainer.strategy {_shown(trainer.strategy)} shards them; train on one device or "
            "with trainer.strategy ddp, or use model.optimizer adamw"
        )
    if not name.startswith("modelparallel"):
        return
    init_args = {} if isinstance(trainer.strategy, str) else trainer.strategy.get("init_args") or {}
    sizes = [init_args.get(key, "auto") for key in ("data_parallel_size", "tensor_parallel_size")]
    data_parallel, tensor_parallel = (None if size == "auto" else int(size) for size in sizes)
    config = Config(**model.config.as_dict())
    check_parallel_sizes(config, data_parallel, tensor_parallel, devices_per_node(trainer.devices), trainer.num_nodes)


def _shown(strategy: object) -> str:
    """A ``trainer.strategy`` value as the user wrote it: its name, or its class's name."""
    return strategy if isinstance(strategy, str) else str(strategy.get("class_path", strategy)).rsplit(".", 1)[-1]


def devices_per_node(devices: object) -> int | None:
    """The number of processes per node that Lightning starts for ``trainer.devices``: an int, a list of device
    ids, or a string of either; None for ``auto`` or -1 (every device of the machine, known once it is set up)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return None
    if "," in text:
        return len([part for part in text.split(",") if part.strip()])
    return int(text)


def check_run_folders(config) -> None:
    """Raise ConfigError unless the checkpoint folder and every logger's folder of a ``fit`` configuration (the
    parsed sections) can be written (``lit_gpt.train.checkpoint_io.check_writable``), before anything is built."""
    dirpath = (config.get("checkpoint") or {}).get("dirpath")
    if dirpath:
        check_writable(dirpath, "the checkpoint folder (checkpoint.dirpath)")
    loggers = config.trainer.logger
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        save_dir = (getattr(logger, "get", lambda key: None)("init_args") or {}).get("save_dir")
        if isinstance(save_dir, (str, Path)):
            check_writable(save_dir, "the log folder (trainer.logger's save_dir)")


def saves_memory(model) -> bool:
    """Whether the parsed ``model`` section trades speed for memory: gradient checkpointing or a chunked loss."""
    return bool(model.config.get("gradient_checkpointing") or model.get("loss_chunk_size"))


def _training_run(model, data, trainer) -> TrainingRun:
    """The run that ``model.compile: auto`` weighs (``lit_gpt.train.compile.choose_compile``), from the parsed
    ``model``, ``data`` and ``trainer`` sections: the forward and backward passes of ``trainer.max_steps`` optimizer
    steps (None when it is -1: no step limit) of ``data.batch_size`` windows of ``model.config.block_size`` tokens."""
    steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps >= 0 else None
    batches = None if steps is None else steps * (trainer.accumulate_grad_batches or 1)
    tokens = (data.get("batch_size") or Batching.batch_size) * model.config.block_size
    return TrainingRun(model.config, tokens, batches)


def _check_ckpt_path(ckpt_path: str | None, checkpoint: dict | None) -> Path | None:
    """Raise ConfigError unless ``--ckpt_path`` (a path, or ``last``) names a checkpoint lit_gpt can resume from
    (``lit_gpt.train.resume``), saying which flag to pass instead; ``last`` is resolved as Lightning does (none:
    Lightning warns and starts afresh, so "last" may be set before the first run). Returns the checkpoint to resume
    from, or None when there is none (or Lightning resolves it: ``best``, ``hpc``, ``registry``)."""
    if ckpt_path in (None, "best", "hpc", "registry"):
        return None
    if ckpt_path == "last":
        ckpt_path = newest_last_checkpoint((checkpoint or {}).get("dirpath"))
        if ckpt_path is None:
            return None
    elif not Path(ckpt_path).exists():
        raise ConfigError(f"--ckpt_path {ckpt_path} does not exist; pass a .ckpt written by `lit-gpt fit` or last")
    try:
        check_resumable(ckpt_path)
    except NotResumable as err:
        if err.weights_only:
            hint = f"to start a new run from its weights use --model.init_weights {ckpt_path}"
            raise ConfigError(f"{err}; {hint}") from None
        if err.fallback is not None:
            raise ConfigError(f"{err}: resume with --ckpt_path {err.fallback}") from None
        raise
    return Path(ckpt_path)


def build_cli(args: list[str], run: bool = True, description: str = "") -> LitGPTCLI:
    """Build (and with ``run=True`` execute) the LightningCLI for ``args``, which start with the subcommand when
    ``run`` is True (``["fit", "--config", ...]``) and have none when it is False.

    With ``run=False`` the returned CLI holds ``model``, ``datamodule`` and ``trainer`` built from the arguments,
    as ``lit-gpt lr-find`` and the benchmark scripts use it.

    Raises:
        ConfigError: for Lightning's setting errors (e.g. a strategy whose package is missing) and for
            ``--ckpt_path`` problems; jsonargparse's ``ArgumentError`` for an unknown key, a wrong type or a
            missing value (``exit_on_error=False``: the caller prints it as one line).
    """
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        try:
            return LitGPTCLI(
                LitGPT,
                TokenDataModule,
                subclass_mode_data=True,
                trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [CheckpointGuard()]},
                save_config_kwargs={"overwrite": True},
                args=args,
                run=run,
                auto_configure_optimizers=False,  # LitGPT.configure_optimizers owns AdamW and the schedule
                parser_kwargs={"description": description, "exit_on_error": False},
            )
        except MisconfigurationException as err:
            raise ConfigError(" ".join(str(err).split())) from err
