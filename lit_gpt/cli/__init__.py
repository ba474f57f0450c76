"""The ``lit-gpt`` command: one module per subcommand, each with ``main(args)``; this module dispatches and prints
failures one way.

Bad input (``lit_gpt.errors.ConfigError``) is one ``error:`` line and exit status 2; a run that had to stop
(``lit_gpt.errors.RunFailed``) is one ``error:`` line and status 1, printed by rank 0 alone when every rank of a
multi-process run raised the same one (``on_every_rank``). Only ``fit``, ``validate``, ``test`` and
``lr-find`` import Lightning; the other commands start without it.
"""

from __future__ import annotations

import importlib
import sys

from lit_gpt.cli.args import USAGE
from lit_gpt.errors import ConfigError, RunFailed

COMMANDS = {
    "fit": "lit_gpt.cli.fit",
    "validate": "lit_gpt.cli.fit",
    "test": "lit_gpt.cli.fit",
    "prepare": "lit_gpt.cli.prepare",
    "lr-find": "lit_gpt.cli.lr_find",
    "generate": "lit_gpt.cli.generate",
    "chat": "lit_gpt.cli.chat",
    "export": "lit_gpt.cli.export",
    "quantize": "lit_gpt.cli.quantize",
    "evaluate": "lit_gpt.cli.evaluate",
    "serve": "lit_gpt.cli.serve",
    "presets": "lit_gpt.cli.presets",
    "train-tokenizer": "lit_gpt.cli.train_tokenizer",
}
"""Each subcommand's module; imported on use, so ``lit-gpt generate`` never loads Lightning's trainer."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lit-gpt`` console script (and ``python -m lit_gpt.cli``); ``argv`` defaults to
    ``sys.argv[1:]``. Exits with status 2 on bad input and 1 on a failed run, each with one ``error:`` line."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        if not args or args[0] in ("-h", "--help"):
            print(USAGE)
            return
        if args[0] not in COMMANDS:
            choices = ", ".join(COMMANDS)
            raise ConfigError(f"unknown command {args[0]!r}; choose one of {choices} (see `lit-gpt --help`)")
        importlib.import_module(COMMANDS[args[0]]).main(args)
    except ConfigError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as err:
        if not (getattr(err, "on_every_rank", False) and another_rank()):
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(1)
    finally:
        destroy_process_group()


def another_rank() -> bool:
    """Whether this process is a rank other than 0 of a multi-process run (a torch.distributed process group)."""
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


def destroy_process_group() -> None:
    """Leave torch.distributed's default process group, if this process joined one (a multi-device run).

    Lightning destroys the group at exit only for NCCL. A Gloo group (DDP on CPU) left alive can abort the
    interpreter at exit (SIGABRT, status 134) when Gloo's threads free tensors during finalization
    (pytorch/pytorch#179291), so every ``lit-gpt`` command ends by destroying it while Python is intact.
    """
    if "torch.distributed" not in sys.modules:  # nothing distributed happened; keep `lit-gpt --help` light
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
