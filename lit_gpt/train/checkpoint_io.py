"""Checkpoint files that cannot be lost silently: Lightning's ``CheckpointIO`` for local files, writing atomically and
stopping the run loudly when a write fails, and the start-up check that a run's folders can be written.

``AtomicCheckpointIO`` (``lit-gpt fit`` puts it on the strategy unless a ``CheckpointIO`` plugin is configured)
writes a checkpoint to a temporary file in the destination folder (``.<name>.<pid>.<random>.tmp``: not a ``*.ckpt``,
so neither resuming nor ``ModelCheckpoint`` ever picks it up), flushes and ``fsync``s it, renames it over the target
with ``os.replace`` (atomic on one filesystem: a reader sees the old file or the new one, never half of one), then
``fsync``s the folder so the rename itself is durable. A write that fails (a full disk, a permission, a read-only
filesystem) removes its temporary file, leaves the previous file at the target intact, and raises
``CheckpointNotSaved``, a ``lit_gpt.errors.RunFailed`` (one ``error:`` line, exit status 1) that names the folder,
the cause and the newest readable checkpoint there to resume from.

Why not Lightning's ``TorchCheckpointIO``: it writes through fsspec's transaction, a temporary file in the system's
temporary folder that is then copied across filesystems (not atomic: a full disk leaves a truncated target), and it
swallows a ``PermissionError`` (``lightning.fabric.utilities.cloud_io._atomic_save``, lightning 2.6.6), so a run in an
unwritable folder trains to the end without a checkpoint and without a word. URLs (``s3://...``) still go through it.

In a multi-process run only rank 0 writes, while the others wait at Lightning's barrier after the save; a failure
raised on rank 0 alone would leave them there (NCCL) or crash them with a traceback (gloo). So there the failure is
kept, rank 0 goes on to the barrier, and ``CheckpointGuard`` stops every rank together after the save, each with
the same error; ``lit-gpt`` prints it from rank 0 only.

After a failure the run is stopping, so later saves of the same run (Lightning's exception hooks, e.g.
``ModelCheckpoint(save_on_exception=True)``) write nothing and no checkpoint is removed: the first error is the only
one, and the checkpoints there stay as they were.

Sharded checkpoints (``ModelParallelStrategy``'s folders of Distributed Checkpoint shards, DeepSpeed's and FSDP1's
sharded states) are written by the strategy itself, in place, not through a ``CheckpointIO``: a failed sharded write
raises the strategy's own error (a traceback), and Lightning offers no public seam to make it atomic.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_gpt.errors import ConfigError, RunFailed
from lit_gpt.train.resume import newest_readable_checkpoint


class CheckpointNotSaved(RunFailed):
    """A checkpoint write failed; the run stops. The message names the folder, the cause (the operating system's
    words: no space left on device, permission denied, read-only file system) and the checkpoint to resume from.
    Every process of a multi-process run raises the same one (``on_every_rank``), so only rank 0 need print it."""

    on_every_rank = True


def is_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a path on this machine (not a URL such as ``s3://bucket/run``)."""
    text = str(path)
    return "://" not in text or text.startswith("file://")


def _local(path: str | os.PathLike) -> Path:
    return Path(str(path).removeprefix("file://"))


def write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace the file ``path`` with what ``write(file)`` writes, atomically (module docstring): a
    temporary file in ``path``'s folder (created with it, as ``mkdir -p``), fsync, rename over ``path``, fsync the
    folder. On any failure the temporary file is removed and a previous file at ``path`` is left as it was.

    Raises:
        OSError: from creating the folder or the file, writing, syncing or renaming (and whatever ``write`` raises).
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; filesystems that cannot sync a folder (EINVAL) are left to their own."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
    finally:
        os.close(descriptor)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic and whose failures stop the run (module docstring).

    Loading and removing are ``TorchCheckpointIO``'s; so is saving to a URL.

    Attributes:
        collective: False (one process): a failed save raises at once. True (several processes, of which only
            rank 0 writes): the failure is kept in ``failure`` and the save returns, so rank 0 meets the others at
            Lightning's barrier after the save; ``CheckpointGuard`` then stops every process together.
        failure: the first failed save's error, or None.

    Raises:
        CheckpointNotSaved: from ``save_checkpoint``, when a local write fails and ``collective`` is False.
    """

    def __init__(self) -> None:
        super().__init__()
        self.collective = False
        self.failure: CheckpointNotSaved | None = None

    def serialize(self, checkpoint: dict[str, Any], file: IO[bytes]) -> None:
        """Write ``checkpoint`` to the open ``file`` (``torch.save``)."""
        torch.save(checkpoint, file)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically; nothing once a save of this run has failed.

        Raises:
            TypeError: for ``storage_options`` (as ``TorchCheckpointIO``).
            CheckpointNotSaved: when the write fails (and ``collective`` is False); the file at ``path`` is then as
                it was before.
        """
        if not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        if self.failure is not None:
            return
        path = _local(path)
        try:
            write_atomically(path, lambda file: self.serialize(checkpoint, file))
        except OSError as err:
            self.failure = CheckpointNotSaved(_not_saved_message(path, checkpoint.get("global_step"), err))
            if not self.collective:
                raise self.failure from None

    def remove_checkpoint(self, path) -> None:
        """Remove the checkpoint at ``path`` (``ModelCheckpoint`` replacing its best ones), except once a save of
        this run has failed: the checkpoints still there are the ones to resume from."""
        if self.failure is None:
            super().remove_checkpoint(path)


class CheckpointGuard(Callback):
    """Stops every process of a multi-process run together when rank 0's ``AtomicCheckpointIO`` failed to save.

    After a checkpoint was saved (``on_save_checkpoint`` runs on every rank), the next ``on_train_batch_start`` or
    ``on_train_end`` broadcasts rank 0's failure, if any, and every rank raises the same ``CheckpointNotSaved``:
    one collective per checkpoint, none per step. One process needs no guard: its save raises at once.
    """

    def __init__(self) -> None:
        self.saved = False

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        self.saved = True

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._check(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        if not self.saved or trainer.world_size == 1:
            return
        self.saved = False
        failure = getattr(trainer.strategy.checkpoint_io, "failure", None)
        message = trainer.strategy.broadcast(None if failure is None else str(failure), src=0)
        if message is not None:
            raise CheckpointNotSaved(message)


def _not_saved_message(path: Path, step: int | None, err: OSError) -> str:
    cause = err.strerror or type(err).__name__
    at = f" at step {step}" if step is not None else ""
    fallback = newest_readable_checkpoint(path.parent)
    resume = (
        f"the checkpoints already there are intact: make room or make the folder writable, then resume with "
        f"--ckpt_path {fallback}"
        if fallback is not None
        else "it holds no readable checkpoint to resume from"
    )
    return f"could not save checkpoint {path.name} in {path.parent} ({cause}){at}, so training stopped; {resume}"


def use_atomic_checkpoint_io(strategy) -> None:
    """Put ``AtomicCheckpointIO`` on Lightning's ``strategy`` where it would write with Lightning's default
    ``TorchCheckpointIO``, and make it ``collective`` when the strategy runs several processes; a ``CheckpointIO``
    configured as a plugin (``trainer.plugins``, including a wrapper such as ``AsyncCheckpointIO``) is kept."""
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
    if isinstance(strategy.checkpoint_io, AtomicCheckpointIO):
        strategy.checkpoint_io.collective = strategy.world_size > 1


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Raise ConfigError unless files can be created in ``folder``: a probe file is created and removed there (and
    the folders missing on the way, which are removed again), so the answer is the filesystem's (permissions, a
    read-only mount, a full disk), for root too. ``what`` names the folder in the message (e.g. ``the checkpoint
    folder (checkpoint.dirpath)``). URLs are not probed."""
    if not is_local(folder):
        return
    folder = _local(folder)
    missing = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    probe = folder / f".lit-gpt-write-probe.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as file:
            file.write(b"probe")
        probe.unlink()
    except OSError as err:
        cause = err.strerror or type(err).__name__
        raise ConfigError(
            f"cannot write to {what} {folder} ({cause}): a run there would lose its work; choose a folder this user "
            "can write to"
        ) from None
    finally:
        for path in missing:
            try:
                path.rmdir()  # only while empty: what the run writes later creates it again
            except OSError:
                break
