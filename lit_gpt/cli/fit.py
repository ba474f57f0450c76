"""``lit-gpt fit|validate|test --config CONFIG.yaml [--section.key VALUE ...]``: LightningCLI over ``LitGPT`` and a
data module (``TextDataModule`` unless ``--data.class_path`` names another; ``lit_gpt.train.lightning_cli``).

jsonargparse runs with ``exit_on_error=False``, so an unknown key, a wrong type or a missing value is one ``error:``
line (instead of a usage dump) and exit status 2, like every other bad input; so is a ``ConfigError`` raised while
the model or the data module is built (jsonargparse wraps it in a ``ValueError``).
"""

from __future__ import annotations

from jsonargparse import ArgumentError

from lit_gpt.cli.args import USAGE, config_error_cause
from lit_gpt.errors import ConfigError


def main(args: list[str]) -> None:
    """Run ``args`` (``[subcommand, flags...]``) through the LightningCLI.

    Raises:
        ConfigError: for bad input: a parse error, a bad value, a bad corpus, an unreadable ``--ckpt_path``.
        lit_gpt.errors.RunFailed: when training stops on a non-finite or spiking loss (``--stability.*``).
    """
    from lit_gpt.train.lightning_cli import build_cli

    try:
        build_cli(args, run=True, description=USAGE)
    except ArgumentError as err:
        raise ConfigError(f"{err} (see `lit-gpt {args[0]} --help`)") from None
    except ValueError as err:
        raise config_error_cause(err) or err
