"""``lit-gpt lr-find --config CONFIG.yaml [--section.key VALUE ...] [--lr_find.key VALUE ...]``: a learning-rate
range test (``lit_gpt.train.lr_find``) on the model and data that the flags of ``lit-gpt fit`` configure; prints the
suggested ``--model.learning_rate`` and saves the loss-versus-learning-rate plot."""

from __future__ import annotations

import os

from jsonargparse import ArgumentError

from lit_gpt.cli.args import ArgumentParser, config_error_cause
from lit_gpt.errors import ConfigError

PREFIX = "--lr_find."


def _options_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="lit-gpt lr-find",
        usage="lit-gpt lr-find --config CONFIG.yaml [--section.key VALUE ...] [--lr_find.key VALUE ...]",
        description="A learning-rate range test with Lightning's Tuner: trains from the initial weights while the "
        "learning rate grows, and suggests the rate where the loss falls fastest. Nothing is logged or kept but "
        "the plot.",
        add_help=False,
    )
    options = parser.add_argument_group("range test (the other flags are those of `lit-gpt fit --help`)")
    options.add_argument("--lr_find.min_lr", dest="min_lr", type=float, default=1e-6, help="first learning rate (1e-6)")
    options.add_argument("--lr_find.max_lr", dest="max_lr", type=float, default=1.0, help="last learning rate (1)")
    options.add_argument(
        "--lr_find.num_training",
        dest="num_training",
        type=int,
        default=100,
        help="optimizer steps, one learning rate each (100)",
    )
    options.add_argument(
        "--lr_find.mode",
        dest="mode",
        choices=("exponential", "linear"),
        default="exponential",
        help="how the learning rate grows from step to step (exponential)",
    )
    options.add_argument(
        "--lr_find.early_stop_threshold",
        dest="early_stop_threshold",
        type=float,
        default=4.0,
        help="stop when the loss exceeds this multiple of its best (4); 0 never stops",
    )
    options.add_argument(
        "--lr_find.plot",
        dest="plot",
        default=None,
        help="PNG of loss versus learning rate (default: lr_find.png in the logger's folder, "
        "e.g. runs/shakespeare-char/lr_find.png)",
    )
    return parser


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Split ``args`` into the ``--lr_find.*`` flags (with their values) and the rest, each in order."""
    ours, rest = [], []
    i = 0
    while i < len(args):
        if args[i].startswith(PREFIX):
            takes_value = "=" not in args[i] and i + 1 < len(args)
            ours += args[i : i + 1 + takes_value]
            i += 1 + takes_value
        else:
            rest.append(args[i])
            i += 1
    return ours, rest


def main(args: list[str]) -> None:
    """Run the range test for ``args`` (``["lr-find", flags...]``) and print the suggestion.

    Raises:
        ConfigError: for a bad flag or setting, or when no suggestion is possible (too few finite losses: raise
            ``--lr_find.num_training``).
    """
    if any(a in ("-h", "--help") for a in args[1:]):
        _options_parser().print_help()
        return
    flags, rest = split_args(args[1:])
    options = vars(_options_parser().parse_args(flags))
    plot = options.pop("plot")

    from lit_gpt.train.lightning_cli import build_cli
    from lit_gpt.train.lr_find import SKIP_BEGIN, SKIP_END, RangeTest, save_plot

    test = RangeTest(**options)
    try:
        cli = build_cli(rest, run=False)
    except ArgumentError as err:
        raise ConfigError(f"{err} (see `lit-gpt lr-find --help` and `lit-gpt fit --help`)") from None
    except ValueError as err:
        raise config_error_cause(err) or err
    trainer, model = cli.trainer, cli.model
    plot = plot or os.path.join(getattr(trainer.logger, "root_dir", None) or "runs", "lr_find.png")
    test.run(trainer, model, cli.datamodule)
    if not trainer.is_global_zero:
        return
    best = test.best
    if best is None:
        steps = len(test.lrs)
        stopped = f" (the loss diverged after {steps} steps)" if steps < test.num_training else ""
        raise ConfigError(
            f"no learning-rate suggestion from {steps} steps{stopped}: it needs at least {SKIP_BEGIN + SKIP_END + 2} "
            f"finite losses; raise --lr_find.num_training (e.g. 100){' or lower --lr_find.max_lr' if stopped else ''}"
        )
    suggestion, configured = test.lrs[best], model.hparams.learning_rate
    save_plot(test, plot, configured)
    print(
        f"suggested learning rate: {suggestion:.3g} (configured {configured:.3g}); "
        f"train with it by --model.learning_rate {suggestion:.3g}"
    )
    print(f"loss-versus-learning-rate plot: {plot}")
