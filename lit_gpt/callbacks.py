"""The project's Lightning callbacks, on by default in ``lit-gpt fit`` (see ``lit_gpt.cli``).

- ``ThroughputMonitor`` (``--throughput.*``): Lightning's, for token batches: tokens/s, FLOP/s and MFU (with a
  user-given peak where Lightning's table has none, e.g. CPUs), and tokens/s in the progress bar.
- ``TextSamples`` (``--samples.*``): a sample from a fixed prompt at every validation, in TensorBoard's Text tab.
- ``HParams`` (``--hparams.*``): the run's hyperparameters with its metrics in TensorBoard's HParams tab.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import throughput_monitor
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_only, rank_zero_warn

from lit_gpt.config import ConfigError
from lit_gpt.generate import check_sampling, generate
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer


def _rows(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    return batch[0].size(0)


def _tokens(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    return batch[0].numel()


class ThroughputMonitor(throughput_monitor.ThroughputMonitor):
    """Lightning's ThroughputMonitor for ``(x, y)`` batches of token ids (B, T): samples are rows, items are tokens,
    and FLOPs per batch come from the module's ``flops_per_batch`` (``LitGPT``: ``lit_gpt.model.flops_per_token``).

    Logs Lightning's metrics every ``trainer.log_every_n_steps`` steps once ``window_size`` batches are in, averaged
    over the last ``window_size`` batches: ``train/device/items_per_sec`` (tokens/s), ``train/device/samples_per_sec``,
    ``train/device/batches_per_sec``, ``train/device/flops_per_sec``, ``train/device/mfu`` (model FLOPs utilisation,
    flops_per_sec / peak), ``train/time`` (seconds of training), ``train/samples``, ``train/lengths`` (tokens seen);
    the same under ``validate/``; with several devices also the totals (without ``device/``).

    Two changes to Lightning's: ``peak_flops`` overrides its table of peak FLOP/s (``get_available_flops``, which
    knows recent NVIDIA GPUs and TPUs but no CPU, so without it there is no MFU on CPU); and training time stops
    at the last training batch before a validation until the next one starts, so text samples and checkpoints
    written after validation do not count as training time (Lightning restarts the clock at the last validation
    batch).

    Args:
        peak_flops: peak FLOP/s of one device in the training precision, e.g. 989e12 for an H100 SXM in bf16
            (dense); None uses Lightning's table.
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
        super().__init__(batch_size_fn=_rows, length_fn=_tokens, window_size=window_size)
        self.peak_flops, self.prog_bar = peak_flops, prog_bar
        self._paused_at: float | None = None  # perf_counter() time at which training time stopped

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.peak_flops is not None:
            self.available_flops = self.peak_flops
            for throughput in self._throughputs.values():
                throughput.available_flops = self.peak_flops

    @rank_zero_only
    def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
        if self._paused_at is not None:  # resume the training clock where it stopped
            self._t0s[RunningStage.TRAINING] += time.perf_counter() - self._paused_at
            self._paused_at = None

    @rank_zero_only
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.prog_bar:
            metrics = self._throughputs[RunningStage.TRAINING].compute()
            tokens_per_sec = metrics.get("items_per_sec", metrics.get("device/items_per_sec"))
            if tokens_per_sec is not None:  # once the window is full
                pl_module.log("tokens/s", round(tokens_per_sec), prog_bar=True, logger=False)

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Replaces Lightning's, which restarts the training clock at the last validation batch: stop it at the
        # last training batch instead, until on_train_batch_start.
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        times = self._throughputs[RunningStage.TRAINING]._time  # training seconds at each batch end
        self._paused_at = self._t0s[RunningStage.TRAINING] + (times[-1] if times else 0.0)


class TextSamples(Callback):
    """After every validation, continue ``prompt`` with the model and write the text to TensorBoard's Text tab
    (tag ``samples``, step = optimizer steps taken), to watch what the model has learned.

    Sampling is ``lit_gpt.generate.generate`` (KV cache) on the module's plain ``model`` (never the compiled one) in
    eval mode, with a generator seeded afresh each time, so successive samples differ by the weights only; the
    global random state is untouched. The text is the prompt and its continuation up to end-of-text, indented
    four spaces so TensorBoard's Markdown keeps its line breaks. Runs on global rank zero; skipped in the sanity
    check, without a TensorBoardLogger, for a module without a ``GPT`` ``model`` or a ``tokenizer`` spec, under
    sharded strategies (FSDP, DeepSpeed: rank zero holds part of the weights), and with ``max_new_tokens`` 0.

    Args:
        prompt: text to continue ("" starts from end-of-text); a longer one than block_size keeps its end.
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
            raise ConfigError(str(err).replace("--", "samples.", 1)) from None  # generate's flags, here samples.*
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
            ids = tokenizer.encode(self.prompt) if self.prompt else [tokenizer.eot_id]
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
                model, idx, self.max_new_tokens, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                vocab_size=self.tokenizer.vocab_size, generator=generator, eos_id=self.tokenizer.eot_id,
            )  # fmt: skip
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


_TRAINER_HPARAMS = ("accelerator", "strategy", "devices", "num_nodes", "precision", "max_steps",
                    "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm")  # fmt: skip


class HParams(Callback):
    """List the run in TensorBoard's HParams tab: its hyperparameters, and the last value of each of ``metrics``.

    Lightning writes that tab's data only together with metric values, which would add a made-up point to the
    metric's curve (``default_hp_metric`` logs ``hp_metric = -1``); this writes it at the start of training with
    the metric names only, and TensorBoard takes their values from the run's scalars.

    Hyperparameters, flattened to ``/``-joined names: the module's ``hparams_initial`` under ``model/`` (a
    tokenizer spec by its kind and name only, not its vocabulary); under ``lit-gpt fit`` also the ``data``
    section, the trainer's ``precision``, ``max_steps``, ``devices`` etc. and ``seed_everything`` from the parsed
    configuration. Unset (None) values are left out. Runs on global rank zero, for every TensorBoardLogger.

    Args:
        metrics: scalar tags shown as metric columns; None: ``val/loss``, ``val/ppl`` and ``train/loss``.
    """

    def __init__(self, metrics: list[str] | None = None) -> None:
        self.metrics = ["val/loss", "val/ppl", "train/loss"] if metrics is None else list(metrics)

    def hyperparameters(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The flattened hyperparameters that the HParams tab shows (bool, int, float or str values)."""
        model = {k: v for k, v in pl_module.hparams_initial.items() if not k.startswith("_")}  # not LightningCLI's
        if isinstance(model.get("tokenizer"), Mapping):
            model["tokenizer"] = {k: v for k, v in model["tokenizer"].items() if k in ("kind", "name")}
        params = {"model": model}
        config = next((c.config for c in trainer.callbacks if isinstance(c, SaveConfigCallback)), None)
        if config is not None:  # the subcommand's namespace that LightningCLI parsed
            trainer_config = config.get("trainer") or {}
            params["trainer"] = {k: trainer_config.get(k) for k in _TRAINER_HPARAMS}
            params["data"], params["seed_everything"] = config.get("data"), config.get("seed_everything")
        return _flatten(params)

    @rank_zero_only
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers or not self.metrics:
            return
        from torch.utils.tensorboard.summary import hparams

        summaries = hparams(self.hyperparameters(trainer, pl_module), dict.fromkeys(self.metrics, 0.0))
        for logger in loggers:
            writer = logger.experiment._get_file_writer()  # as Lightning's TensorBoardLogger.log_hyperparams does
            for summary in summaries:  # experiment, session start, session end
                writer.add_summary(summary)
            writer.flush()


def _flatten(params: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``, through mappings, dataclasses and jsonargparse namespaces; None left
    out, values other than bool, int, float and str as their ``str``."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    elif hasattr(params, "as_dict"):  # jsonargparse.Namespace
        params = params.as_dict()
    if not isinstance(params, Mapping):
        return {} if params is None else {prefix[:-1]: params if isinstance(params, (bool, int, float, str)) else
                                          str(params)}  # fmt: skip
    flat: dict[str, Any] = {}
    for key, value in params.items():
        flat.update(_flatten(value, f"{prefix}{key}/"))
    return flat
