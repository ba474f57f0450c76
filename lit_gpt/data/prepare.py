"""Tokenize a corpus once into memory-mapped token shards plus a metadata file; reuse them while valid.

A prepared folder holds ``train-00000.bin``, ``train-00001.bin``, ... (at most ``shard_tokens`` tokens each),
``val-00000.bin`` and ``meta.json``. Token files are raw little-endian uint16 (vocabulary <= 65536) or uint32.
``meta.json`` records the tokenizer (its full spec), vocabulary size, dtype, the options, the token and document
counts of each split, the cleaning counts (``lit_gpt.data.corpus.CorpusStats``), each source's path, size, mtime
and SHA-256, and each shard's verification stamp (size, mtime, SHA-256: ``lit_gpt.data.shards``), so that opening
the shards at a training start reads none of them unless one changed.

Pipeline: documents are streamed from the sources (``lit_gpt.data.corpus.iter_documents``: cleaning, filtering, exact
dedup), cut into pieces at newlines where every tiktoken pattern starts a new pre-token anyway (so the tokens
equal those of the whole document; see ``lit_gpt.data.encode``), encoded on ``num_threads`` threads (tiktoken's
``encode_to_numpy`` or ``tokenizers``' ``encode_batch``, which release the GIL, so encoding overlaps reading and
cleaning), and appended to the shards in order. Documents are joined with the end-of-text token within each split,
each led by the tokenizer's ``document_prefix`` (a Hugging Face tokenizer's BOS, none for the others).

What to prepare is a ``lit_gpt.data.settings.Corpus`` (its sources and options) plus the data section's tokenizer,
seed and threads.

Split: with ``val_path``, those sources are the validation split. Otherwise ``split_by="document"`` puts each
document in validation with probability ``val_fraction``, decided by a hash of (``seed``, document index), so it is
deterministic; ``"tail"`` takes the last ``val_fraction`` of the tokens (nanoGPT's split of one text);
``"auto"`` is ``"tail"`` for a corpus that is one document (one ``.txt`` file, no separator), else ``"document"``.

A folder is reused when ``meta.json`` names the same sources (same size and mtime, or else the same SHA-256), the
same tokenizer and the same options; otherwise it is rebuilt. Files are written under temporary names and renamed
into place, ``meta.json`` last, so an interrupted run never leaves a folder that a later run would trust; a failed
preparation removes the folder (and its lock file) when it created it, and leaves a folder that was there before.
``prepare_corpus`` adds the download of a missing corpus; the data module (``lit_gpt.train.datamodule``) calls it
from ``prepare_data``, and ``lit-gpt prepare`` ahead of training. No Lightning here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from lit_gpt.data.corpus import Cleaning, CorpusStats, download, iter_documents, resolve_sources
from lit_gpt.data.encode import EncodeQueue, pieces
from lit_gpt.data.settings import Corpus
from lit_gpt.data.shards import (  # noqa: F401  (read_meta, load_split and token_dtype are used from here too)
    ShardWriter,
    exclusive,
    load_split,
    move_tail,
    read_meta,
    sha256_file,
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


def _source_record(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}


def _sources_unchanged(recorded: list[dict], sources: list[Path]) -> bool:
    if [r.get("path") for r in recorded] != [str(p) for p in sources]:
        return False
    for record, path in zip(recorded, sources):
        stat = path.stat()
        if (stat.st_size, stat.st_mtime_ns) == (record.get("size"), record.get("mtime_ns")):
            continue  # same size and mtime: trust the recorded hash rather than re-reading the file
        if stat.st_size != record.get("size") or sha256_file(path) != record.get("sha256"):
            return False
    return True


def _document_in_val(seed: int, index: int, val_fraction: float) -> bool:
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


@dataclasses.dataclass
class _Plan:
    """What to prepare: the corpus, its resolved sources and split, the tokenizer, and the options that shape the
    token files."""

    corpus: Corpus
    sources: list[Path]
    val_sources: list[Path]
    tokenizer_name: str
    split_by: str  # "document" or "tail" (the corpus's "auto" resolved)
    seed: int
    shard_tokens: int

    @property
    def cleaning(self) -> Cleaning:
        return self.corpus.cleaning or Cleaning()

    @property
    def options(self) -> dict:
        """The options as recorded in ``meta.json`` (JSON types: tuples as lists); a folder is rebuilt when they
        change."""
        corpus = self.corpus
        options = {
            "val_fraction": corpus.val_fraction,
            "val_path": bool(self.val_sources),
            "cleaning": self.cleaning.recorded(),
            "separator": corpus.separator,
            "text_field": corpus.text_field,
            "split_by": self.split_by,
            "seed": self.seed,
            "shard_tokens": self.shard_tokens,
        }
        return json.loads(json.dumps(options))

    def documents(self, which: list[Path], stats: CorpusStats) -> Iterator[str]:
        return iter_documents(which, self.cleaning, self.corpus.separator, self.corpus.text_field, stats)


def prepare(
    corpus: Corpus,
    tokenizer: str,
    out_dir: str | os.PathLike,
    *,
    seed: int = 1337,
    num_threads: int | None = None,
    shard_tokens: int = SHARD_TOKENS,
    progress: bool = False,
    build: bool = True,
) -> dict:
    """Tokenize ``corpus`` into ``out_dir`` unless a fresh preparation is already there.

    Processes on one machine (the ranks of a multi-process run) take turns on ``out_dir``: one prepares, the
    others wait and then find it fresh.

    Args:
        corpus: the sources and the options that shape the token files (``lit_gpt.data.settings.Corpus``: ``path``,
            ``val_path``, ``val_fraction``, ``separator``, ``text_field``, ``cleaning``, ``split_by``); its
            ``cache_dir``, ``download_url``, ``name`` and ``weight`` are not read here.
        tokenizer: ``char`` (a character vocabulary built from the corpus), a tiktoken encoding name, a folder
            written by ``lit-gpt train-tokenizer``, or a Hugging Face model folder or hub id (``Tokenizer.from_name``).
        out_dir: folder for the shards and ``meta.json``; created if missing.
        seed: seed of the document split.
        num_threads: encoding threads (tiktoken or Hugging Face tokenizers); None uses every CPU core.
        shard_tokens: maximum tokens per training shard.
        progress: show a progress bar.
        build: False checks only: a missing or stale folder raises ConfigError instead of being (re)built (runs on
            several machines, whose locks cannot see each other, prepare ahead with ``lit-gpt prepare``).
    Returns:
        The metadata dict (as written to ``meta.json``).
    Raises:
        ConfigError: for missing or unreadable sources (see ``lit_gpt.data.corpus``), a corpus with no text, a split
            left empty, an unknown tokenizer, a bad ``shard_tokens``, an ``out_dir`` that cannot be written, or
            (with ``build=False``) a folder that is missing or stale.
    """
    with _removed_on_failure(Path(out_dir)), exclusive(Path(out_dir)):
        plan = _plan(corpus, tokenizer, seed, shard_tokens)
        tok = None if tokenizer == "char" else Tokenizer.from_name(tokenizer)
        meta = read_meta(out_dir)
        if _is_fresh(meta, plan, tok):
            return meta
        if not build:
            raise ConfigError(
                f"{out_dir} holds no up-to-date token files for {corpus.path}, and a run on several machines does not "
                "prepare them (each machine's lock sees only its own processes): run `lit-gpt prepare` with the same "
                "config and flags first, on every machine or once on a shared filesystem"
            )
        tok = _char_tokenizer(plan) if tok is None else tok
        return _build(plan, tok, Path(out_dir), num_threads, progress, str(corpus.path))


@contextmanager
def _removed_on_failure(folder: Path) -> Iterator[None]:
    """If the block raises, remove ``folder`` and those of its parents that did not exist on entry, so a failed
    preparation leaves nothing behind that it created (not even the lock file); a folder that existed before is
    never removed, nor one that holds a finished preparation (``meta.json``: another process's, that took turns)."""
    created = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        yield
    except BaseException:
        if created and not (folder / "meta.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            for parent in created[1:]:
                try:
                    parent.rmdir()  # only while empty
                except OSError:
                    break
        raise


def _char_tokenizer(plan: _Plan) -> Tokenizer:
    """A first pass over every source for the character vocabulary."""
    chars: set[str] = set()
    for text in plan.documents(plan.sources + plan.val_sources, CorpusStats()):
        chars.update(text)
    return Tokenizer.char([chars])


def _plan(corpus: Corpus, tokenizer: str, seed: int, shard_tokens: int) -> _Plan:
    """Resolve the sources and the split; raises ConfigError for a bad ``shard_tokens`` or a missing source (the
    corpus checked its own options)."""
    if shard_tokens < 1:
        raise ConfigError(f"shard_tokens must be positive, got {shard_tokens}")
    sources = resolve_sources(corpus.path)
    val_sources = resolve_sources(corpus.val_path) if corpus.val_path is not None else []
    split_by = corpus.split_by
    if split_by == "auto":
        one_document = len(sources) == 1 and sources[0].name.endswith(".txt") and corpus.separator is None
        split_by = "tail" if one_document else "document"
    return _Plan(corpus, sources, val_sources, tokenizer, split_by, seed, shard_tokens)


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
        writers = {
            split: ShardWriter(
                out_dir, split, dtype, plan.shard_tokens if split == "train" else 1 << 62, suffix, tok.vocab_size
            )
            for split in SPLITS
        }
        _encode_into(plan, tok, writers, stats, num_threads, progress)
        if plan.split_by == "tail" and not plan.val_sources:
            n_val = max(1, int(round(writers["train"].tokens * plan.corpus.val_fraction)))
            move_tail(writers["train"], writers["val"], n_val)
        for split in SPLITS:
            if writers[split].tokens == 0:
                raise ConfigError(
                    f"the {split} split of {label} is empty ({stats['train'].documents_kept} documents kept); "
                    "use more text, another val_fraction, or split_by 'tail'"
                )
        digests = {split: writers[split].publish() for split in SPLITS}
    except BaseException as err:  # a bad input, a full disk, Ctrl-C: leave no temporary files behind
        for writer in writers.values():
            writer.close()
        for leftover in out_dir.glob(f"*{suffix}"):
            leftover.unlink(missing_ok=True)
        if isinstance(err, OSError):
            why = err.strerror
            raise ConfigError(
                f"cannot write the token cache to {out_dir} ({why}); set data.cache_dir to a writable folder"
            ) from None
        raise
    meta = {
        "format": FORMAT_VERSION,
        "tokenizer_name": plan.tokenizer_name,
        "tokenizer": tok.spec,
        "vocab_size": tok.vocab_size,
        "dtype": dtype.name,
        "options": plan.options,
        "tokens": {split: writers[split].tokens for split in SPLITS},
        "shards": {split: dict(zip(digests[split], writers[split].shards)) for split in SPLITS},
        "verified": {name: stamp(out_dir / name, sha) for split in SPLITS for name, sha in digests[split].items()},
        "documents": {split: writers[split].documents for split in SPLITS},
        "corpus": {split: stats[split].as_dict() for split in SPLITS} if plan.val_sources else stats["train"].as_dict(),
        "sources": [_source_record(p) for p in plan.sources],
        "val_sources": [_source_record(p) for p in plan.val_sources],
    }
    write_meta(out_dir, meta, suffix)
    return meta


def _split_of(plan: _Plan, index: int) -> str:
    """The split of the ``index``-th document of the training sources."""
    if plan.split_by == "document" and not plan.val_sources:
        return "val" if _document_in_val(plan.seed, index, plan.corpus.val_fraction) else "train"
    return "train"


def _encode_into(
    plan: _Plan,
    tok: Tokenizer,
    writers: dict[str, ShardWriter],
    stats: dict[str, CorpusStats],
    num_threads: int | None,
    progress: bool,
) -> None:
    """Stream every document into the writers, in order.

    tiktoken and Hugging Face tokenizers run on a thread pool (``encode_to_numpy`` and ``encode_batch`` release the
    GIL), so pieces are encoded while the next documents are read and cleaned; at most about
    ``lit_gpt.data.encode.BATCH_CHARS`` characters are in flight. The character tokenizer encodes in this thread.
    """
    bar = tqdm(desc="tokenizing", unit="char", unit_scale=True, disable=not progress)
    threads = tok.encoding is not None or tok.hf is not None
    pool = ThreadPoolExecutor(num_threads or os.cpu_count() or 1) if threads else None
    queue = EncodeQueue(tok, pool, writers, bar)
    streams = [(None, plan.sources, stats["train"])]
    if plan.val_sources:
        streams.append(("val", plan.val_sources, stats["val"]))
    index = 0
    try:
        for forced, which, stat in streams:
            for text in plan.documents(which, stat):
                split = forced or _split_of(plan, index)
                index += 1
                for i, piece in enumerate(pieces(text, tok.splits_at_newlines)):
                    queue.put(split, i == 0, piece)
        queue.drain()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
    _report(stats)


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
    corpus: Corpus,
    tokenizer: str,
    *,
    seed: int = 1337,
    num_threads: int | None = None,
    progress: bool = True,
    build: bool = True,
) -> tuple[str, dict]:
    """Download ``corpus`` if its ``path`` is missing and it has a ``download_url``, then ``prepare`` it; returns
    the folder (``corpus.cache_dir``, default ``default_cache_dir(corpus.path, tokenizer)``) and its metadata.

    ``tokenizer``, ``seed`` and ``num_threads`` are a data section's, shared by the corpora of a mixture
    (``lit_gpt.data.settings.TextData``); ``TextDataModule`` and ``lit-gpt prepare`` call this for each corpus. See
    ``prepare`` for the arguments and the errors; ``build=False`` neither downloads nor tokenizes.
    """
    cache_dir = corpus.cache_dir or default_cache_dir(corpus.path, tokenizer)
    if build and corpus.download_url and not os.path.exists(corpus.path):
        download(corpus.download_url, corpus.path)
    meta = prepare(corpus, tokenizer, cache_dir, seed=seed, num_threads=num_threads, progress=progress, build=build)
    return cache_dir, meta
