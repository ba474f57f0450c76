"""A learning-rate range test on a configured model and data, with Lightning's Tuner (``lit-gpt lr-find``).

The test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017, section 3.3; the implementation is
``lightning.pytorch.tuner.Tuner.lr_find``) trains from the initial weights for ``num_training`` optimizer steps
while the learning rate grows exponentially from ``min_lr`` to ``max_lr``, records the training loss at each step,
and suggests the learning rate where the smoothed loss falls fastest per factor of learning rate (the steepest
slope against log(lr), skipping the first 10 steps and the last one, as fastai's "steep" suggestion). It stops
early once Lightning's smoothed loss exceeds ``early_stop_threshold`` times its best.

How it meets ``LitGPT``: Lightning sets every AdamW parameter group's learning rate to ``min_lr`` and replaces the
model's warmup + cosine ``LambdaLR`` by its own exponential schedule for the search, so the warmup does not scale
the tested rates; afterwards it restores the initial weights, optimizer and schedule from a temporary checkpoint
in ``trainer.default_root_dir`` (then deleted). The suggestion is the peak of the cosine schedule: train with it
by ``lit-gpt fit ... --model.learning_rate X``.

Two corrections to Lightning 2.6's numbers. (1) Its running loss average is bias-corrected with the optimizer step
count read after the step: after k steps it divides by ``1 - beta**(k + 1)`` instead of ``1 - beta**k`` (Adam's
correction, Kingma & Ba 2015), so the curve starts at about half the loss, ``1 / (1 + beta)``, and climbs towards
it over the first ~100 steps; ``unbias`` rescales the values. Lightning offers no public way to read the raw
losses (the Tuner replaces every callback with its own during the test), so the correction is pinned by
``tests/test_lr_find.py``, which fails loudly if a Lightning upgrade fixes or changes the smoothing. Its early stop
still sees the uncorrected values, so it may stop somewhat sooner than ``early_stop_threshold`` says. (2) Its
suggestion differentiates the loss with respect to lr itself, so on an exponential sweep the noise between the
closely spaced tiny rates outweighs the real descent (Lightning-AI/pytorch-lightning#21141); ``steepest``
differentiates with respect to log(lr).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.tuner import Tuner

from lit_gpt.errors import ConfigError

SKIP_BEGIN, SKIP_END = 10, 1  # losses left out of the suggestion, as Lightning's: a noisy start, the final jump
BETA = 0.98  # Lightning's smoothing of the loss curve


@dataclass
class RangeTest:
    """The range test's settings (``--lr_find.*``) and, after ``run``, its results.

    Args:
        min_lr, max_lr: first and last learning rate, 0 < min_lr < max_lr.
        num_training: optimizer steps, one learning rate each.
        mode: how the learning rate grows from step to step: ``exponential`` or ``linear``.
        early_stop_threshold: stop when the smoothed loss exceeds this multiple of its best; 0 never stops.
    Raises:
        ConfigError: for a value out of range.
    """

    min_lr: float = 1e-6
    max_lr: float = 1.0
    num_training: int = 100
    mode: Literal["exponential", "linear"] = "exponential"
    early_stop_threshold: float = 4.0
    lrs: list[float] = field(default_factory=list, init=False)
    """The learning rate of each step run."""
    losses: list[float] = field(default_factory=list, init=False)
    """The smoothed training loss of each step run (Lightning's, through ``unbias``)."""

    def __post_init__(self) -> None:
        if not 0 < self.min_lr < self.max_lr:
            raise ConfigError(f"need 0 < --lr_find.min_lr < --lr_find.max_lr, got {self.min_lr} and {self.max_lr}")
        if self.num_training < 1:
            raise ConfigError(f"--lr_find.num_training must be a positive integer, got {self.num_training}")
        if self.mode not in ("exponential", "linear"):
            raise ConfigError(f"--lr_find.mode must be 'exponential' or 'linear', got {self.mode!r}")
        if self.early_stop_threshold < 0:
            raise ConfigError(f"--lr_find.early_stop_threshold must be >= 0, got {self.early_stop_threshold}")

    @property
    def best(self) -> int | None:
        """Index of the suggested step (``steepest``), or None when too few steps ran."""
        return steepest(self.lrs, self.losses, self.mode)

    def run(self, trainer: Trainer, model: LightningModule, datamodule: LightningDataModule) -> None:
        """Run the test with ``trainer`` (its loggers and ``SaveConfigCallback`` are removed: a range test is not a
        run to record) and fill ``lrs`` and ``losses``.

        Raises:
            ConfigError: for ``trainer.fast_dev_run``, with which Lightning skips the test.
        """
        trainer.loggers = []
        trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, SaveConfigCallback)]
        finder = Tuner(trainer).lr_find(
            model,
            datamodule=datamodule,
            min_lr=self.min_lr,
            max_lr=self.max_lr,
            num_training=self.num_training,
            mode=self.mode,
            early_stop_threshold=self.early_stop_threshold or None,
            update_attr=False,
        )
        if finder is None:
            raise ConfigError("lr-find does not run with trainer.fast_dev_run; remove that flag")
        self.lrs, self.losses = list(finder.results["lr"]), unbias(finder.results["loss"])


def unbias(losses: list[float], beta: float = BETA) -> list[float]:
    """Rescale Lightning's smoothed losses, one per step from step 0, to divide by ``1 - beta**k`` after k steps.

    Value i (k = i + 1 losses averaged) was divided by ``1 - beta**(k + 1)``; ``beta`` is Lightning's (0.98).
    """
    return [loss * (1 - beta ** (i + 2)) / (1 - beta ** (i + 1)) for i, loss in enumerate(losses)]


def steepest(lrs: list[float], losses: list[float], mode: str = "exponential") -> int | None:
    """Index of the steepest descent of ``losses`` (one per step) against log(lr) (``mode="exponential"``) or lr.

    Leaves out the first ``SKIP_BEGIN`` and last ``SKIP_END`` steps and non-finite losses; None when fewer than two
    points remain (a gradient needs two).
    """
    kept = [i for i in range(SKIP_BEGIN, len(losses) - SKIP_END) if math.isfinite(losses[i])]
    if len(kept) < 2:
        return None
    x = torch.tensor([lrs[i] for i in kept], dtype=torch.float64)
    y = torch.tensor([losses[i] for i in kept], dtype=torch.float64)
    slope = torch.gradient(y, spacing=[x.log() if mode == "exponential" else x])[0]
    return kept[int(slope.argmin())]


def save_plot(test: RangeTest, path: str, configured_lr: float) -> None:
    """Save the smoothed loss against the learning rate (log scale for an exponential sweep) as a PNG at ``path``,
    marking the suggested step and the configured learning rate."""
    import matplotlib

    matplotlib.use("Agg")  # files only, also without a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(test.lrs, test.losses)
    if test.mode == "exponential":
        ax.set_xscale("log")
    best = test.best
    if best is not None:
        lr, loss = test.lrs[best], test.losses[best]
        ax.plot(lr, loss, marker="o", markersize=10, linestyle="none", color="red", label=f"suggested {lr:.3g}")
    ax.axvline(configured_lr, color="gray", linestyle="--", label=f"configured {configured_lr:.3g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(f"lit-gpt lr-find: {len(test.lrs)} steps")
    ax.legend()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
