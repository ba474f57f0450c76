"""Training stability: stop or skip an optimizer step whose loss or gradient is not finite, or whose loss spikes.

``LossGuard`` judges every optimizer step after backward and before the weights change (Lightning's
``on_before_optimizer_step``), so a bad batch never reaches the weights or the optimizer state:

- ``stop`` saves the state before the step to ``<checkpoint.dirpath>/stopped-step<N>.ckpt`` and raises
  ``TrainingStopped`` (``lit-gpt fit`` prints it as one ``error:`` line and exits with status 1). Resuming from that
  file retries step N from that state: the same weights, optimizer moments, schedule and batch (dropout, if any,
  draws new masks).
- ``skip`` drops the step: the gradients are discarded, so AdamW leaves the weights and its moments untouched,
  while the step still counts (``global_step``, the learning-rate schedule and the data position move on).
  Skips are warned about and logged as ``train/skipped_steps``; more than ``max_consecutive_skips`` in a row stop
  training.
- ``warn`` (spikes only) reports the step and applies it.

A spike is a loss above ``spike_factor`` times the mean loss of the last ``spike_window`` accepted steps (about
Lightning's ``SpikeDetection`` criterion with ``rtol = spike_factor - 1``); checks start once the window is full.

Lightning's own parts were weighed: ``SpikeDetection`` runs in ``on_train_batch_end``, after the optimizer step has
applied the bad batch, can only raise, and (lightning 2.6.6) cannot restore its own state on resume
(``load_state_dict`` reads a missing ``self.running``). ``OnExceptionCheckpoint`` saves on any exception, even one
raised halfway through an optimizer update, and its presence makes every ``fit`` without ``--ckpt_path`` resume from
the newest ``last*.ckpt`` in the checkpoint folder (``_parse_ckpt_path``): re-running a config would continue it.
``ModelCheckpoint(save_on_exception=True)`` would overwrite ``last.ckpt`` with whatever state an exception left.
``Trainer(detect_anomaly=True)`` names the operation that produced a NaN in backward: a debugging aid, several
times slower, not a guard.
"""

from __future__ import annotations

import math
import os
from collections import deque
from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lit_gpt.errors import ConfigError, RunFailed


class TrainingStopped(RunFailed):
    """Raised by ``LossGuard`` to stop training; the message is one line naming the step, the loss and the file.

    ``lit-gpt fit`` prints it as one ``error:`` line and exits with status 1 (``lit_gpt.errors.RunFailed``)."""


class LossGuard(Callback):
    """Stops or skips optimizer steps whose loss or gradient norm is not finite, or whose loss spikes.

    The loss judged is the step's training loss: the mean over its ``accumulate_grad_batches`` micro-batches,
    averaged over devices (so every rank takes the same decision). Gradients are checked through their global L2
    norm, except under a ``16-mixed`` GradScaler, which skips steps with infinite gradients itself. Cost: one
    foreach norm over the gradients and one host synchronisation per optimizer step.

    Args:
        on_nonfinite: ``stop`` or ``skip`` a step whose loss or gradient norm is NaN or infinite.
        spike: ``off``, ``warn``, ``skip`` or ``stop`` on a loss spike.
        spike_factor: a step's loss is a spike when above ``spike_factor`` times the running mean (> 1).
        spike_window: number of recent accepted steps whose mean loss is the reference.
        max_consecutive_skips: more skipped steps in a row than this stop training (the run is not learning).

    Raises:
        ConfigError: for a value out of range.
        TrainingStopped: from ``fit``, when a step is stopped.
    """

    def __init__(
        self,
        on_nonfinite: Literal["stop", "skip"] = "stop",
        spike: Literal["off", "warn", "skip", "stop"] = "warn",
        spike_factor: float = 2.0,
        spike_window: int = 50,
        max_consecutive_skips: int = 10,
    ) -> None:
        if on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"stability.on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        if spike not in ("off", "warn", "skip", "stop"):
            raise ConfigError(f"stability.spike must be 'off', 'warn', 'skip' or 'stop', got {spike!r}")
        if not spike_factor > 1:
            raise ConfigError(f"stability.spike_factor must be > 1, got {spike_factor}")
        if spike_window < 1 or max_consecutive_skips < 1:
            raise ConfigError(
                "stability.spike_window and stability.max_consecutive_skips must be >= 1, got "
                f"{spike_window} and {max_consecutive_skips}"
            )
        self.on_nonfinite, self.spike, self.spike_factor = on_nonfinite, spike, spike_factor
        self.max_consecutive_skips = max_consecutive_skips
        self.recent: deque[float] = deque(maxlen=spike_window)  # losses of the last accepted steps
        self.skipped = 0  # optimizer steps skipped in this run, resumed runs included
        self.consecutive_skips = 0
        self._loss: torch.Tensor | None = None  # sum of this step's micro-batch losses (each already / accumulate)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._loss = None

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        loss = loss.detach()
        self._loss = loss if self._loss is None else self._loss + loss

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        loss, self._loss = self._loss, None
        if loss is None:  # no backward through Lightning this step
            return
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        checks = [loss.float().reshape(())]
        if scaler is None:
            if hasattr(pl_module, "gradient_norm"):  # LitGPT computes it once per step, for clipping too
                norm = pl_module.gradient_norm(optimizer)
            else:
                grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
                norm = torch.nn.utils.get_total_norm(grads)
            checks.append(norm.float().to(loss.device))
        checks = trainer.strategy.reduce(torch.stack(checks), reduce_op="mean")  # NaN and inf survive the mean
        loss_value, *grad_norm = checks.tolist()  # the one host synchronisation
        if scaler is not None:
            loss_value /= scaler.get_scale()  # the hook saw the scaled loss

        action, reason, setting = None, "", ""
        if not math.isfinite(loss_value) or not all(map(math.isfinite, grad_norm)):
            action, setting = self.on_nonfinite, "stability.on_nonfinite"
            reason = (
                f"the loss is {loss_value}"
                if not math.isfinite(loss_value)
                else f"the gradient norm is {grad_norm[0]} (loss {loss_value:.4f})"
            )
        elif self.spike != "off" and len(self.recent) == self.recent.maxlen:
            mean = sum(self.recent) / len(self.recent)
            if loss_value > self.spike_factor * mean:
                action, setting = self.spike, "stability.spike"
                reason = (
                    f"the loss {loss_value:.4f} is {loss_value / mean:.2f}x the mean {mean:.4f} of the last "
                    f"{len(self.recent)} steps (stability.spike_factor {self.spike_factor})"
                )

        if action == "skip" and self.consecutive_skips == self.max_consecutive_skips:
            action, setting = "stop", "stability.max_consecutive_skips"
            reason = (
                f"{self.consecutive_skips + 1} steps in a row would be skipped (stability.max_consecutive_skips "
                f"{self.max_consecutive_skips}), this one because {reason}"
            )

        step = trainer.global_step
        if action == "skip":
            self.skipped += 1
            self.consecutive_skips += 1
            for group in optimizer.param_groups:  # AdamW leaves parameters without a gradient untouched
                for p in group["params"]:
                    p.grad = None
            rank_zero_warn(f"step {step}: {reason}; skipped this step ({self.skipped} skipped so far)")
            for logger in trainer.loggers:
                logger.log_metrics({"train/skipped_steps": self.skipped}, step=step)
            return
        if action == "stop":
            self._stop(trainer, reason, setting)
        if action == "warn":
            rank_zero_warn(f"step {step}: {reason}; applied it (stability.spike: warn)")
        self.consecutive_skips = 0
        self.recent.append(loss_value)

    def _stop(self, trainer: Trainer, reason: str, setting: str) -> None:
        """Save the state before this step (on every rank: the decision is the same on all) and raise."""
        checkpointer = trainer.checkpoint_callback
        folder = getattr(checkpointer, "dirpath", None) or trainer.default_root_dir
        path = os.path.join(folder, f"stopped-step{trainer.global_step:06d}.ckpt")
        _uncount_current_batch(trainer)
        trainer.save_checkpoint(path)
        raise TrainingStopped(
            f"training stopped at step {trainer.global_step}: {reason}; the state before this step is saved in "
            f"{path}: resume from it with --ckpt_path {path} after fixing the cause (e.g. a lower "
            f"model.learning_rate) or changing {setting}"
        )

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "skipped": self.skipped, "consecutive_skips": self.consecutive_skips}

    def load_state_dict(self, state_dict: dict) -> None:
        self.recent.clear()
        self.recent.extend(state_dict["recent"])
        self.skipped, self.consecutive_skips = state_dict["skipped"], state_dict["consecutive_skips"]


def _uncount_current_batch(trainer: Trainer) -> None:
    """Make a checkpoint saved before this batch's optimizer step resume with the right logging step.

    Lightning's checkpoints come from the end of a batch, so a restart counts the batch it was in as stepped
    (``TrainingEpochLoop.reset``); the guard's checkpoint is from before the step, so the count is taken back, or
    the resumed run would log its steps one too high. Training stops next, so the live count may change.
    Lightning has no public way to do this: the attribute is private, so a Lightning upgrade that renames it fails
    here loudly, and ``tests/test_stability.py`` pins the resumed run's logged steps.
    """
    loop = trainer.fit_loop.epoch_loop
    if not isinstance(getattr(loop, "_batches_that_stepped", None), int):
        raise RuntimeError(
            "lit_gpt.train.stability relies on TrainingEpochLoop._batches_that_stepped, which this Lightning "
            f"({type(loop).__module__}) lacks; pin lightning to a version tests/test_stability.py passes with"
        )
    loop._batches_that_stepped -= 1
