"""Tokenize a corpus once into memory-mapped token shards plus a metadata file; reuse them while valid.

A prepared folder holds ``train-00000.bin``, ``train-00001.bin``, ... (at most ``shard_tokens`` tokens each),
``val-00000.bin`` and ``meta.json``. Token files are raw little-endian uint16 (vocabulary <= 65536) or uint32.
``meta.json`` records the tokenizer (its full spec), vocabulary size, dtype, the options, the token and document
counts of each split, the cleaning counts (``lit_gpt.data.corpus.CorpusStats``), each source's path, size, mtime
and SHA-256, and each shard's verification stamp (size, mtime, SHA-256: ``lit_gpt.data.shards``), so that opening
the shards at a training start reads none of them unless one changed.

Pipeline: documents are streamed from the sources (``lit_gpt.data.corpus.iter_documents``: cleaning, filtering, exact
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
``prepare_corpus`` adds the download of a missing corpus; the data module (``lit_gpt.train.datamodule``) calls it
from ``prepare_data``, and ``lit-gpt prepare`` ahead of training. No Lightning here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lit_gpt.data.corpus import Cleaning, CorpusStats, download, iter_documents, resolve_sources
from lit_gpt.data.shards import (  # noqa: F401  (read_meta, load_split and token_dtype are used from here too)
    ShardWriter,
    exclusive,
    load_split,
    move_tail,
    read_meta,
    stamp,
    token_dtype,
    write_meta,
)
from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import Tokenizer

FORMAT_VERSION = 2
SPLITS = ("train", "val")
SHARD_TOKENS = 1 << 28
"""Default tokens per training shard (256 Mi: 512 MiB as uint16)."""
PIECE_CHARS = 1 << 18
"""Documents longer than this are encoded in pieces of about this many characters, in parallel."""
BATCH_CHARS = 1 << 23
"""Characters being encoded or waiting to be written at any time: bounds the memory of the pipeline."""
# After a newline that ends a whitespace run, where the next pre-token starts with a non-space or with one space and
# a non-space, GPT-2's, r50k's and cl100k's patterns all split anyway (checked on every shared corpus).
_PIECE_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)|(?<=\n)(?= \S)")


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


@dataclasses.dataclass
class _Plan:
    """What to prepare: the sources, the tokenizer and every option that shapes the token files."""

    sources: list[Path]
    val_sources: list[Path]
    tokenizer_name: str
    cleaning: Cleaning
    separator: str | None
    text_field: str
    split_by: str  # "document" or "tail" ("auto" resolved)
    val_fraction: float
    seed: int
    shard_tokens: int

    @property
    def options(self) -> dict:
        """The options as recorded in ``meta.json`` (JSON types: tuples as lists); a folder is rebuilt when they
        change."""
        return json.loads(json.dumps({
            "val_fraction": self.val_fraction, "val_path": bool(self.val_sources),
            "cleaning": self.cleaning.recorded(), "separator": self.separator, "text_field": self.text_field,
            "split_by": self.split_by, "seed": self.seed, "shard_tokens": self.shard_tokens,
        }))  # fmt: skip

    def documents(self, which: list[Path], stats: CorpusStats) -> Iterator[str]:
        return iter_documents(which, self.cleaning, self.separator, self.text_field, stats)


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
    build: bool = True,
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
        cleaning, separator, text_field: see ``lit_gpt.data.corpus``.
        split_by: ``auto``, ``document`` or ``tail`` (see the module docstring).
        seed: seed of the document split.
        num_threads: tiktoken encoding threads; None uses every CPU core.
        shard_tokens: maximum tokens per training shard.
        progress: show a progress bar.
        build: False checks only: a missing or stale folder raises ConfigError instead of being (re)built (runs on
            several machines, whose locks cannot see each other, prepare ahead with ``lit-gpt prepare``).
    Returns:
        The metadata dict (as written to ``meta.json``).
    Raises:
        ConfigError: for missing or unreadable sources (see ``lit_gpt.data.corpus``), a corpus with no text, a split
            left empty, an unknown tokenizer, a bad option, an ``out_dir`` that cannot be written, or (with
            ``build=False``) a folder that is missing or stale.
    """
    with exclusive(Path(out_dir)):
        plan = _plan(path, tokenizer, val_fraction, val_path, cleaning or Cleaning(), separator, text_field, split_by,
                     seed, shard_tokens)  # fmt: skip
        tok = None if tokenizer == "char" else Tokenizer.from_name(tokenizer)
        meta = read_meta(out_dir)
        if _is_fresh(meta, plan, tok):
            return meta
        if not build:
            raise ConfigError(f"{out_dir} holds no up-to-date token files for {path}, and a run on several machines "
                              "does not prepare them (each machine's lock sees only its own processes): run "
                              "`lit-gpt prepare` with the same config and flags first, on every machine or once on "
                              "a shared filesystem")  # fmt: skip
        tok = _char_tokenizer(plan) if tok is None else tok
        return _build(plan, tok, Path(out_dir), num_threads, progress, str(path))


def _char_tokenizer(plan: _Plan) -> Tokenizer:
    """A first pass over every source for the character vocabulary."""
    chars: set[str] = set()
    for text in plan.documents(plan.sources + plan.val_sources, CorpusStats()):
        chars.update(text)
    return Tokenizer.char([chars])


def _plan(path, tokenizer, val_fraction, val_path, cleaning, separator, text_field, split_by, seed,
          shard_tokens) -> _Plan:  # fmt: skip
    """Check the options and resolve the sources; raises ConfigError for a bad option or a missing source."""
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
    return _Plan(sources, val_sources, tokenizer, cleaning, separator, text_field, split_by, val_fraction, seed,
                 shard_tokens)  # fmt: skip


def _is_fresh(meta: dict | None, plan: _Plan, tok: Tokenizer | None) -> bool:
    """Whether ``meta`` describes this plan's sources, tokenizer and options (a BPE folder may be retrained in place,
    so its spec must match too)."""
    return bool(
        meta
        and meta.get("format") == FORMAT_VERSION
        and meta.get("tokenizer_name") == plan.tokenizer_name
        and meta.get("options") == plan.options
        and (tok is None or meta.get("tokenizer") == tok.spec)
        and _sources_unchanged(meta.get("sources", []), plan.sources)
        and _sources_unchanged(meta.get("val_sources", []), plan.val_sources)
    )


def _build(plan: _Plan, tok: Tokenizer, out_dir: Path, num_threads: int | None, progress: bool, label: str) -> dict:
    """Tokenize into temporary files, rename them into place, then write ``meta.json``; returns the metadata."""
    dtype = token_dtype(tok.vocab_size)
    suffix = f".{os.getpid()}.tmp"
    writers: dict[str, ShardWriter] = {}
    stats = {"train": CorpusStats(), "val": CorpusStats()}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "meta.json").unlink(missing_ok=True)  # from here on the folder is not trusted until rewritten
        for old in out_dir.glob("*.bin"):
            old.unlink()
        # the validation split stays one file, so its windows cover it exactly once
        writers = {split: ShardWriter(out_dir, split, dtype, plan.shard_tokens if split == "train" else 1 << 62,
                                      suffix, tok.vocab_size) for split in SPLITS}  # fmt: skip
        _encode_into(plan, tok, writers, stats, num_threads, progress)
        if plan.split_by == "tail" and not plan.val_sources:
            n_val = max(1, int(round(writers["train"].tokens * plan.val_fraction)))
            move_tail(writers["train"], writers["val"], n_val)
        for split in SPLITS:
            if writers[split].tokens == 0:
                raise ConfigError(
                    f"the {split} split of {label} is empty ({stats['train'].documents_kept} documents kept); "
                    "use more text, another val_fraction, or --data.split_by tail"
                )
        digests = {split: writers[split].publish() for split in SPLITS}
    except BaseException as err:  # a bad input, a full disk, Ctrl-C: leave no temporary files behind
        for writer in writers.values():
            writer.close()
        for leftover in out_dir.glob(f"*{suffix}"):
            leftover.unlink(missing_ok=True)
        if isinstance(err, OSError):
            why = err.strerror
            raise ConfigError(f"cannot write the token cache to {out_dir} ({why}); pass --data.cache_dir") from None
        raise
    meta = {
        "format": FORMAT_VERSION, "tokenizer_name": plan.tokenizer_name, "tokenizer": tok.spec,
        "vocab_size": tok.vocab_size, "dtype": dtype.name, "options": plan.options,
        "tokens": {split: writers[split].tokens for split in SPLITS},
        "shards": {split: dict(zip(digests[split], writers[split].shards)) for split in SPLITS},
        "verified": {name: stamp(out_dir / name, sha) for split in SPLITS for name, sha in digests[split].items()},
        "documents": {split: writers[split].documents for split in SPLITS},
        "corpus": {split: stats[split].as_dict() for split in SPLITS} if plan.val_sources else stats["train"].as_dict(),
        "sources": [_source_record(p) for p in plan.sources],
        "val_sources": [_source_record(p) for p in plan.val_sources],
    }  # fmt: skip
    write_meta(out_dir, meta, suffix)
    return meta


def _split_of(plan: _Plan, index: int) -> str:
    """The split of the ``index``-th document of the training sources."""
    if plan.split_by == "document" and not plan.val_sources:
        return "val" if _document_in_val(plan.seed, index, plan.val_fraction) else "train"
    return "train"


def _encode_into(plan: _Plan, tok: Tokenizer, writers: dict[str, ShardWriter], stats: dict[str, CorpusStats],
                 num_threads: int | None, progress: bool) -> None:  # fmt: skip
    """Stream every document into the writers, in order.

    tiktoken encodings run on a thread pool (``encode_to_numpy`` releases the GIL and returns the ids as an array),
    so pieces are encoded while the next documents are read and cleaned; at most about ``BATCH_CHARS`` characters
    are in flight. The character tokenizer encodes in this thread.
    """
    bar = tqdm(desc="tokenizing", unit="char", unit_scale=True, disable=not progress)
    pool = ThreadPoolExecutor(num_threads or os.cpu_count() or 1) if tok.encoding is not None else None
    queue = _EncodeQueue(tok, pool, writers, bar)
    streams = [(None, plan.sources, stats["train"])]
    if plan.val_sources:
        streams.append(("val", plan.val_sources, stats["val"]))
    index = 0
    try:
        for forced, which, stat in streams:
            for text in plan.documents(which, stat):
                split = forced or _split_of(plan, index)
                index += 1
                for i, piece in enumerate(_pieces(text)):
                    queue.put(split, i == 0, piece)
        queue.drain()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
    _report(stats)


class _EncodeQueue:
    """Pieces being encoded (futures on the pool) in document order; written to the shards oldest first, so at most
    about ``BATCH_CHARS`` characters are in flight."""

    def __init__(self, tok: Tokenizer, pool: ThreadPoolExecutor | None, writers: dict[str, ShardWriter], bar) -> None:
        self.tok, self.pool, self.writers, self.bar = tok, pool, writers, bar
        self.in_flight: deque = deque()  # (split, starts a document, characters, future or token ids)
        self.chars = 0
        self.eot = np.array([tok.eot_id])

    def put(self, split: str, starts_document: bool, piece: str) -> None:
        if self.pool is None:
            ids = self.tok.encode(piece)
        else:
            ids = self.pool.submit(self.tok.encoding.encode_to_numpy, piece, allowed_special=set(),
                                   disallowed_special=())  # fmt: skip
        self.in_flight.append((split, starts_document, len(piece), ids))
        self.chars += len(piece)
        while self.chars > BATCH_CHARS:
            self._write_oldest()

    def drain(self) -> None:
        while self.in_flight:
            self._write_oldest()

    def _write_oldest(self) -> None:
        split, starts, n_chars, ids = self.in_flight.popleft()
        writer = self.writers[split]
        if starts:
            if writer.documents:
                writer.write(self.eot)
            writer.documents += 1
        writer.write(np.asarray(ids.result() if self.pool is not None else ids, dtype=writer.dtype))
        self.chars -= n_chars
        self.bar.update(n_chars)


def _report(stats: dict[str, CorpusStats]) -> None:
    """Raise ConfigError for a corpus without text; warn about replaced bytes and empty files."""
    if not stats["train"].documents_kept:
        raise ConfigError(f"the corpus has no text: {', '.join(stats['train'].empty_files) or 'nothing kept'}")
    for stat in stats.values():
        if stat.invalid_utf8_bytes_replaced:
            replaced = stat.invalid_utf8_bytes_replaced
            warnings.warn(f"replaced {replaced:,} bytes of invalid UTF-8 with U+FFFD", stacklevel=4)
        if stat.empty_files:
            names = ", ".join(stat.empty_files[:3]) + (" ..." if len(stat.empty_files) > 3 else "")
            warnings.warn(f"skipped {len(stat.empty_files)} file(s) without text: {names}", stacklevel=4)


def default_cache_dir(path: str, tokenizer: str) -> str:
    """``data/prepared/<corpus name>-<tokenizer>-<hash of the corpus path>``; a BPE folder is named by its folder name
    and a hash of its absolute path, so two tokenizers never share a cache."""
    key = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
    stem = Path(path.rstrip("/*")).stem or "corpus"
    label = tokenizer
    if os.path.isdir(tokenizer) or "/" in tokenizer or os.sep in tokenizer:
        folder = os.path.abspath(os.path.expanduser(tokenizer))
        label = f"{Path(folder).name}.{hashlib.sha1(folder.encode()).hexdigest()[:6]}"
    return os.path.join("data", "prepared", f"{stem}-{label}-{key}")


def prepare_corpus(
    path: str = "data/tinyshakespeare/input.txt",
    tokenizer: str = "gpt2",
    val_fraction: float = 0.1,
    cache_dir: str | None = None,
    download_url: str | None = None,
    seed: int = 1337,
    val_path: str | None = None,
    separator: str | None = None,
    text_field: str = "text",
    cleaning: Cleaning | None = None,
    split_by: str = "auto",
    num_threads: int | None = None,
    progress: bool = True,
    build: bool = True,
) -> tuple[str, dict]:
    """Download the corpus if it is missing and ``download_url`` is set, then ``prepare`` it; returns the folder
    (``cache_dir``, default ``default_cache_dir(path, tokenizer)``) and its metadata.

    The arguments are those of ``lit_gpt.train.datamodule.TextDataModule`` that decide the token files (the data
    module adds its loader settings), so ``lit-gpt prepare`` reads a training config's ``data`` section with this
    signature, without Lightning. See ``prepare`` for their meaning and the errors; ``build=False`` neither
    downloads nor tokenizes.
    """
    cache_dir = cache_dir or default_cache_dir(path, tokenizer)
    if build and download_url and not os.path.exists(path):
        download(download_url, path)
    meta = prepare(
        path, tokenizer, cache_dir, val_fraction, val_path=val_path, cleaning=cleaning, separator=separator,
        text_field=text_field, split_by=split_by, seed=seed, num_threads=num_threads, progress=progress, build=build,
    )  # fmt: skip
    return cache_dir, meta
