"""A prepared folder as litdata chunks, for streaming (``lit-gpt prepare``'s litdata export to a folder or URL ``OUT``).

The corpus goes through the memory-mapped preparation first (``lit_gpt.data.prepare``: the same reading, cleaning,
quality filters, dedup, split and tokenization, reused while fresh), so both formats hold the same tokens and
counts; the token shards are then the local staging copy that this module converts with ``litdata.optimize``
(Lightning's litdata, as litgpt's TinyLlama pretraining uses it), in parallel, to a local folder or to object
storage (``s3://bucket/prefix``, with the credentials litdata finds in the environment). ``OUT`` then holds:

- ``train/``: the training tokens in chunks of ``chunk_tokens`` tokens (one item each), written for
  ``litdata.TokensLoader``, which serves them as windows of ``block_size + 1`` consecutive tokens chosen at
  training time (``lit_gpt.data.streaming_windows``);
- ``val/``: the validation tokens, in order, as items of up to ``VAL_ITEM_TOKENS`` tokens (litdata's default
  format), which the data module reads whole, so that validation covers every target exactly once;
- ``meta.json``: the prepared folder's metadata (tokenizer, counts, cleaning counts, sources) without its shard
  list, plus ``litdata``: the litdata version, ``chunk_tokens`` and the item counts. It is written last, so an
  interrupted export is never trusted, and an export whose ``meta.json`` matches is reused.

litdata is an optional extra, imported only here and in ``lit_gpt.data.streaming_windows``: ``import_litdata``
raises one ``ConfigError`` naming the install command when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lit_gpt.errors import ConfigError

LITDATA_VERSION = "0.2.76"
"""The litdata release this code was written and tested against (its wheel also pulls in torchvision, hence the
install without dependencies)."""
INSTALL = f'pip install -e ".[stream]" && pip install --no-deps litdata=={LITDATA_VERSION}'
CHUNK_TOKENS = 1 << 25
"""Default training tokens per chunk (32 Mi: 64 MiB as uint16), litdata's usual chunk size for object storage."""
VAL_ITEM_TOKENS = 1 << 20
"""Validation tokens per item (1 Mi)."""


def import_litdata():
    """The ``litdata`` module.

    Raises:
        ConfigError: when it is not installed, with the command that installs it.
    """
    try:
        import litdata
    except ImportError:
        raise ConfigError(f"streaming data needs litdata, an optional extra: {INSTALL}") from None
    return litdata


def is_url(path: str) -> bool:
    """Whether ``path`` names object storage (``s3://...``, ``gs://...``) rather than a local folder."""
    return "://" in str(path)


def join(base: str, name: str) -> str:
    """``base/name`` for a folder or a URL."""
    return f"{str(base).rstrip('/')}/{name}" if is_url(base) else str(Path(base) / name)


def _fs(url: str):
    """litdata's file system for ``url`` (its private ``_get_fs_provider``: litdata has no public way to move one
    small file; tests/test_streaming.py pins the methods used here)."""
    from litdata.streaming.fs_provider import _get_fs_provider

    return _get_fs_provider(url, {})


def read_export_meta(input_dir: str, cache_dir: str | None = None) -> dict | None:
    """The ``meta.json`` of an export (a folder, or a URL: downloaded into ``cache_dir`` or a temporary folder), or
    None when there is none."""
    return _read_json(input_dir, "meta.json", cache_dir)


def _read_json(base: str, name: str, cache_dir: str | None = None) -> dict | None:
    """The JSON file ``base/name`` of a folder or a URL, or None when it is missing or unreadable."""
    if not is_url(base):
        try:
            return json.loads((Path(base) / name).read_text())
        except (OSError, ValueError):
            return None
    import_litdata()
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        local = os.path.join(tmp, name)
        try:
            _fs(base).download_file(join(base, name), local)
            return json.loads(Path(local).read_text())
        except Exception:  # noqa: BLE001  (each cloud client raises its own "not found")
            return None


def _write_export_meta(out: str, meta: dict | None) -> None:
    """Write ``meta`` as ``out/meta.json``, or remove it when ``meta`` is None (an export in progress)."""
    target = join(out, "meta.json")
    if not is_url(out):
        if meta is None:
            Path(target).unlink(missing_ok=True)
            return
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(target + ".tmp").write_text(json.dumps(meta, indent=1))
        os.replace(target + ".tmp", target)
        return
    fs = _fs(out)
    if meta is None:
        with contextlib.suppress(Exception):  # nothing to remove
            fs.delete_file_or_directory(target)
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "meta.json").write_text(json.dumps(meta, indent=1))
        fs.upload_file(str(Path(tmp) / "meta.json"), target)


class TokenPieces:
    """``litdata.optimize``'s ``fn``: a piece ``(shard name, start, stop)`` of a prepared folder's token shards ->
    its tokens, a 1-D array (a copy). A class, so that it pickles into optimize's worker processes."""

    def __init__(self, folder: str, dtype: str) -> None:
        self.folder, self.dtype = folder, dtype

    def __call__(self, piece: tuple[str, int, int]) -> np.ndarray:
        name, start, stop = piece
        return np.array(np.memmap(Path(self.folder) / name, dtype=self.dtype, mode="r")[start:stop])


def pieces(shards: dict[str, int], size: int) -> list[tuple[str, int, int]]:
    """Consecutive pieces of at most ``size`` tokens of the shards (name -> token count), in order; a piece
    never spans two shards."""
    return [
        (name, start, min(start + size, count)) for name, count in shards.items() for start in range(0, count, size)
    ]


@contextlib.contextmanager
def _optimize_side_effects() -> Iterator[None]:
    """``litdata.optimize`` sets the process-wide multiprocessing start method (to spawn) and
    ``DATA_OPTIMIZER_*`` environment variables, which would change later DataLoader workers and make a
    ``StreamingDataset`` believe it runs inside optimize; undo both."""
    method = multiprocessing.get_start_method(allow_none=True)
    environ = {k: v for k, v in os.environ.items() if k.startswith("DATA_OPTIMIZER_")}
    try:
        yield
    finally:
        multiprocessing.set_start_method(method, force=True)
        for key in [k for k in os.environ if k.startswith("DATA_OPTIMIZER_")]:
            del os.environ[key]
        os.environ.update(environ)


def export_litdata(
    prepared_dir: str, meta: dict, out: str, chunk_tokens: int = CHUNK_TOKENS, num_workers: int | None = None
) -> dict:
    """Write the prepared folder ``prepared_dir`` (with metadata ``meta``) to ``out`` in litdata's format (see the
    module docstring), unless ``out`` already holds this export; returns the export's metadata.

    Args:
        prepared_dir: a folder written by ``lit_gpt.data.prepare.prepare``.
        meta: its metadata.
        out: a local folder or a URL that litdata writes to (``s3://...``).
        chunk_tokens: training tokens per chunk.
        num_workers: optimize's processes for the training chunks; None: every CPU core (at most one per chunk).
    Raises:
        ConfigError: without litdata, for a bad ``chunk_tokens``, or an ``out`` folder that holds other files.
    """
    litdata = import_litdata()
    if chunk_tokens < 1:
        raise ConfigError(f"chunk_tokens must be positive, got {chunk_tokens}")
    train, val = pieces(meta["shards"]["train"], chunk_tokens), pieces(meta["shards"]["val"], VAL_ITEM_TOKENS)
    export = {k: v for k, v in meta.items() if k not in ("shards", "verified")}
    export["litdata"] = {
        "version": litdata.__version__,
        "chunk_tokens": chunk_tokens,
        "train_chunks": len(train),
        "val_items": len(val),
    }
    existing = read_export_meta(out)
    if existing == export:
        return existing
    _check_out(out, existing)
    _write_export_meta(out, None)
    fn = TokenPieces(str(prepared_dir), meta["dtype"])
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(train)))
    # fork on Linux: the workers need not import torch again, and a script read from stdin works; this process has
    # not touched CUDA. Elsewhere litdata's default (spawn).
    common = {
        "mode": "overwrite",
        "keep_data_ordered": True,
        "reorder_files": False,
        "verbose": False,
        "start_method": "fork" if sys.platform == "linux" else None,
    }
    with _optimize_side_effects():
        litdata.optimize(
            fn=fn,
            inputs=train,
            output_dir=join(out, "train"),
            chunk_size=chunk_tokens,
            item_loader=litdata.TokensLoader(),
            num_workers=workers,
            **common,
        )
        litdata.optimize(fn=fn, inputs=val, output_dir=join(out, "val"), chunk_bytes="64MB", num_workers=1, **common)
    _check_written(join(out, "train"), "dim", meta["tokens"]["train"])
    _check_written(join(out, "val"), "chunk_size", len(val))
    _write_export_meta(out, export)
    return export


def _check_written(folder: str, key: str, expected: int) -> None:
    """Raise ConfigError unless the chunks listed in ``folder/index.json`` add up to ``expected`` (tokens with
    ``key="dim"``, items with ``"chunk_size"``): optimize reports no error when its worker processes fail."""
    index = _read_json(folder, "index.json") or {}
    written = sum(chunk.get(key) or 0 for chunk in index.get("chunks", []))
    if written != expected:
        raise ConfigError(
            f"litdata.optimize wrote {written} of {expected} {'tokens' if key == 'dim' else 'items'} "
            f"to {folder}; its worker processes failed (see the messages above)"
        )


def _check_out(out: str, existing: dict | None) -> None:
    """Refuse an ``out`` that holds something other than an earlier export (optimize's overwrite mode deletes the
    chunks it finds in ``out/train`` and ``out/val``, and ``out/meta.json`` is replaced)."""
    foreign = existing is not None and "litdata" not in existing
    if not foreign and existing is None and not is_url(out) and Path(out).exists():
        foreign = not Path(out).is_dir() or any(Path(out).iterdir())
    if foreign:
        raise ConfigError(f"{out} exists and is not an export of lit-gpt prepare; name a new or empty folder")
