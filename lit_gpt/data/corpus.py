"""Reading a text corpus as documents, streaming, with cleaning, filtering and exact deduplication.

Inputs: ``.txt`` and ``.jsonl`` files and their ``.gz`` forms. A document is a whole ``.txt`` file, or each part
of it between ``separator`` strings (TinyStories separates stories with ``<|endoftext|>``), or one JSONL record
(its ``text_field``). Files are read in blocks of ``BLOCK_CHARS``, so memory holds one document at a time, never a
whole corpus (a file without separators is one document: give huge single files a ``separator``). Invalid UTF-8
is replaced by U+FFFD and counted, never fatal.

Sources: ``resolve_sources`` turns a file, folder or glob into the files to read; ``download`` fetches a missing one.

Cleaning (each a ``Cleaning`` switch, each counted in ``CorpusStats``): Unicode NFC normalization, removal of
control characters (Unicode category Cc except tab, newline and carriage return), whitespace normalization (runs
of spaces and tabs become one space, trailing spaces go, three or more newlines become two), a minimum document
length in characters, and exact deduplication by the SHA-1 of the cleaned document.

Quality filters, all off by default (for corpora that are clean already: Tiny Shakespeare, WikiText, TinyStories):
cheap rules that web-text pipelines apply before training, each a ``Cleaning`` switch with its own count. Words are
runs of non-whitespace (``str.split``), lines are split at ``\n``.

- Gopher's "quality filters" (Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training
  Gopher", appendix A.1.1), with the paper's values in brackets: the number of words ``word_count`` [50, 100,000];
  the mean word length in characters ``mean_word_length`` [3, 10]; the symbol-to-word ratio of ``#`` and of the
  ellipsis (``...`` or U+2026), each at most ``max_symbol_word_ratio`` [0.1]; the share of words with at least one
  letter, at least ``min_alpha_word_fraction`` [0.8]; at least ``min_stop_words`` [2] distinct English stop words of
  "the, be, to, of, and, that, have, with"; and from its repetition rules (table A1) the share of non-empty lines that
  repeat an earlier line of the document, at most ``max_duplicate_line_fraction`` [0.3]. A document failing one is
  dropped and counted under the first rule it fails, in that order.
- C4's line rule (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
  Transformer", section 2.2; the thresholds of TensorFlow Datasets' ``c4_utils``): ``c4_lines`` keeps only lines
  that end in terminal punctuation (``.``, ``!``, ``?``, ``"``) and have at least 5 words; it counts the lines it
  removes, and a document left without text is counted as empty.

Standard library only.
"""

from __future__ import annotations

import codecs
import dataclasses
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import unicodedata
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lit_gpt.errors import ConfigError

BLOCK_CHARS = 1 << 22
"""Characters read from a file at a time (4 Mi)."""
SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")
"""File types read from a folder."""
_READ_ERRORS = (OSError, EOFError, zlib.error)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t]+")
_TRAILING = re.compile(r" +(?=\n|\Z)")
_NEWLINES = re.compile(r"\n{3,}")
_ELLIPSIS = re.compile(r"\.\.\.|\u2026")
_NO_LETTER_WORD = re.compile(r"(?<!\S)(?:(?!\s)[\W\d_])+(?!\S)")  # a whitespace-delimited word without a letter
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
"""Gopher's stop-word rule keeps a document with at least ``min_stop_words`` distinct ones of these."""
C4_TERMINAL = (".", "!", "?", '"')
C4_MIN_LINE_WORDS = 5


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
                f"directory {path!r} has no .txt or .jsonl files (or .gz forms); point data.path at a file, "
                "folder or glob"
            )
    elif os.path.isfile(path):
        files = [Path(path)]
    else:
        raise ConfigError(f"corpus not found: {path!r}; point data.path at a text file, a folder or a glob")
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


@dataclass
class Cleaning:
    """Which cleaning steps to apply to every document (each counted in ``CorpusStats``)."""

    nfc: bool = False
    """Unicode NFC normalization (composed characters), so equal text gives equal tokens. Off by default: it
    rewrites the corpus and slows its preparation; turn it on for text from mixed sources (web pages, PDFs), where
    the same word arrives in several Unicode forms."""
    remove_control: bool = True
    """Drop control characters (Unicode Cc) other than tab, newline and carriage return."""
    normalize_whitespace: bool = False
    """Collapse runs of spaces/tabs to one space, drop trailing spaces, and keep at most one blank line."""
    deduplicate: bool = True
    """Drop exact duplicates of an earlier (cleaned) document."""
    min_chars: int = 0
    """Drop documents shorter than this many characters after cleaning."""
    c4_lines: bool = False
    """C4's line rule: keep only lines ending in ``.``, ``!``, ``?`` or ``"`` with at least 5 words (web pages:
    drops menus, buttons, headings, code); counted in ``lines_removed``."""
    word_count: tuple[int, int] | None = None
    """Keep documents of ``[min, max]`` words (Gopher: ``[50, 100000]``); counted in ``word_count_removed``."""
    mean_word_length: tuple[float, float] | None = None
    """Keep documents whose mean word length in characters is in ``[min, max]`` (Gopher: ``[3, 10]``);
    counted in ``word_length_removed``."""
    max_symbol_word_ratio: float | None = None
    """Drop documents with more ``#`` or more ellipses than this many per word (Gopher: 0.1); counted in
    ``symbol_ratio_removed``."""
    min_alpha_word_fraction: float | None = None
    """Drop documents where fewer than this share of the words hold a letter (Gopher: 0.8); counted in
    ``non_alpha_removed``."""
    min_stop_words: int = 0
    """Drop documents with fewer than this many distinct English stop words (Gopher: 2; English text only);
    counted in ``stop_words_removed``."""
    max_duplicate_line_fraction: float | None = None
    """Drop documents where more than this share of the non-empty lines repeat an earlier line (Gopher: 0.3);
    counted in ``repeated_lines_removed``."""

    def recorded(self) -> dict:
        """The settings as ``meta.json`` records them: the quality filters only when switched on, so a folder
        prepared before they existed stays fresh."""
        settings = dataclasses.asdict(self)
        return {k: v for k, v in settings.items() if k not in _QUALITY_SWITCHES or v != _DEFAULTS[k]}

    @property
    def filters_documents(self) -> bool:
        """Whether a document-level quality filter is on (``quality_failure`` has work to do)."""
        return any(getattr(self, k) != _DEFAULTS[k] for k in _QUALITY_SWITCHES if k != "c4_lines")


@dataclass
class CorpusStats:
    """Counts from one pass over a corpus; ``as_dict()`` goes into the prepared folder's metadata."""

    files: int = 0
    documents_read: int = 0
    documents_kept: int = 0
    duplicates_removed: int = 0
    short_removed: int = 0
    empty_removed: int = 0
    invalid_utf8_bytes_replaced: int = 0
    control_chars_removed: int = 0
    documents_nfc_changed: int = 0
    documents_whitespace_changed: int = 0
    lines_removed: int = 0
    word_count_removed: int = 0
    word_length_removed: int = 0
    symbol_ratio_removed: int = 0
    non_alpha_removed: int = 0
    stop_words_removed: int = 0
    repeated_lines_removed: int = 0
    chars_kept: int = 0
    empty_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def documents_removed(self) -> int:
        """Documents read and not kept, for any reason."""
        quality = sum(getattr(self, name) for name in QUALITY_COUNTS)
        return self.duplicates_removed + self.short_removed + self.empty_removed + quality


_QUALITY_SWITCHES = (
    "c4_lines",
    "word_count",
    "mean_word_length",
    "max_symbol_word_ratio",
    "min_alpha_word_fraction",
    "min_stop_words",
    "max_duplicate_line_fraction",
)
QUALITY_COUNTS = (
    "word_count_removed",
    "word_length_removed",
    "symbol_ratio_removed",
    "non_alpha_removed",
    "stop_words_removed",
    "repeated_lines_removed",
)
"""The ``CorpusStats`` counts of documents dropped by a quality filter, in the order the filters run."""
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Cleaning)}


def _open_text(path: Path, stats: CorpusStats):
    """A text stream over ``path`` (gunzipped if ``.gz``) that replaces and counts invalid UTF-8.

    Raises:
        ConfigError: for a UTF-16/UTF-32 file (by its byte-order mark), a binary one (NUL bytes in its first
            8 KiB) or an unreadable one.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(8192)
    except _READ_ERRORS as err:
        raise ConfigError(f"cannot read {path} ({err}); is it a valid file?") from None
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError(f"{path} is UTF-16 or UTF-32 text; convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)")
    if b"\x00" in head:
        raise ConfigError(f"{path} looks binary (it has NUL bytes); remove it from the corpus")

    def count_and_replace(err: UnicodeDecodeError) -> tuple[str, int]:
        stats.invalid_utf8_bytes_replaced += err.end - err.start
        return "\ufffd" * (err.end - err.start), err.end

    handler = f"lit_gpt_count_{id(stats)}"
    codecs.register_error(handler, count_and_replace)
    return opener(path, "rt", encoding="utf-8-sig", errors=handler, newline="")


def _guarded(path: Path, items) -> Iterator[str]:
    """``items`` (lines or blocks of an open file); a read error midway (a truncated or corrupt .gz) becomes
    ConfigError."""
    it = iter(items)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except _READ_ERRORS as err:
            raise ConfigError(f"cannot read {path} ({err}); is it a valid file?") from None
        yield item


def _blocks(path: Path, stats: CorpusStats) -> Iterator[str]:
    with _open_text(path, stats) as f:
        yield from _guarded(path, iter(lambda: f.read(BLOCK_CHARS), ""))


def _raw_documents(path: Path, separator: str | None, text_field: str, stats: CorpusStats) -> Iterator[str]:
    """The documents of one file, before cleaning."""
    if path.name.removesuffix(".gz").endswith(".jsonl"):
        with _open_text(path, stats) as f:
            for number, line in enumerate(_guarded(path, f), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    raise ConfigError(f"{path}:{number} is not JSON; fix or remove that line") from None
                if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                    raise ConfigError(
                        f"{path}:{number} has no string field {text_field!r}; set data.text_field to the text's key"
                    )
                yield record[text_field]
        return
    if separator is None:  # the whole file is one document
        yield "".join(_blocks(path, stats))
        return
    rest = ""
    for block in _blocks(path, stats):
        parts = (rest + block).split(separator)
        rest = parts.pop()  # may continue in the next block
        yield from parts
    yield rest


def clean(text: str, cleaning: Cleaning, stats: CorpusStats) -> str:
    """``text`` after the enabled cleaning steps, counting what each changed in ``stats``."""
    if cleaning.remove_control:  # before NFC: removing a control character can expose a composable pair
        text, n = _CONTROL.subn("", text)
        stats.control_chars_removed += n
    if cleaning.nfc and not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
        stats.documents_nfc_changed += 1
    if cleaning.normalize_whitespace:
        tidy = _NEWLINES.sub("\n\n", _TRAILING.sub("", _SPACES.sub(" ", text.replace("\r\n", "\n"))))
        stats.documents_whitespace_changed += tidy != text
        text = tidy
    if cleaning.c4_lines:
        lines = text.split("\n")
        kept = [
            line for line in lines if line.rstrip().endswith(C4_TERMINAL) and len(line.split()) >= C4_MIN_LINE_WORDS
        ]
        stats.lines_removed += len(lines) - len(kept)
        text = "\n".join(kept)
    return text


def quality_failure(text: str, cleaning: Cleaning) -> str | None:
    """The ``CorpusStats`` count (one of ``QUALITY_COUNTS``) of the first quality filter that ``text`` fails, or
    None when it passes them all (or none is on). See the module docstring for the rules and their sources."""
    c = cleaning
    words = text.split()
    n = len(words)
    if c.word_count is not None and not c.word_count[0] <= n <= c.word_count[1]:
        return "word_count_removed"
    if c.mean_word_length is not None:
        low, high = c.mean_word_length
        if not n or not low <= sum(map(len, words)) / n <= high:
            return "word_length_removed"
    if c.max_symbol_word_ratio is not None:
        if max(text.count("#"), len(_ELLIPSIS.findall(text))) > c.max_symbol_word_ratio * n:
            return "symbol_ratio_removed"
    if c.min_alpha_word_fraction is not None and n - len(_NO_LETTER_WORD.findall(text)) < c.min_alpha_word_fraction * n:
        return "non_alpha_removed"
    if c.min_stop_words and len(STOP_WORDS.intersection(w.lower() for w in words)) < c.min_stop_words:
        return "stop_words_removed"
    if c.max_duplicate_line_fraction is not None:
        lines = [line for line in text.split("\n") if line.strip()]
        if len(lines) - len(set(lines)) > c.max_duplicate_line_fraction * len(lines):
            return "repeated_lines_removed"
    return None


def iter_documents(
    sources: list[Path],
    cleaning: Cleaning | None = None,
    separator: str | None = None,
    text_field: str = "text",
    stats: CorpusStats | None = None,
) -> Iterator[str]:
    """Yield the cleaned, filtered, deduplicated documents of ``sources`` in order, counting into ``stats``.

    Each document is cleaned (``clean``), then dropped if it is empty (or only whitespace), shorter than
    ``min_chars``, fails a quality filter (``quality_failure``) or repeats an earlier one, counted under the first
    of these; a file that yields no document with text is listed in ``stats.empty_files``.

    Raises:
        ConfigError: for a binary, UTF-16 or unreadable file, or a JSONL line that is not JSON or lacks the field.
    """
    cleaning = cleaning or Cleaning()
    stats = stats if stats is not None else CorpusStats()
    quality = cleaning.filters_documents
    seen: set[bytes] = set()
    for path in sources:
        stats.files += 1
        with_text_before = stats.documents_kept + stats.documents_removed - stats.empty_removed
        for text in _raw_documents(path, separator, text_field, stats):
            stats.documents_read += 1
            text = clean(text, cleaning, stats)
            if not text.strip():
                stats.empty_removed += 1
                continue
            if len(text) < cleaning.min_chars:
                stats.short_removed += 1
                continue
            if quality and (failed := quality_failure(text, cleaning)):
                setattr(stats, failed, getattr(stats, failed) + 1)
                continue
            if cleaning.deduplicate:
                digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()
                if digest in seen:
                    stats.duplicates_removed += 1
                    continue
                seen.add(digest)
            stats.documents_kept += 1
            stats.chars_kept += len(text)
            yield text
        if stats.documents_kept + stats.documents_removed - stats.empty_removed == with_text_before:
            stats.empty_files.append(str(path))
