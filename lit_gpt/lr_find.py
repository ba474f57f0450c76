"""``lit-gpt lr-find``: a learning-rate range test on a configured model and data, with Lightning's Tuner.

The test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017, section 3.3; the implementation is
``lightning.pytorch.tuner.Tuner.lr_find``) trains from the initial weights for ``num_training`` optimizer steps
while the learning rate grows exponentially from ``min_lr`` to ``max_lr``, records the smoothed training loss at
each step, and suggests the learning rate where the loss falls fastest per factor of learning rate (the steepest
slope against log(lr), skipping the first 10 steps and the last one, as fastai's "steep" suggestion). It stops
early once the loss exceeds ``early_stop_threshold`` times its best.

How it meets ``LitGPT``: Lightning sets every AdamW parameter group's learning rate to ``min_lr`` and replaces the
model's warmup + cosine ``LambdaLR`` by its own exponential schedule for the search, so the warmup does not scale
the tested rates; afterwards it restores the initial weights, optimizer and schedule from a temporary checkpoint
in ``trainer.default_root_dir`` (then deleted). The suggestion is the peak of the cosine schedule: train with it
by ``lit-gpt fit ... --model.learning_rate X``. (Lightning could also write it to ``model.hparams.learning_rate``,
which it finds by name, but no training follows here.) Nothing is logged and no checkpoint is kept; the
loss-versus-learning-rate curve is saved as a PNG.

Two corrections to Lightning 2.6's numbers. (1) Its running loss average is bias-corrected with the optimizer step
count read after the step: after k steps it divides by ``1 - beta**(k + 1)`` instead of ``1 - beta**k`` (Adam's
correction, Kingma & Ba 2015), so the curve starts at about half the loss, ``1 / (1 + beta)``, and climbs towards
it over the first ~100 steps. ``unbias`` rescales the values when the installed Lightning does this
(``smoothing_is_off_by_one`` runs its callback on one loss to find out); its early stop still sees the uncorrected
values, so it may stop somewhat sooner than ``early_stop_threshold`` says. (2) Its suggestion differentiates the loss
with respect to lr itself, so on an exponential sweep the noise between the closely spaced tiny rates outweighs
the real descent (Lightning-AI/pytorch-lightning#21141); ``steepest`` differentiates with respect to log(lr).
"""

from __future__ import annotations

import argparse
import math
import os
from types import SimpleNamespace

from lit_gpt.config import ConfigError

SKIP_BEGIN, SKIP_END = 10, 1  # losses left out of the suggestion, as Lightning's: a noisy start, the final jump


def _options_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-gpt lr-find",
        usage="lit-gpt lr-find --config CONFIG.yaml [--section.key VALUE ...] [--lr_find.key VALUE ...]",
        description=__doc__.split("\n\n")[1].replace("``", "`"),
        add_help=False,
        allow_abbrev=False,
        exit_on_error=False,
    )
    options = parser.add_argument_group("range test (the other flags are those of `lit-gpt fit --help`)")
    options.add_argument("--lr_find.min_lr", dest="min_lr", type=float, default=1e-6, help="first learning rate (1e-6)")
    options.add_argument("--lr_find.max_lr", dest="max_lr", type=float, default=1.0, help="last learning rate (1)")
    options.add_argument("--lr_find.num_training", dest="num_training", type=int, default=100,
                         help="optimizer steps, one learning rate each (100)")  # fmt: skip
    options.add_argument("--lr_find.mode", dest="mode", choices=("exponential", "linear"), default="exponential",
                         help="how the learning rate grows from step to step (exponential)")  # fmt: skip
    options.add_argument("--lr_find.early_stop_threshold", dest="early_stop_threshold", type=float, default=4.0,
                         help="stop when the loss exceeds this multiple of its best (4); 0 never stops")  # fmt: skip
    options.add_argument("--lr_find.plot", dest="plot", default=None,
                         help="PNG of loss versus learning rate (default: lr_find.png in the logger's folder, "
                              "e.g. runs/shakespeare-char/lr_find.png)")  # fmt: skip
    return parser


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Split ``args`` into the ``--lr_find.*`` flags (with their values) and the rest, each in order."""
    ours, rest = [], []
    i = 0
    while i < len(args):
        if args[i].startswith("--lr_find."):
            takes_value = "=" not in args[i] and i + 1 < len(args)
            ours += args[i : i + 1 + takes_value]
            i += 1 + takes_value
        else:
            rest.append(args[i])
            i += 1
    return ours, rest


def parse_options(flags: list[str]) -> argparse.Namespace:
    """The range test's settings from ``--lr_find.*`` flags; raises ConfigError for a bad or unknown one."""
    parser = _options_parser()
    try:
        options, unknown = parser.parse_known_args(flags)
    except argparse.ArgumentError as err:
        raise ConfigError(f"{err} (see `lit-gpt lr-find --help`)") from err
    if unknown:
        raise ConfigError(f"unrecognized arguments: {' '.join(unknown)} (see `lit-gpt lr-find --help`)")
    if not 0 < options.min_lr < options.max_lr:
        raise ConfigError(f"need 0 < --lr_find.min_lr < --lr_find.max_lr, got {options.min_lr} and {options.max_lr}")
    if options.num_training < 1:
        raise ConfigError(f"--lr_find.num_training must be a positive integer, got {options.num_training}")
    if options.early_stop_threshold < 0:
        raise ConfigError(f"--lr_find.early_stop_threshold must be >= 0, got {options.early_stop_threshold}")
    return options


def smoothing_is_off_by_one() -> bool:
    """Whether Lightning's range-test callback reports ``1 / (1 + beta)`` of a single loss of 1 (see the module doc)."""
    import torch
    from lightning.pytorch.tuner.lr_finder import _LRCallback

    probe = _LRCallback(num_training=1, early_stop_threshold=None)
    trainer = SimpleNamespace(fit_loop=SimpleNamespace(batch_idx=0), accumulate_grad_batches=1, global_step=1,
                              should_stop=False, strategy=SimpleNamespace(broadcast=lambda x: x))  # fmt: skip
    probe.on_train_batch_end(trainer, None, torch.tensor(1.0), None, 0)
    return abs(probe.losses[0] * (1 + probe.beta) - 1) < 1e-6


def unbias(losses: list[float], beta: float = 0.98) -> list[float]:
    """Rescale Lightning's smoothed losses, one per step from step 0, to divide by ``1 - beta**k`` after k steps.

    Value i (k = i + 1 losses averaged) was divided by ``1 - beta**(k + 1)``; ``beta`` is Lightning's (0.98).
    """
    return [loss * (1 - beta ** (i + 2)) / (1 - beta ** (i + 1)) for i, loss in enumerate(losses)]


def steepest(lrs: list[float], losses: list[float], mode: str = "exponential") -> int | None:
    """Index of the steepest descent of ``losses`` (one per step) against log(lr) (``mode="exponential"``) or lr.

    Leaves out the first ``SKIP_BEGIN`` and last ``SKIP_END`` steps and non-finite losses; None when fewer than two
    points remain (a gradient needs two).
    """
    import torch

    kept = [i for i in range(SKIP_BEGIN, len(losses) - SKIP_END) if math.isfinite(losses[i])]
    if len(kept) < 2:
        return None
    x = torch.tensor([lrs[i] for i in kept], dtype=torch.float64)
    y = torch.tensor([losses[i] for i in kept], dtype=torch.float64)
    slope = torch.gradient(y, spacing=[x.log() if mode == "exponential" else x])[0]
    return kept[int(slope.argmin())]


def save_plot(finder, path: str, configured_lr: float, best: int) -> None:
    """Save the finder's loss-versus-learning-rate curve as a PNG at ``path``, marking step ``best`` and the
    configured learning rate."""
    import matplotlib

    matplotlib.use("Agg")  # files only, also without a display
    import matplotlib.pyplot as plt

    fig = finder.plot(suggest=False)  # Lightning's own suggestion would mark another point
    ax = fig.axes[0]
    lr, loss = finder.results["lr"][best], finder.results["loss"][best]
    ax.plot(lr, loss, marker="o", markersize=10, linestyle="none", color="red", label=f"suggested {lr:.3g}")
    ax.axvline(configured_lr, color="gray", linestyle="--", label=f"configured {configured_lr:.3g}")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(f"lit-gpt lr-find: {len(finder.results['lr'])} steps")
    ax.legend()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: list[str]) -> None:
    """``lit-gpt lr-find``: run the range test for a config and print the suggested ``--model.learning_rate``.

    Takes the flags of ``lit-gpt fit`` plus ``--lr_find.*``; prints one ``suggested learning rate`` line and where
    the plot went. Raises ConfigError when no suggestion is possible (too few finite losses: raise
    ``--lr_find.num_training``) or for bad settings.
    """
    if any(a in ("-h", "--help") for a in args):
        print(main.__doc__.strip().splitlines()[0].replace("``", "`") + "\n")
        _options_parser().print_help()
        return
    flags, rest = split_args(args)
    options = parse_options(flags)

    from lightning.pytorch.cli import SaveConfigCallback
    from lightning.pytorch.tuner import Tuner

    from lit_gpt.cli import lightning_cli

    cli = lightning_cli(rest, run=False)
    trainer, model = cli.trainer, cli.model
    plot = options.plot or os.path.join(getattr(trainer.logger, "root_dir", None) or "runs", "lr_find.png")
    # A range test is not a run to record: no logger (no version folder) and no saved config.yaml.
    trainer.loggers = []
    trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, SaveConfigCallback)]
    configured_lr = model.hparams.learning_rate
    finder = Tuner(trainer).lr_find(
        model,
        datamodule=cli.datamodule,
        min_lr=options.min_lr,
        max_lr=options.max_lr,
        num_training=options.num_training,
        mode=options.mode,
        early_stop_threshold=options.early_stop_threshold or None,
        update_attr=False,
    )
    if finder is None:
        raise ConfigError("lr-find does not run with trainer.fast_dev_run; remove that flag")
    if not trainer.is_global_zero:
        return
    results = finder.results
    if smoothing_is_off_by_one():
        results["loss"] = unbias(results["loss"])
    best = steepest(results["lr"], results["loss"], options.mode)
    if best is None:
        steps = len(results["lr"])
        stopped = f" (the loss diverged after {steps} steps)" if steps < options.num_training else ""
        raise ConfigError(
            f"no learning-rate suggestion from {steps} steps{stopped}: it needs at least {SKIP_BEGIN + SKIP_END + 2} "
            f"finite losses; raise --lr_find.num_training (e.g. 100){' or lower --lr_find.max_lr' if stopped else ''}"
        )
    suggestion = results["lr"][best]
    save_plot(finder, plot, configured_lr, best)
    print(f"suggested learning rate: {suggestion:.3g} (configured {configured_lr:.3g}); "
          f"train with it by --model.learning_rate {suggestion:.3g}")  # fmt: skip
    print(f"loss-versus-learning-rate plot: {plot}")
