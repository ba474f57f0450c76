"""The files of a prepared folder: token shards, ``meta.json``, the folder lock, and the verification stamps.

Shards are raw little-endian uint16 (vocabulary <= 65536) or uint32 token ids, at most ``shard_tokens`` each, named
``{split}-NNNNN.bin``; ``meta["shards"][split]`` maps each name to its token count.

Verification. A shard is verified when every id in it is below the vocabulary size and its SHA-256 is known. The
writer checks both while it writes (no extra pass), and ``meta["verified"]`` records for each shard its size in
bytes, its modification time (``mtime_ns``) and that SHA-256: the stamp. Opening a split (``load_split``, at every
training start) checks each shard's size against ``meta`` and its size and mtime against the stamp, and reads it
again only when ``verify`` is asked for or the shard changed (another size or mtime), or has no stamp: then every
id is checked and the SHA-256 compared. A re-read shard whose content is unchanged (a copied or touched folder) gets
its new mtime stamped, so the next start trusts it again. So a start costs a few ``stat`` calls instead of a read of
the whole corpus; a corruption that keeps a shard's size and mtime (a bad disk sector) is found only by ``verify``.

Writers use temporary names; ``meta.json`` is written last and atomically (``write_meta``), so an interrupted
preparation never leaves a folder that a later run would trust. ``exclusive`` serialises the processes of one
machine on a folder. NumPy and the standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from lit_gpt.errors import ConfigError

CHECK_TOKENS = 1 << 24
"""Tokens read at a time when a shard is verified (16 Mi: 32 MiB as uint16)."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def read_meta(out_dir: str | os.PathLike) -> dict | None:
    """The metadata of a prepared folder, or None if there is none (or it is unreadable)."""
    try:
        with open(Path(out_dir) / "meta.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_meta(out_dir: Path, meta: dict, suffix: str) -> None:
    """Write ``meta`` to ``out_dir/meta.json`` atomically (through ``meta.json{suffix}``).

    Raises:
        ConfigError: if the folder cannot be written.
    """
    try:
        with open(out_dir / f"meta.json{suffix}", "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(out_dir / f"meta.json{suffix}", out_dir / "meta.json")
    except OSError as err:
        raise ConfigError(
            f"cannot write {out_dir / 'meta.json'} ({err.strerror}); set data.cache_dir to a writable folder"
        ) from None


@contextlib.contextmanager
def exclusive(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir/.lock`` (POSIX ``flock``), so that processes of one machine (the ranks
    of a multi-process run) prepare a folder once: the others wait, then find it fresh. Without ``fcntl`` (Windows)
    or a writable folder, there is no lock."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle = open(out_dir / ".lock", "a")
    except OSError:
        yield
        return
    try:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


def stamp(path: Path, sha256: str) -> dict:
    """The verification stamp of the shard at ``path`` whose content has SHA-256 ``sha256``."""
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}


class ShardWriter:
    """Appends token arrays to ``{split}-NNNNN.bin`` files of at most ``shard_tokens`` tokens (temporary names
    ending in ``suffix``), hashing each shard and checking every id against ``vocab_size`` as it goes.

    Raises:
        ConfigError: from ``write``, for an id >= ``vocab_size`` (a tokenizer that disagrees with its vocabulary).
    """

    def __init__(
        self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int, suffix: str, vocab_size: int
    ) -> None:
        self.out_dir, self.split, self.dtype = out_dir, split, dtype
        self.shard_tokens, self.suffix, self.vocab_size = shard_tokens, suffix, vocab_size
        self.shards: list[int] = []  # token count of each shard
        self.digests: list[str] = []  # SHA-256 of each closed shard
        self.documents = 0
        self._file = None
        self._hash = None

    @property
    def tokens(self) -> int:
        return sum(self.shards)

    def name(self, index: int) -> str:
        return f"{self.split}-{index:05d}.bin"

    def path(self, index: int) -> Path:
        """The temporary path of shard ``index``."""
        return self.out_dir / (self.name(index) + self.suffix)

    def write(self, ids: np.ndarray) -> None:
        if len(ids) and int(np.max(ids)) >= self.vocab_size:
            raise ConfigError(f"the tokenizer produced id {int(np.max(ids))} >= its vocab_size {self.vocab_size}")
        while len(ids):
            if self._file is None or self.shards[-1] == self.shard_tokens:
                self._close_shard()
                self.shards.append(0)
                self._file, self._hash = open(self.path(len(self.shards) - 1), "wb"), hashlib.sha256()
            room = self.shard_tokens - self.shards[-1]
            part, ids = ids[:room], ids[room:]
            data = np.ascontiguousarray(part, dtype=self.dtype).tobytes()
            self._file.write(data)
            self._hash.update(data)
            self.shards[-1] += len(part)

    def _close_shard(self) -> None:
        if self._file is not None:
            self._file.close()
            self.digests.append(self._hash.hexdigest())
            self._file = self._hash = None

    def close(self) -> None:
        self._close_shard()

    def publish(self) -> dict[str, str]:
        """Rename the shards to their final names; returns each name's SHA-256."""
        self.close()
        names = [self.name(i) for i in range(len(self.shards))]
        for index, name in enumerate(names):
            os.replace(self.path(index), self.out_dir / name)
        return dict(zip(names, self.digests))


def move_tail(train: ShardWriter, val: ShardWriter, n_val: int) -> None:
    """Move the last ``n_val`` tokens of the (closed) train shards into ``val``, in order; the digests of the
    shortened train shards are computed again."""
    train.close()
    keep = train.tokens - n_val
    start = 0
    for index, count in enumerate(train.shards):
        end = start + count
        if end > keep:
            path = train.path(index)
            cut = max(0, keep - start)
            val.write(np.memmap(path, dtype=train.dtype, mode="r")[cut:])
            os.truncate(path, cut * train.dtype.itemsize)
            train.shards[index] = cut
            train.digests[index] = sha256_file(path)
        start = end
    while train.shards and train.shards[-1] == 0 and len(train.shards) > 1:
        train.path(len(train.shards) - 1).unlink()
        train.shards.pop()
        train.digests.pop()


def sha256_file(path: Path) -> str:
    """The SHA-256 of the file at ``path``, as hex, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(file: Path, tokens: np.ndarray, vocab_size: int, out_dir) -> str:
    """Read ``tokens`` (the shard at ``file``) once: raise ConfigError for an id >= ``vocab_size``; return the
    SHA-256 of its bytes."""
    digest = hashlib.sha256()
    for start in range(0, len(tokens), CHECK_TOKENS):
        block = np.ascontiguousarray(tokens[start : start + CHECK_TOKENS])
        top = int(block.max())
        if top >= vocab_size:
            raise ConfigError(
                f"{file} is corrupt: token id {top} >= vocab_size {vocab_size}; delete {out_dir} to rebuild"
            )
        digest.update(block)
    return digest.hexdigest()


def load_split(out_dir: str | os.PathLike, split: str, meta: dict, verify: bool = False) -> list[np.ndarray]:
    """Open the shards of ``split`` read-only as 1-D memmaps of ``meta["dtype"]``, in order.

    Each shard's size is checked against ``meta``. A shard is read again (every id checked against
    ``meta["vocab_size"]``, its SHA-256 compared with the stamp) only with ``verify``, or when its size or mtime
    differs from its stamp in ``meta["verified"]``, or it has no stamp; such a shard that is intact gets a new
    stamp in ``meta`` and, when the folder is writable, in its ``meta.json`` (see the module docstring).

    Raises:
        ConfigError: if a shard is missing, its length disagrees with ``meta`` (a truncated or foreign file), or
            a re-read finds an id outside the vocabulary or another SHA-256 (a corrupt file); the message says to
            delete the folder to rebuild.
    """
    dtype = np.dtype(meta["dtype"])
    stamps = meta.setdefault("verified", {})
    arrays, restamped = [], {}
    for name, expected in meta["shards"][split].items():
        file = Path(out_dir) / name
        size = file.stat().st_size if file.exists() else -1
        if size != expected * dtype.itemsize:
            raise ConfigError(
                f"{file} is missing or has {size} bytes, expected {expected} {dtype.name} tokens; "
                f"delete {out_dir} to rebuild"
            )
        array = np.memmap(file, dtype=dtype, mode="r") if expected else np.zeros(0, dtype=dtype)
        old = stamps.get(name)
        new = stamp(file, "") if expected else None
        if expected and (verify or old is None or (old["bytes"], old["mtime_ns"]) != (new["bytes"], new["mtime_ns"])):
            new["sha256"] = _check(file, array, meta["vocab_size"], out_dir)
            if old is not None and new["sha256"] != old["sha256"]:
                raise ConfigError(
                    f"{file} is corrupt: its SHA-256 differs from the one recorded when it was "
                    f"prepared; delete {out_dir} to rebuild"
                )
            if new != old:
                restamped[name] = new
        arrays.append(array)
    if restamped:
        stamps.update(restamped)
        _record_stamps(Path(out_dir), meta, restamped)
    return arrays


def _record_stamps(out_dir: Path, meta: dict, restamped: dict[str, dict]) -> None:
    """Add ``restamped`` to ``out_dir/meta.json`` if it still describes the same shards; a folder that cannot be
    written is left as it is (its shards are then re-read at every start)."""
    with exclusive(out_dir):
        current = read_meta(out_dir)
        if current is None or current.get("shards") != meta.get("shards"):
            return
        current.setdefault("verified", {}).update(restamped)
        with contextlib.suppress(ConfigError):
            write_meta(out_dir, current, f".{os.getpid()}.tmp")
