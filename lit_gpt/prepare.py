"""Tokenize a text corpus once into memory-mapped token files plus a metadata file; reuse them while valid.

Layout of a prepared folder::

    train.bin   token ids of the training split, raw little-endian uint16 (vocab <= 65536) or uint32
    val.bin     token ids of the validation split, same dtype
    meta.json   tokenizer spec, vocab size, dtype, token counts, val_fraction, and each source's path, size,
                modification time and SHA-256

The corpus is the source files in sorted order, each encoded on its own and joined by the end-of-text token
(one document per file). The last ``val_fraction`` of the tokens is the validation split.

A prepared folder is reused when ``meta.json`` names the same sources (same content: size and mtime, or else
the SHA-256), the same tokenizer and the same ``val_fraction``; otherwise it is rebuilt. Files are written
under temporary names and renamed into place, ``meta.json`` last, so an interrupted run never leaves a folder
that a later run would trust. No Lightning here: ``lit_gpt.data`` calls this from ``prepare_data``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np

from lit_gpt.config import ConfigError
from lit_gpt.tokenizer import Tokenizer

FORMAT_VERSION = 1
SPLITS = ("train", "val")


def resolve_sources(path: str | os.PathLike) -> list[Path]:
    """The files that ``path`` names: a file, a directory (its ``*.txt`` files, recursively) or a glob pattern.

    Returns absolute paths in sorted order.

    Raises:
        ConfigError: if nothing matches.
    """
    path = str(path)
    if glob.has_magic(path):
        files = [Path(p) for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
        if not files:
            raise ConfigError(f"no files match the pattern {path!r}")
    elif os.path.isdir(path):
        files = [p for p in Path(path).rglob("*.txt") if p.is_file()]
        if not files:
            raise ConfigError(f"directory {path!r} has no .txt files; point --data.path at a file, folder or glob")
    elif os.path.isfile(path):
        files = [Path(path)]
    else:
        raise ConfigError(f"corpus not found: {path!r}; point --data.path at a text file, a folder or a glob")
    return sorted(p.resolve() for p in files)


def download(url: str, path: str | os.PathLike, timeout: float = 30.0) -> None:
    """Download ``url`` to ``path`` (written under a temporary name, then renamed).

    Raises:
        ConfigError: if the download fails, saying where to put the file by hand.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
        os.replace(tmp, path)
    except OSError as err:  # URLError and socket timeouts are OSErrors
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"{path} is missing and downloading it from {url} failed ({err}); download it by hand and save it there"
        ) from None


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if not data:
        raise ConfigError(f"{path} is empty; remove it from the corpus or point --data.path elsewhere")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (bad byte at offset {err.start}); convert it to UTF-8") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_record(path: Path, sha256: str | None = None) -> dict:
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256 or _sha256(path)}


def _sources_unchanged(recorded: list[dict], sources: list[Path]) -> bool:
    if [r.get("path") for r in recorded] != [str(p) for p in sources]:
        return False
    for record, path in zip(recorded, sources):
        stat = path.stat()
        if (stat.st_size, stat.st_mtime_ns) == (record.get("size"), record.get("mtime_ns")):
            continue  # same size and mtime: trust the recorded hash rather than re-reading the file
        if stat.st_size != record.get("size") or _sha256(path) != record.get("sha256"):
            return False
    return True


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


def is_fresh(meta: dict | None, sources: list[Path], tokenizer: str, val_fraction: float) -> bool:
    """Whether a prepared folder's ``meta`` matches these sources, tokenizer name and split."""
    if not meta or meta.get("format") != FORMAT_VERSION:
        return False
    if meta.get("tokenizer_name") != tokenizer or meta.get("val_fraction") != val_fraction:
        return False
    return _sources_unchanged(meta.get("sources", []), sources)


def prepare(
    path: str | os.PathLike, tokenizer: str, out_dir: str | os.PathLike, val_fraction: float = 0.1
) -> dict:
    """Tokenize the corpus at ``path`` into ``out_dir`` unless a fresh preparation is already there.

    Args:
        path: a text file, a folder of ``*.txt`` files, or a glob.
        tokenizer: ``char`` (a character vocabulary built from this corpus) or a tiktoken encoding name.
        out_dir: folder for ``train.bin``, ``val.bin`` and ``meta.json``; created if missing.
        val_fraction: fraction of the tokens, taken from the end, that form the validation split; in (0, 1).
    Returns:
        The metadata dict (as written to ``meta.json``).
    Raises:
        ConfigError: for a missing, empty or non-UTF-8 source, an unknown tokenizer, a bad ``val_fraction``,
            or an ``out_dir`` that cannot be written.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    sources = resolve_sources(path)
    meta = read_meta(out_dir)
    tok = None if tokenizer == "char" else Tokenizer.from_name(tokenizer)
    # a BPE folder may be retrained in place under the same path: compare the tokenizer itself
    if is_fresh(meta, sources, tokenizer, val_fraction) and (tok is None or meta.get("tokenizer") == tok.spec):
        return meta

    texts = [_read_text(p) for p in sources]
    tok = Tokenizer.char(texts) if tok is None else tok
    ids: list[int] = []
    for i, text in enumerate(texts):
        if i:
            ids.append(tok.eot_id)  # document boundary between files
        ids.extend(tok.encode(text))
    dtype = token_dtype(tok.vocab_size)
    tokens = np.asarray(ids, dtype=dtype)
    n_val = max(1, int(round(len(tokens) * val_fraction)))
    splits = {"train": tokens[:-n_val], "val": tokens[-n_val:]}

    meta = {
        "format": FORMAT_VERSION,
        "tokenizer_name": tokenizer,
        "tokenizer": tok.spec,
        "vocab_size": tok.vocab_size,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "tokens": {split: int(len(a)) for split, a in splits.items()},
        "sources": [_source_record(p) for p in sources],
    }
    out_dir = Path(out_dir)
    suffix = f".{os.getpid()}.tmp"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "meta.json").unlink(missing_ok=True)  # from here on the folder is not trusted until rewritten
        for split, array in splits.items():
            array.tofile(out_dir / f"{split}.bin{suffix}")
            os.replace(out_dir / f"{split}.bin{suffix}", out_dir / f"{split}.bin")
        with open(out_dir / f"meta.json{suffix}", "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(out_dir / f"meta.json{suffix}", out_dir / "meta.json")
    except OSError as err:
        raise ConfigError(
            f"cannot write the token cache to {out_dir} ({err.strerror}); pass --data.cache_dir"
        ) from None
    return meta


def load_tokens(out_dir: str | os.PathLike, split: str, meta: dict) -> np.memmap:
    """Open ``{split}.bin`` of a prepared folder read-only as a 1-D memmap of ``meta["dtype"]``.

    Raises:
        ConfigError: if the file is missing or its length disagrees with ``meta`` (a truncated or foreign file).
    """
    file = Path(out_dir) / f"{split}.bin"
    dtype = np.dtype(meta["dtype"])
    expected = meta["tokens"][split]
    size = file.stat().st_size if file.exists() else -1
    if size != expected * dtype.itemsize:
        raise ConfigError(
            f"{file} is missing or has {size} bytes, expected {expected} {dtype.name} tokens; "
            f"delete {out_dir} to rebuild"
        )
    return np.memmap(file, dtype=dtype, mode="r")
