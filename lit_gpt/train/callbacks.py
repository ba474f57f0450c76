"""The project's Lightning callbacks, on by default in ``lit-gpt fit`` (see ``lit_gpt.train.lightning_cli``).

- ``ThroughputMonitor`` (``--throughput.*``): tokens/s, FLOP/s and MFU from Lightning's ``Throughput`` meter, with
  a user-given peak where Lightning's table has none (CPUs), and tokens/s in the progress bar.
- ``TextSamples`` (``--samples.*``): a sample from a fixed prompt at every validation, in TensorBoard's Text tab.
- ``HParams`` (``--hparams.*``): the run's hyperparameters with its metrics in TensorBoard's HParams tab.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_only, rank_zero_warn

from lit_gpt.errors import ConfigError
from lit_gpt.generate import check_sampling, default_kv_cache, generate
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

_METRIC_NAMES = {
    "lengths": "tokens", "device/batches_per_sec": "batches_per_sec", "device/samples_per_sec": "samples_per_sec",
    "device/items_per_sec": "tokens_per_sec", "device/flops_per_sec": "flops_per_sec", "device/mfu": "mfu",
    "batches_per_sec": "total_batches_per_sec", "samples_per_sec": "total_samples_per_sec",
    "items_per_sec": "total_tokens_per_sec", "flops_per_sec": "total_flops_per_sec",
}  # fmt: skip
"""Lightning's ``Throughput`` names (per device under ``device/``, totals without) to ours (tokens, not items;
totals marked ``total_``)."""
_COMPUTE_DTYPES = {
    "bf16-mixed": torch.bfloat16,
    "bf16-true": torch.bfloat16,
    "16-mixed": torch.float16,
    "16-true": torch.float16,
    "64-true": torch.float64,
}


class _Meter:
    """One stage's running totals (per device) and its clock, fed to a ``Throughput`` window."""

    def __init__(self, throughput: Throughput) -> None:
        self.throughput = throughput
        self.seconds = 0.0  # time in this stage's batches (training: excluding validations and what follows them)
        self.batches = self.samples = self.tokens = 0
        self.mark: float | None = None  # perf_counter() at which the running interval started; None: stopped

    def start(self) -> None:
        self.mark = time.perf_counter()

    def add(self, batch: tuple[torch.Tensor, torch.Tensor], flops: int | None, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the time of queued kernels, not of launching them
        now = time.perf_counter()
        self.seconds += now - (self.mark if self.mark is not None else now)
        self.mark = now
        self.batches += 1
        self.samples += batch[0].size(0)
        self.tokens += batch[0].numel()
        self.throughput.update(
            time=self.seconds, batches=self.batches, samples=self.samples, lengths=self.tokens, flops=flops
        )


class ThroughputMonitor(Callback):
    """Tokens/s, FLOP/s and MFU of training and validation, for ``(x, y)`` batches of token ids (B, T).

    FLOPs per batch come from the module's ``flops_per_batch`` (``LitGPT``: ``lit_gpt.flops.flops_per_token``);
    the arithmetic is Lightning's public ``Throughput`` meter, averaged over the last ``window_size`` batches.
    Logged every ``trainer.log_every_n_steps`` optimizer steps once the window is full (at the step of
    ``train/loss``), per device: ``train/throughput/tokens_per_sec``, ``samples_per_sec``, ``batches_per_sec``,
    ``flops_per_sec`` and ``mfu`` (model FLOPs utilisation: flops_per_sec / peak), and the running totals ``time``
    (seconds of training), ``samples``, ``tokens`` and ``batches``; with several devices also ``total_tokens_per_sec``
    and the other totals over all devices. After each validation the same under ``val/throughput/``. Runs on
    global rank zero.

    The training clock stops when a validation starts and restarts at the next training batch, so validation,
    text samples and checkpoints written after it are not training time. (Lightning's own ThroughputMonitor
    restarts it at the last validation batch and has no public way to change that, hence this callback.)

    Args:
        peak_flops: peak FLOP/s of one device in the training precision, e.g. 989e12 for an H100 SXM in bf16
            (dense); None uses Lightning's table (``get_available_flops``: recent NVIDIA GPUs and TPUs, no CPU, so
            without it there is no MFU on CPU).
        window_size: batches in the rolling average (at least 2).
        prog_bar: show ``tokens/s`` (all devices) in the progress bar.
    Raises:
        ConfigError: for ``peak_flops`` <= 0 or ``window_size`` < 2.
    """

    def __init__(self, peak_flops: float | None = None, window_size: int = 20, prog_bar: bool = True) -> None:
        if peak_flops is not None and not peak_flops > 0:
            raise ConfigError(f"throughput.peak_flops must be a positive FLOP/s per device, got {peak_flops}")
        if window_size < 2:
            raise ConfigError(f"throughput.window_size must be at least 2 batches, got {window_size}")
        self.peak_flops, self.window_size, self.prog_bar = peak_flops, window_size, prog_bar
        self._meters: dict[str, _Meter] = {}
        self._logged_step = -1

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        dtype = _COMPUTE_DTYPES.get(str(trainer.precision), torch.float32)
        peak = self.peak_flops or get_available_flops(trainer.strategy.root_device, dtype)
        self._meters = {
            name: _Meter(Throughput(available_flops=peak, world_size=trainer.world_size, window_size=self.window_size))
            for name in ("train", "validate")
        }

    @rank_zero_only
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._meters["train"].start()

    @rank_zero_only
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        meter = self._meters["train"]
        if meter.mark is None:  # the first batch after a validation: the clock restarts here
            meter.start()

    @rank_zero_only
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        meter = self._meters["train"]
        meter.add(batch, getattr(pl_module, "flops_per_batch", None), trainer.strategy.root_device)
        step = trainer.global_step - 1  # the optimizer step this batch belonged to, as train/loss is logged
        if step == self._logged_step or (step + 1) % trainer.log_every_n_steps:
            return
        self._logged_step = step
        metrics = self._log(trainer, "train", meter.throughput.compute(), step)
        tokens_per_sec = metrics.get("total_tokens_per_sec", metrics.get("tokens_per_sec"))
        if self.prog_bar and tokens_per_sec is not None:  # once the window is full
            pl_module.log("tokens/s", round(tokens_per_sec), prog_bar=True, logger=False)

    @rank_zero_only
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == TrainerFn.FITTING:
            self._meters["train"].mark = None  # training time stops at the last training batch
        meter = self._meters["validate"]
        meter.throughput.reset()
        meter.seconds, meter.batches, meter.samples, meter.tokens = 0.0, 0, 0, 0
        meter.start()

    @rank_zero_only
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._meters["validate"].add(
                batch, getattr(pl_module, "flops_per_batch", None), trainer.strategy.root_device
            )

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            metrics = self._meters["validate"].throughput.compute()
            self._log(trainer, "val", metrics, trainer.global_step - 1)

    @staticmethod
    def _log(trainer: Trainer, stage: str, metrics: dict, step: int) -> dict:
        """Log ``Throughput.compute()``'s metrics under ``{stage}/throughput/`` with our names; returns them so
        named, without the prefix."""
        named = {_METRIC_NAMES.get(name, name): value for name, value in metrics.items()}
        prefixed = {f"{stage}/throughput/{name}": value for name, value in named.items()}
        for logger in trainer.loggers:
            logger.log_metrics(prefixed, step=max(step, 0))
        return named


class TextSamples(Callback):
    """After every validation, continue ``prompt`` with the model and write the text to TensorBoard's Text tab
    (tag ``samples``, step = optimizer steps taken), to watch what the model has learned.

    Sampling is ``lit_gpt.generate.generate`` (KV cache) on the module's plain ``model`` (never the compiled one) in
    eval mode, with a generator seeded afresh each time, so successive samples differ by the weights only; the
    global random state is untouched. Past ``block_size`` the KV cache follows ``lit-gpt generate``'s default
    policy (``lit_gpt.generate.default_kv_cache``: rolling for RoPE models), so a sample is what that command would
    write from the checkpoint. The text is the prompt and its continuation up to end-of-text, indented
    four spaces so TensorBoard's Markdown keeps its line breaks. Runs on global rank zero; skipped in the sanity
    check, without a TensorBoardLogger, for a module without a ``GPT`` ``model`` or a ``tokenizer`` spec, under
    sharded strategies (FSDP, DeepSpeed: rank zero holds part of the weights), and with ``max_new_tokens`` 0.

    Args:
        prompt: text to continue, after a Hugging Face tokenizer's BOS where it adds one ("" alone starts from
            end-of-text); a longer one than block_size keeps its end.
        max_new_tokens: tokens per sample; 0 turns samples off.
        temperature, top_k, top_p: as for ``lit-gpt generate``.
        seed: of the sampling generator.
    Raises:
        ConfigError: for bad sampling options or a negative ``max_new_tokens``; at setup, for a prompt the
            tokenizer cannot encode.
    """

    def __init__(
        self,
        prompt: str = "\n",
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 1337,
    ) -> None:
        try:
            check_sampling(temperature, top_k, top_p)
        except ConfigError as err:
            raise ConfigError(f"samples.{err}") from None  # the message starts with the option's name
        if max_new_tokens < 0:
            raise ConfigError(f"samples.max_new_tokens must be >= 0 (0 turns samples off), got {max_new_tokens}")
        self.prompt, self.max_new_tokens, self.seed = prompt, max_new_tokens, seed
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.tokenizer: Tokenizer | None = None
        self._prompt_ids: list[int] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        spec, model = getattr(pl_module, "tokenizer", None), getattr(pl_module, "model", None)
        self.tokenizer = None
        if spec is None or not isinstance(model, GPT) or self.max_new_tokens == 0:
            return
        if type(trainer.strategy) not in (SingleDeviceStrategy, DDPStrategy):
            rank_zero_warn(f"TextSamples: no samples under {type(trainer.strategy).__name__} (sharded weights)")
            return
        tokenizer = Tokenizer.from_spec(spec)
        try:
            ids = tokenizer.document_prefix + tokenizer.encode(self.prompt)  # a Hugging Face tokenizer's BOS first
            ids = ids or [tokenizer.eot_id]
        except ConfigError as err:
            raise ConfigError(f"samples.prompt: {err}") from None
        self.tokenizer, self._prompt_ids = tokenizer, ids[-model.config.block_size :]

    def sample(self, model: GPT) -> str:
        """The prompt and a continuation of it by ``model`` (whose mode is restored afterwards)."""
        assert self.tokenizer is not None, "sample() needs setup() with a tokenizer spec"
        device = model.lm_head.weight.device
        generator = torch.Generator(device).manual_seed(self.seed)
        idx = torch.tensor([self._prompt_ids], device=device)
        was_training = model.training
        model.eval()
        try:
            out = generate(
                model,
                idx,
                self.max_new_tokens,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                vocab_size=self.tokenizer.vocab_size,
                generator=generator,
                eos_id=self.tokenizer.eot_id,
                kv_cache=default_kv_cache(model),
            )
        finally:
            model.train(was_training)
        new = out[0, idx.size(1) :].tolist()
        new = new[: new.index(self.tokenizer.eot_id)] if self.tokenizer.eot_id in new else new
        return self.prompt + self.tokenizer.decode(new)

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writers = [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if trainer.sanity_checking or self.tokenizer is None or not writers:
            return
        text = "\n".join("    " + line for line in self.sample(pl_module.model).split("\n"))
        for writer in writers:
            writer.add_text("samples", text, trainer.global_step)


_TRAINER_HPARAMS = (
    "precision",
    "max_steps",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "devices",
    "num_nodes",
    "strategy",
    "accelerator",
)
_DATA_HPARAMS_LEFT_OUT = (
    "download_url",
    "cache_dir",
    "num_workers",
    "num_threads",
    "verify",
    "max_cache_size",
    "name",
    "weight",
)
"""Data settings that do not change what is learned: where files come from and go, how many threads read them,
whether they are checked, and the top-level corpus's ``name`` and ``weight`` (only a mixture's corpora use them)."""


class HParams(Callback):
    """List the run in TensorBoard's HParams tab: its hyperparameters, and the last value of each of ``metrics``.

    Lightning writes that tab's data only together with metric values, which would add a made-up point to the
    metric's curve (``default_hp_metric`` logs ``hp_metric = -1``); this writes it at the start of training with
    the metric names only, and TensorBoard takes their values from the run's scalars.

    Hyperparameters, flattened to ``/``-joined names, in this column order: the module's ``hparams_initial`` under
    ``model/`` (its ``config`` first, then the optimizer settings; a tokenizer spec by its kind and name only, not
    its vocabulary); under ``lit-gpt fit`` also the ``data`` section (without where files come from or go), the
    trainer's ``precision``, ``max_steps`` etc. and ``seed_everything`` from the parsed configuration (the data
    module's ``class_path`` when it is not the default ``TextDataModule``). Unset (None) values are left out.
    Runs on global rank zero, for every TensorBoardLogger.

    Args:
        metrics: scalar tags shown as metric columns; None: ``val/loss``, ``val/ppl`` and ``train/loss``.
    """

    def __init__(self, metrics: list[str] | None = None) -> None:
        self.metrics = ["val/loss", "val/ppl", "train/loss"] if metrics is None else list(metrics)

    def hyperparameters(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The flattened hyperparameters that the HParams tab shows (bool, int, float or str values), in column
        order: the model's architecture and optimizer first, then the data, the trainer and the seed."""
        model = {k: v for k, v in pl_module.hparams_initial.items() if not k.startswith("_")}  # not LightningCLI's
        if isinstance(model.get("tokenizer"), Mapping):
            model["tokenizer"] = {k: v for k, v in model["tokenizer"].items() if k in ("kind", "name")}
        params = {"model": {"config": model.pop("config", None), **model}}
        config = next((c.config for c in trainer.callbacks if isinstance(c, SaveConfigCallback)), None)
        if config is not None:  # the subcommand's namespace that LightningCLI parsed
            section = config.get("data") or {}
            data = _flatten(section.get("init_args", section))  # the data module's arguments
            if section.get("class_path") not in (None, "lit_gpt.train.datamodule.TextDataModule"):
                data = {"class_path": section["class_path"], **data}
            params["data"] = {k: v for k, v in data.items() if k.split("/")[0] not in _DATA_HPARAMS_LEFT_OUT}
            trainer_config = config.get("trainer") or {}
            params["trainer"] = {k: trainer_config.get(k) for k in _TRAINER_HPARAMS}
            params["seed_everything"] = config.get("seed_everything")
        return _flatten(params)

    @rank_zero_only
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers or not self.metrics:
            return
        from torch.utils.tensorboard.summary import hparams
        from torch.utils.tensorboard.writer import FileWriter

        summaries = hparams(self.hyperparameters(trainer, pl_module), dict.fromkeys(self.metrics, 0.0))
        for logger in loggers:  # an event file of its own beside the logger's; TensorBoard reads both as one run
            writer = FileWriter(logger.log_dir, filename_suffix=".hparams")
            for summary in summaries:  # experiment, session start, session end
                writer.add_summary(summary)
            writer.close()


def _flatten(params: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``, through mappings, dataclasses and jsonargparse namespaces; None left
    out, values other than bool, int, float and str as their ``str``."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    elif hasattr(params, "as_dict"):  # jsonargparse.Namespace
        params = params.as_dict()
    if not isinstance(params, Mapping):
        return (
            {}
            if params is None
            else {prefix[:-1]: params if isinstance(params, (bool, int, float, str)) else str(params)}
        )
    flat: dict[str, Any] = {}
    for key, value in params.items():
        flat.update(_flatten(value, f"{prefix}{key}/"))
    return flat
