"""Tokenize a corpus once into memory-mapped token shards plus a metadata file; reuse them while valid.

A prepared folder holds ``train-00000.bin``, ``train-00001.bin``, ... (at most ``shard_tokens`` tokens each),
``val-00000.bin`` and ``meta.json``. Token files are raw little-endian uint16 (vocabulary <= 65536) or uint32.
``meta.json`` records the tokenizer (its full spec), vocabulary size, dtype, the options, the token and document
counts of each split, the cleaning counts (``lit_gpt.corpus.CorpusStats``), and each source's path, size, mtime
and SHA-256.

Pipeline: documents are streamed from the sources (``lit_gpt.corpus.iter_documents``: cleaning, filtering, exact
dedup), cut into pieces at newlines where every tiktoken pattern starts a new pre-token anyway (so the tokens
equal those of the whole document), encoded on ``num_threads`` threads (tiktoken's ``encode_to_numpy``, which
releases the GIL, so encoding overlaps reading and cleaning), and appended to the shards in order. Documents
are joined with the end-of-text token within each split.

Split: with ``val_path``, those sources are the validation split. Otherwise ``split_by="document"`` puts each
document in validation with probability ``val_fraction``, decided by a hash of (``seed``, document index), so it
is deterministic; ``"tail"`` takes the last ``val_fraction`` of the tokens (nanoGPT's split of one text);
``"auto"`` is ``"tail"`` for a corpus that is one document (one ``.txt`` file, no separator), else ``"document"``.

A folder is reused when ``meta.json`` names the same sources (same size and mtime, or else the same SHA-256), the
same tokenizer and the same options; otherwise it is rebuilt. Files are written under temporary names and renamed
into place, ``meta.json`` last, so an interrupted run never leaves a folder that a later run would trust.
No Lightning here: ``lit_gpt.data`` calls this from ``prepare_data``, and ``lit-gpt prepare`` ahead of training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import urllib.request
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from lit_gpt.config import ConfigError
from lit_gpt.corpus import Cleaning, CorpusStats, iter_documents
from lit_gpt.tokenizer import Tokenizer

FORMAT_VERSION = 2
SPLITS = ("train", "val")
SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")
"""File types read from a folder."""
SHARD_TOKENS = 1 << 28
"""Default tokens per training shard (256 Mi: 512 MiB as uint16)."""
PIECE_CHARS = 1 << 18
"""Documents longer than this are encoded in pieces of about this many characters, in parallel."""
BATCH_CHARS = 1 << 23
"""Characters being encoded or waiting to be written at any time: bounds the memory of the pipeline."""
# After a newline that ends a whitespace run, where the next pre-token starts with a non-space or with one space and
# a non-space, GPT-2's, r50k's and cl100k's patterns all split anyway (checked on every shared corpus).
_PIECE_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)|(?<=\n)(?= \S)")


def resolve_sources(path: str | os.PathLike) -> list[Path]:
    """The files that ``path`` names: a file, a folder (its ``.txt``/``.jsonl`` files and their ``.gz`` forms,
    recursively) or a glob pattern. Returns absolute paths in sorted order.

    Raises:
        ConfigError: if nothing matches.
    """
    path = str(path)
    if glob.has_magic(path):
        files = [Path(p) for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
        if not files:
            raise ConfigError(f"no files match the pattern {path!r}")
    elif os.path.isdir(path):
        files = [p for p in Path(path).rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)]
        if not files:
            raise ConfigError(
                f"directory {path!r} has no .txt or .jsonl files (or .gz forms); point --data.path at a file, "
                "folder or glob"
            )
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_record(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


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


def _document_in_val(seed: int, index: int, val_fraction: float) -> bool:
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


def _pieces(text: str) -> Iterator[str]:
    """``text`` in consecutive pieces of about ``PIECE_CHARS`` characters, cut only at token-neutral newlines."""
    start = 0
    while len(text) - start > PIECE_CHARS:
        match = _PIECE_BOUNDARY.search(text, start + PIECE_CHARS)
        if match is None:
            break
        yield text[start : match.start()]
        start = match.start()
    yield text[start:]


class _ShardWriter:
    """Appends token arrays to ``{split}-NNNNN.bin`` files of at most ``shard_tokens`` tokens (temporary names)."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int, suffix: str) -> None:
        self.out_dir, self.split, self.dtype = out_dir, split, dtype
        self.shard_tokens, self.suffix = shard_tokens, suffix
        self.shards: list[int] = []  # token count of each shard
        self.documents = 0
        self._file = None

    @property
    def tokens(self) -> int:
        return sum(self.shards)

    def name(self, index: int) -> str:
        return f"{self.split}-{index:05d}.bin"

    def write(self, ids: np.ndarray) -> None:
        while len(ids):
            if self._file is None or self.shards[-1] == self.shard_tokens:
                if self._file is not None:
                    self._file.close()
                self.shards.append(0)
                self._file = open(self.out_dir / (self.name(len(self.shards) - 1) + self.suffix), "wb")
            room = self.shard_tokens - self.shards[-1]
            part, ids = ids[:room], ids[room:]
            self._file.write(np.ascontiguousarray(part, dtype=self.dtype).tobytes())
            self.shards[-1] += len(part)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def publish(self) -> list[str]:
        """Rename the shards to their final names; returns the names."""
        self.close()
        names = [self.name(i) for i in range(len(self.shards))]
        for name in names:
            os.replace(self.out_dir / (name + self.suffix), self.out_dir / name)
        return names


def _move_tail(train: _ShardWriter, val: _ShardWriter, n_val: int) -> None:
    """Move the last ``n_val`` tokens of the (closed) train shards into ``val``, in order."""
    train.close()
    keep = train.tokens - n_val
    start = 0
    for index, count in enumerate(train.shards):
        end = start + count
        if end > keep:
            path = train.out_dir / (train.name(index) + train.suffix)
            cut = max(0, keep - start)
            val.write(np.memmap(path, dtype=train.dtype, mode="r")[cut:])
            os.truncate(path, cut * train.dtype.itemsize)
            train.shards[index] = cut
        start = end
    while train.shards and train.shards[-1] == 0 and len(train.shards) > 1:
        (train.out_dir / (train.name(len(train.shards) - 1) + train.suffix)).unlink()
        train.shards.pop()


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
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


def prepare(
    path: str | os.PathLike,
    tokenizer: str,
    out_dir: str | os.PathLike,
    val_fraction: float = 0.1,
    *,
    val_path: str | os.PathLike | None = None,
    cleaning: Cleaning | None = None,
    separator: str | None = None,
    text_field: str = "text",
    split_by: str = "auto",
    seed: int = 1337,
    num_threads: int | None = None,
    shard_tokens: int = SHARD_TOKENS,
    progress: bool = False,
) -> dict:
    """Tokenize the corpus at ``path`` into ``out_dir`` unless a fresh preparation is already there.

    Processes on one machine (the ranks of a multi-process run) take turns on ``out_dir``: one prepares, the
    others wait and then find it fresh.

    Args:
        path: a file, a folder of ``.txt``/``.jsonl`` files (and ``.gz`` forms), or a glob.
        tokenizer: ``char`` (a character vocabulary built from the corpus), a tiktoken encoding name, or a folder
            written by ``lit-gpt train-tokenizer``.
        out_dir: folder for the shards and ``meta.json``; created if missing.
        val_fraction: share of the documents (or tail tokens) for validation, in (0, 1); unused with ``val_path``.
        val_path: sources of the validation split (e.g. WikiText's valid.txt), instead of splitting ``path``.
        cleaning, separator, text_field: see ``lit_gpt.corpus``.
        split_by: ``auto``, ``document`` or ``tail`` (see the module docstring).
        seed: seed of the document split.
        num_threads: tiktoken encoding threads; None uses every CPU core.
        shard_tokens: maximum tokens per training shard.
        progress: show a progress bar.
    Returns:
        The metadata dict (as written to ``meta.json``).
    Raises:
        ConfigError: for missing or unreadable sources (see ``lit_gpt.corpus``), a corpus with no text, a split
            left empty, an unknown tokenizer, a bad option, or an ``out_dir`` that cannot be written.
    """
    with _exclusive(Path(out_dir)):
        cleaning = cleaning or Cleaning()
        if val_path is None and not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        if split_by not in ("auto", "document", "tail"):
            raise ConfigError(f"split_by must be 'auto', 'document' or 'tail', got {split_by!r}")
        if shard_tokens < 1:
            raise ConfigError(f"shard_tokens must be positive, got {shard_tokens}")
        sources = resolve_sources(path)
        val_sources = resolve_sources(val_path) if val_path is not None else []
        if split_by == "auto":
            one_document = len(sources) == 1 and sources[0].name.endswith(".txt") and separator is None
            split_by = "tail" if one_document else "document"
        options = {
            "val_fraction": val_fraction, "val_path": val_path is not None, "cleaning": dataclasses.asdict(cleaning),
            "separator": separator, "text_field": text_field, "split_by": split_by, "seed": seed,
            "shard_tokens": shard_tokens,
        }  # fmt: skip
        meta = read_meta(out_dir)
        tok = None if tokenizer == "char" else Tokenizer.from_name(tokenizer)
        if (
            meta
            and meta.get("format") == FORMAT_VERSION
            and meta.get("tokenizer_name") == tokenizer
            and meta.get("options") == options
            and (tok is None or meta.get("tokenizer") == tok.spec)  # a BPE folder may be retrained in place
            and _sources_unchanged(meta.get("sources", []), sources)
            and _sources_unchanged(meta.get("val_sources", []), val_sources)
        ):
            return meta

        def documents(which: list[Path], stats: CorpusStats) -> Iterator[str]:
            return iter_documents(which, cleaning, separator, text_field, stats)

        if tok is None:  # a first pass for the character vocabulary
            chars: set[str] = set()
            for text in documents(sources + val_sources, CorpusStats()):
                chars.update(text)
            tok = Tokenizer.char([chars])
        dtype = token_dtype(tok.vocab_size)
        out_dir = Path(out_dir)
        suffix = f".{os.getpid()}.tmp"
        writers: dict[str, _ShardWriter] = {}
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "meta.json").unlink(missing_ok=True)  # from here on the folder is not trusted until rewritten
            for old in out_dir.glob("*.bin"):
                old.unlink()
            # the validation split stays one file, so its windows cover it exactly once
            writers = {split: _ShardWriter(out_dir, split, dtype, shard_tokens if split == "train" else 1 << 62, suffix)
                       for split in SPLITS}  # fmt: skip
            stats = {"train": CorpusStats(), "val": CorpusStats()}
            _encode_into(tok, documents, sources, val_sources, split_by, val_fraction, seed, writers, stats,
                         num_threads, progress)  # fmt: skip
            if split_by == "tail" and not val_sources:
                _move_tail(writers["train"], writers["val"], max(1, int(round(writers["train"].tokens * val_fraction))))
            for split in SPLITS:
                if writers[split].tokens == 0:
                    raise ConfigError(
                        f"the {split} split of {path} is empty ({stats['train'].documents_kept} documents kept); "
                        "use more text, another val_fraction, or --data.split_by tail"
                    )
            shards = {split: writers[split].publish() for split in SPLITS}
        except BaseException as err:  # a bad input, a full disk, Ctrl-C: leave no temporary files behind
            for writer in writers.values():
                writer.close()
            for leftover in out_dir.glob(f"*{suffix}"):
                leftover.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise ConfigError(
                    f"cannot write the token cache to {out_dir} ({err.strerror}); pass --data.cache_dir"
                ) from None
            raise
        meta = {
            "format": FORMAT_VERSION,
            "tokenizer_name": tokenizer,
            "tokenizer": tok.spec,
            "vocab_size": tok.vocab_size,
            "dtype": dtype.name,
            "options": options,
            "tokens": {split: writers[split].tokens for split in SPLITS},
            "shards": {split: dict(zip(shards[split], writers[split].shards)) for split in SPLITS},
            "documents": {split: writers[split].documents for split in SPLITS},
            "corpus": {split: stats[split].as_dict() for split in SPLITS} if val_sources else stats["train"].as_dict(),
            "sources": [_source_record(p) for p in sources],
            "val_sources": [_source_record(p) for p in val_sources],
        }
        try:
            with open(out_dir / f"meta.json{suffix}", "w") as f:
                json.dump(meta, f, indent=1)
            os.replace(out_dir / f"meta.json{suffix}", out_dir / "meta.json")
        except OSError as err:
            raise ConfigError(f"cannot write {out_dir / 'meta.json'} ({err.strerror}); pass --data.cache_dir") from None
        return meta


def _encode_into(tok, documents, sources, val_sources, split_by, val_fraction, seed, writers, stats, num_threads,
                 progress) -> None:  # fmt: skip
    """Stream every document into the writers, in order.

    tiktoken encodings run on a thread pool (``encode_to_numpy`` releases the GIL and returns the ids as an array),
    so pieces are encoded while the next documents are read and cleaned; at most about ``BATCH_CHARS`` characters
    are in flight. The character tokenizer encodes in this thread.
    """
    bar = tqdm(desc="tokenizing", unit="char", unit_scale=True, disable=not progress)
    pool = ThreadPoolExecutor(num_threads or os.cpu_count() or 1) if tok.encoding is not None else None
    in_flight: deque = deque()  # (split, starts a document, characters, future or token ids)
    in_flight_chars = 0
    eot = np.array([tok.eot_id])

    def encode(text: str):
        if pool is None:
            return tok.encode(text)
        return pool.submit(tok.encoding.encode_to_numpy, text, allowed_special=set(), disallowed_special=())

    def write_oldest() -> None:
        nonlocal in_flight_chars
        split, starts, n_chars, ids = in_flight.popleft()
        writer = writers[split]
        if starts:
            if writer.documents:
                writer.write(eot)
            writer.documents += 1
        writer.write(np.asarray(ids.result() if pool is not None else ids, dtype=writer.dtype))
        in_flight_chars -= n_chars
        bar.update(n_chars)

    streams = [(None, sources, stats["train"])] + ([("val", val_sources, stats["val"])] if val_sources else [])
    index = 0
    try:
        for forced, which, stat in streams:
            for text in documents(which, stat):
                if forced is not None:
                    split = forced
                elif split_by == "document" and not val_sources:
                    split = "val" if _document_in_val(seed, index, val_fraction) else "train"
                else:
                    split = "train"
                index += 1
                for i, piece in enumerate(_pieces(text)):
                    in_flight.append((split, i == 0, len(piece), encode(piece)))
                    in_flight_chars += len(piece)
                    while in_flight_chars > BATCH_CHARS:
                        write_oldest()
        while in_flight:
            write_oldest()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
    if not stats["train"].documents_kept:
        raise ConfigError(f"the corpus has no text: {', '.join(stats['train'].empty_files) or 'nothing kept'}")
    for stat in stats.values():
        if stat.invalid_utf8_bytes_replaced:
            replaced = stat.invalid_utf8_bytes_replaced
            warnings.warn(f"replaced {replaced:,} bytes of invalid UTF-8 with U+FFFD", stacklevel=3)
        if stat.empty_files:
            names = ", ".join(stat.empty_files[:3]) + (" ..." if len(stat.empty_files) > 3 else "")
            warnings.warn(f"skipped {len(stat.empty_files)} file(s) without text: {names}", stacklevel=3)


def load_split(out_dir: str | os.PathLike, split: str, meta: dict, check_ids: bool = True) -> list[np.memmap]:
    """Open the shards of ``split`` read-only as 1-D memmaps of ``meta["dtype"]``, in order.

    With ``check_ids``, every token id is checked to be < ``meta["vocab_size"]`` (read in 16 Mi-token chunks).

    Raises:
        ConfigError: if a shard is missing, its length disagrees with ``meta`` (a truncated or foreign file), or it
            holds an id outside the vocabulary (a corrupt file); the message says to delete the folder to rebuild.
    """
    dtype = np.dtype(meta["dtype"])
    arrays = []
    for name, expected in meta["shards"][split].items():
        file = Path(out_dir) / name
        size = file.stat().st_size if file.exists() else -1
        if size != expected * dtype.itemsize:
            raise ConfigError(
                f"{file} is missing or has {size} bytes, expected {expected} {dtype.name} tokens; "
                f"delete {out_dir} to rebuild"
            )
        array = np.memmap(file, dtype=dtype, mode="r") if expected else np.zeros(0, dtype=dtype)
        if check_ids:
            for start in range(0, len(array), 1 << 24):
                top = int(array[start : start + (1 << 24)].max())
                if top >= meta["vocab_size"]:
                    raise ConfigError(
                        f"{file} is corrupt: token id {top} >= vocab_size {meta['vocab_size']}; "
                        f"delete {out_dir} to rebuild"
                    )
        arrays.append(array)
    return arrays
