"""Which checkpoint a training run resumes from, checked before Lightning reads it.

``check_resumable`` refuses a file that is unreadable, foreign (``lit_gpt.checkpoint.read_training_checkpoint``
reads it without executing anything from it) or holds weights only, and for an unreadable one names the newest
readable checkpoint beside it, so a run whose ``last.ckpt`` was cut short (a full disk, a kill during the write) can
resume from the one before. ``newest_last_checkpoint`` resolves ``ckpt_path="last"`` as Lightning does. Both pick
files by modification time with ``newest_checkpoint``. ``check_architecture`` refuses to resume with model
settings other than the checkpoint's. The command line (``lit_gpt.train.lightning_cli``) adds the
flags to say what to pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from lit_gpt.checkpoint import is_sharded_checkpoint, read_training_checkpoint
from lit_gpt.config import Config
from lit_gpt.errors import ConfigError


class NotResumable(ConfigError):
    """``check_resumable``'s refusal. ``fallback``: the newest readable checkpoint beside an unreadable one (None if
    there is none, or the file was readable); ``weights_only``: the file is readable but holds no optimizer or loop
    state (a new run can start from its weights)."""

    def __init__(self, message: str, fallback: Path | None = None, weights_only: bool = False) -> None:
        super().__init__(message)
        self.fallback, self.weights_only = fallback, weights_only


def check_resumable(path: str | Path) -> None:
    """Return if ``path`` is a readable training checkpoint holding optimizer and loop state (a sharded checkpoint
    folder holds its optimizer state in its shards), for ``Trainer.fit(ckpt_path=path)``.

    Raises:
        NotResumable: (a ``ConfigError``) saying why, for an unreadable or foreign file with the newest readable
            checkpoint in its folder (``fallback``), or for weights only (``weights_only``).
    """
    path = Path(path)
    try:
        checkpoint = read_training_checkpoint(path)
    except ConfigError as err:
        fallback = newest_readable_checkpoint(path.parent, exclude=path)
        hint = (
            f"; the newest readable checkpoint in {path.parent} is {fallback}"
            if fallback
            else f"; {path.parent} holds no other readable checkpoint"
        )
        raise NotResumable(f"cannot resume: {err}{hint}", fallback=fallback) from None
    if ("optimizer_states" not in checkpoint and not is_sharded_checkpoint(path)) or "loops" not in checkpoint:
        raise NotResumable(
            f"cannot resume from {path}: it holds weights only (no optimizer or loop state)", weights_only=True
        )


def check_architecture(path: str | Path, settings: dict, ignore: Iterable[str] = ()) -> None:
    """Return if the architecture recorded in the training checkpoint at ``path`` equals the configured one in every
    field outside ``ignore``. A run resumed with other architecture settings would otherwise build the checkpoint's
    model without a word (LightningCLI takes an explicit path's hyperparameters over the configured ones) or fail to
    load its weights.

    Args:
        settings: ``Config``'s constructor arguments as configured; a missing one (e.g. ``vocab_size``, which the
            command line links from the data module later) is taken from the checkpoint.

    Raises:
        ConfigError: naming each differing field with both values; for settings that make no valid ``Config``; as
            ``read_training_checkpoint``.
    """
    recorded = Config(**read_training_checkpoint(path)["lit_gpt"]["config"])
    config = Config(**{**recorded.to_dict(), **settings})
    if different := recorded.differences(config, ignore=ignore):
        details = "; ".join(f"{k}: {getattr(recorded, k)!r} there, {getattr(config, k)!r} here" for k in different)
        raise ConfigError(
            f"cannot resume from {path}: it was trained with another architecture ({details}); set model.config to "
            "match it (the run's config.yaml holds it)"
        )


def newest_checkpoint(folder: str | Path | None, accept: Callable[[Path], bool] = lambda path: True) -> Path | None:
    """The most recently modified ``*.ckpt`` in ``folder`` that ``accept`` takes, or None (also when ``folder`` is
    None or not a folder). Files are tried newest first, so ``accept`` may be costly."""
    folder = Path(folder) if folder else None
    if folder is None or not folder.is_dir():
        return None
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    return next((candidate for candidate in candidates if accept(candidate)), None)


def newest_readable_checkpoint(folder: str | Path, exclude: str | Path | None = None) -> Path | None:
    """The most recently modified ``*.ckpt`` in ``folder`` other than ``exclude`` that ``read_training_checkpoint``
    accepts, or None."""
    skip = Path(exclude).resolve() if exclude is not None else None

    def readable(candidate: Path) -> bool:
        if candidate.resolve() == skip:
            return False
        try:
            read_training_checkpoint(candidate)
        except ConfigError:
            return False
        return True

    return newest_checkpoint(folder, readable)


def newest_last_checkpoint(folder: str | Path | None) -> Path | None:
    """What Lightning resumes from for ``ckpt_path="last"``: the ``last.ckpt`` (or ``last-vN.ckpt``) with the newest
    modification time in ``folder`` (``ModelCheckpoint``'s ``dirpath``), or None."""
    return newest_checkpoint(folder, lambda path: re.fullmatch(r"last(-v?\d+)?", path.stem) is not None)
