"""Tokenizers: tiktoken BPE encodings by name, byte-level BPEs trained by ``lit_gpt.data.bpe``, and a character
vocabulary; and the folder format of a trained BPE.

A tokenizer is fully described by a JSON-able ``spec`` dict (``{"kind": "tiktoken", "name": "gpt2"}``,
``{"kind": "bpe", "name", "pat_str", "special_tokens", "ranks"}`` or ``{"kind": "char", "chars": "..."}``), which
is stored in checkpoints so a trained model can be sampled from with nothing else at hand.

A trained BPE is saved as a folder (``save_bpe``, ``load_bpe``)::

    tokenizer.tiktoken   tiktoken's own format: one ``base64(token bytes) rank`` per line, ranks 0..n-1
    tokenizer.json       {"format": "lit_gpt-bpe", "version": 1, "name", "pat_str", "special_tokens"}

Imports tiktoken and the standard library only (``tokenizers``, which trains BPEs, is imported by
``lit_gpt.data.bpe`` alone).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import tiktoken

from lit_gpt.errors import ConfigError

EOT_TEXT = "<|endoftext|>"
GPT2_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-tokenization regex (``encoder.py`` of openai/gpt-2). tiktoken (fancy-regex) and ``tokenizers``
(Oniguruma) split text identically with it; cl100k's pattern uses ``$``, which the two engines read differently."""
RANKS_FILE, META_FILE = "tokenizer.tiktoken", "tokenizer.json"
"""The two files of a trained-BPE folder (see ``save_bpe``)."""
FORMAT, VERSION = "lit_gpt-bpe", 1


class Tokenizer:
    """Text <-> token ids, with ``vocab_size`` and an end-of-text id (``eot_id``).

    Three kinds (``kind``):
    - ``tiktoken``: a byte-level BPE from tiktoken (``gpt2``, ``r50k_base``, ``cl100k_base``, ...), or any
      ``tiktoken.Encoding`` passed in (tests build a byte-level one in-process). Its spec is the encoding's name.
    - ``bpe``: a byte-level BPE trained by ``lit_gpt.data.bpe`` (a ``tiktoken.Encoding`` passed with ``bpe=True``,
      or a folder given to ``from_name``). Its spec carries the whole vocabulary, so it rebuilds anywhere.
    - ``char``: one id per distinct character of the corpus, in sorted order, plus one end-of-text id after them.

    BPE kinds encode text as ordinary text: a literal "<|endoftext|>" in the input is not turned into the special
    token. Build one with ``Tokenizer.from_name``, ``Tokenizer.char`` or ``Tokenizer.from_spec``.
    """

    def __init__(
        self, encoding: tiktoken.Encoding | None = None, chars: Sequence[str] | None = None, *, bpe: bool = False
    ) -> None:
        if (encoding is None) == (chars is None):
            raise ValueError("pass exactly one of `encoding` (tiktoken) or `chars` (character-level)")
        if bpe and encoding is None:
            raise ValueError("`bpe=True` describes an `encoding` trained by lit_gpt.data.bpe")
        self.encoding = encoding
        self.chars = "".join(chars) if chars is not None else None
        self.kind = "char" if encoding is None else "bpe" if bpe else "tiktoken"
        self._spec: dict | None = None
        if encoding is not None:
            self.name = encoding.name
            self.vocab_size = encoding.n_vocab
            self.eot_id = encoding.eot_token
        else:
            self.name = "char"
            self._stoi = {c: i for i, c in enumerate(self.chars)}
            self.vocab_size = len(self.chars) + 1
            self.eot_id = len(self.chars)

    @classmethod
    def from_name(cls, name: str) -> "Tokenizer":
        """A tiktoken encoding by name (``gpt2``, ``cl100k_base``), or a folder written by ``lit-gpt train-tokenizer``.

        A known tiktoken name wins over a folder of the same name (write ``./gpt2`` for the folder); any other
        existing directory, or a name with a path separator, is read as a BPE folder (``load_bpe``)
        and gives a tokenizer of kind ``bpe``. tiktoken downloads an encoding's files on first use and caches
        them in ``TIKTOKEN_CACHE_DIR``.

        Raises:
            ConfigError: for an unknown name, for ``char`` (built from a corpus by ``Tokenizer.char``), for a
                missing or corrupt BPE folder, or when the encoding's files cannot be downloaded and are not in
                the cache.
        """
        if name == "char":
            raise ConfigError("the 'char' tokenizer is built from a corpus: use Tokenizer.char(texts)")
        known = tiktoken.list_encoding_names()
        looks_like_path = os.sep in name or "/" in name or name.startswith((".", "~"))
        if looks_like_path or (name not in known and os.path.isdir(name)):
            return cls(encoding=load_bpe(os.path.expanduser(name)), bpe=True)
        if name not in known:
            raise ConfigError(
                f"unknown tokenizer {name!r}; choose 'char', a tiktoken encoding ({', '.join(known)}) "
                "or a folder written by `lit-gpt train-tokenizer`"
            )
        try:
            return cls(encoding=tiktoken.get_encoding(name))
        except Exception as err:  # tiktoken raises requests/urllib errors of several kinds when offline
            cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>")
            raise ConfigError(
                f"could not load tiktoken encoding {name!r} ({type(err).__name__}); without network, put its files "
                f"in a folder and set TIKTOKEN_CACHE_DIR to it (now {cache})"
            ) from err

    @classmethod
    def char(cls, texts: Iterable[str]) -> "Tokenizer":
        """A character-level tokenizer over the distinct characters of ``texts`` (sorted by code point)."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls(chars=sorted(chars))

    @classmethod
    def from_spec(cls, spec: dict) -> "Tokenizer":
        """Rebuild a tokenizer from its ``spec`` (as stored in a checkpoint).

        A ``bpe`` spec holds its whole vocabulary (``ranks``: the ``tokenizer.tiktoken`` text), so it needs no
        folder or download.

        Raises:
            ConfigError: if the spec is malformed or corrupt, or names an unknown encoding.
        """
        kind = spec.get("kind") if isinstance(spec, dict) else None
        if kind == "char" and isinstance(spec.get("chars"), str):
            return cls(chars=spec["chars"])
        if kind == "tiktoken" and isinstance(spec.get("name"), str):
            return cls.from_name(spec["name"])
        if kind == "bpe" and isinstance(spec.get("ranks"), str):
            parts = (spec.get("name"), spec.get("pat_str"), spec["ranks"], spec.get("special_tokens"))
            return cls(encoding=build_encoding(*parts, source="the tokenizer spec"), bpe=True)
        raise ConfigError(f"not a lit_gpt tokenizer spec: {spec!r}")

    @property
    def spec(self) -> dict:
        """A JSON-able description from which ``from_spec`` rebuilds this tokenizer.

        For kind ``bpe`` it holds the whole vocabulary as the ranks' text (the ``tokenizer.tiktoken`` format), so
        its size grows with ``vocab_size`` (docs/benchmarks.md gives it for a trained BPE).
        """
        if self.kind == "bpe":
            if self._spec is None:  # built once: serializing the ranks costs O(vocab_size)
                self._spec = {
                    "kind": "bpe",
                    "name": self.name,
                    "pat_str": self.encoding._pat_str,  # tiktoken's attributes (its README extends encodings so)
                    "special_tokens": dict(self.encoding._special_tokens),
                    "ranks": ranks_to_text(self.encoding._mergeable_ranks),
                }
            return dict(self._spec)
        if self.kind == "tiktoken":
            return {"kind": "tiktoken", "name": self.name}
        return {"kind": "char", "chars": self.chars}

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no end-of-text token is added).

        Raises:
            ConfigError: for a character-level tokenizer, if ``text`` has a character outside its vocabulary.
        """
        if self.encoding is not None:
            return self.encoding.encode_ordinary(text)
        try:
            return [self._stoi[c] for c in text]
        except KeyError as err:
            raise ConfigError(
                f"character {err.args[0]!r} is not in this character-level vocabulary of {len(self.chars)} characters"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; the end-of-text id decodes to "<|endoftext|>"."""
        ids = list(ids)
        if self.encoding is not None:
            return self.encoding.decode(ids)
        return "".join(self.chars[i] if i != self.eot_id else EOT_TEXT for i in ids)


def gpt2_byte_to_char() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters (openai/gpt-2 ``bytes_to_unicode``).

    Hugging Face byte-level BPE files (``vocab.json``, ``merges.txt``, ``tokenizers``' ByteLevel) spell tokens in it.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + len(chars) - len(printable))
    return chars


# -----------------------------------------------------------------------------------------------------------------
# Trained-BPE folders: tokenizer.tiktoken (tiktoken's own format) + tokenizer.json


def ranks_to_text(ranks: dict[bytes, int]) -> str:
    """``mergeable_ranks`` in tiktoken's file format: ``base64(token) rank`` per line, by rank."""
    by_rank = sorted(ranks.items(), key=lambda item: item[1])
    return "".join(f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in by_rank)


def ranks_from_text(text: str, source: str) -> dict[bytes, int]:
    """Parse tiktoken's ``base64(token) rank`` lines, checking what ``Encoding`` relies on.

    Raises:
        ConfigError: naming ``source``, for a malformed line, ranks that are not 0..n-1 each once, or a missing
            single byte (which would leave some text unencodable).
    """
    fix = "retrain it with `lit-gpt train-tokenizer`"
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise ConfigError(f"{source} is corrupt at line {number} ({line[:40]!r}); {fix}") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ConfigError(f"{source} is corrupt: its ranks are not 0..{len(ranks) - 1}, each once; {fix}")
    if any(bytes([b]) not in ranks for b in range(256)):
        raise ConfigError(f"{source} is corrupt: some of the 256 single bytes are missing; {fix}")
    return ranks


def build_encoding(name: str, pat_str: str, ranks_text: str, special_tokens: dict, source: str) -> tiktoken.Encoding:
    """A tiktoken ``Encoding`` from the parts a folder or a ``"bpe"`` spec stores.

    Raises:
        ConfigError: naming ``source``, if a part is malformed, ``<|endoftext|>`` is missing, the special ids do
            not directly follow the ranks (as after a truncated ranks file), or tiktoken rejects the regex.
    """
    fix = "retrain it with `lit-gpt train-tokenizer`"
    if not isinstance(name, str) or not isinstance(pat_str, str) or not isinstance(special_tokens, dict):
        raise ConfigError(
            f"{source} is corrupt: name, pat_str and special_tokens must be two strings and a dict; {fix}"
        )
    ranks = ranks_from_text(ranks_text, source)
    if EOT_TEXT not in special_tokens:
        raise ConfigError(f"{source} is corrupt: special_tokens has no {EOT_TEXT}; {fix}")
    # Special ids follow the ranks directly, so a ranks file truncated at a line boundary is caught here.
    if sorted(special_tokens.values()) != list(range(len(ranks), len(ranks) + len(special_tokens))):
        raise ConfigError(
            f"{source} is corrupt: {len(ranks)} ranks, so the special token ids must be {len(ranks)} onwards, "
            f"got {special_tokens} (a truncated ranks file?); {fix}"
        )
    try:
        return tiktoken.Encoding(name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=dict(special_tokens))
    except ValueError as err:  # tiktoken raises ValueError for a regex it cannot compile
        raise ConfigError(f"{source} is corrupt: tiktoken rejects it ({err}); {fix}") from None


def save_bpe(encoding: tiktoken.Encoding, out_dir: str | os.PathLike) -> Path:
    """Write ``tokenizer.tiktoken`` and ``tokenizer.json`` into ``out_dir`` (created if missing); returns it.

    Raises:
        ConfigError: if ``out_dir`` cannot be written.
    """
    out = Path(out_dir)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "name": encoding.name,
        "pat_str": encoding._pat_str,  # tiktoken exposes these only as attributes (see its README on extending)
        "special_tokens": encoding._special_tokens,
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / RANKS_FILE).write_text(ranks_to_text(encoding._mergeable_ranks), encoding="ascii")
        (out / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot write the tokenizer to {out} ({err.strerror}); choose another folder") from None
    return out


def load_bpe(folder: str | os.PathLike) -> tiktoken.Encoding:
    """The ``Encoding`` saved by ``save_bpe`` in ``folder``.

    The ranks file is read directly, not through ``tiktoken.load.load_tiktoken_bpe``, which caches files by path
    in ``TIKTOKEN_CACHE_DIR`` and would keep serving an old copy after the folder is retrained.

    Raises:
        ConfigError: if the folder or either file is missing, unreadable or corrupt, saying what to do.
    """
    folder = Path(folder)
    fix = "retrain it with `lit-gpt train-tokenizer`"
    if not folder.is_dir():
        raise ConfigError(f"tokenizer folder {str(folder)!r} not found; train one with `lit-gpt train-tokenizer`")
    texts = {}
    for file in (RANKS_FILE, META_FILE):
        try:
            texts[file] = (folder / file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{folder} has no {file}, so it is not a lit_gpt BPE folder; {fix}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read {folder / file} ({err}); {fix}") from None
    try:
        meta = json.loads(texts[META_FILE])
    except ValueError:
        raise ConfigError(f"{folder / META_FILE} is not valid JSON; {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ConfigError(f"{folder / META_FILE} is not a {FORMAT} version {VERSION} file; {fix}")
    return build_encoding(
        meta.get("name"), meta.get("pat_str"), texts[RANKS_FILE], meta.get("special_tokens"), str(folder)
    )
