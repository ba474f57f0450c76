"""Tokenizers: tiktoken BPE encodings by name, BPEs trained by ``lit_gpt.bpe``, and a character vocabulary.

A tokenizer is fully described by a JSON-able ``spec`` dict (``{"kind": "tiktoken", "name": "gpt2"}``,
``{"kind": "bpe", "name", "pat_str", "special_tokens", "ranks"}`` or ``{"kind": "char", "chars": "..."}``), which
is stored in checkpoints so a trained model can be sampled from with nothing else at hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import tiktoken

from lit_gpt.config import ConfigError

EOT_TEXT = "<|endoftext|>"


class Tokenizer:
    """Text <-> token ids, with ``vocab_size`` and an end-of-text id (``eot_id``).

    Three kinds (``kind``):
    - ``tiktoken``: a byte-level BPE from tiktoken (``gpt2``, ``r50k_base``, ``cl100k_base``, ...), or any
      ``tiktoken.Encoding`` passed in (tests build a byte-level one in-process). Its spec is the encoding's name.
    - ``bpe``: a byte-level BPE trained by ``lit_gpt.bpe`` (a ``tiktoken.Encoding`` passed with ``bpe=True``,
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
            raise ValueError("`bpe=True` describes an `encoding` trained by lit_gpt.bpe")
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
        existing directory, or a name with a path separator, is read as a BPE folder (``lit_gpt.bpe.load_bpe``)
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
            from lit_gpt.bpe import load_bpe  # lit_gpt.bpe imports this module

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
            from lit_gpt.bpe import build_encoding  # lit_gpt.bpe imports this module

            parts = (spec.get("name"), spec.get("pat_str"), spec["ranks"], spec.get("special_tokens"))
            return cls(encoding=build_encoding(*parts, source="the tokenizer spec"), bpe=True)
        raise ConfigError(f"not a lit_gpt tokenizer spec: {spec!r}")

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> "Tokenizer":
        """The tokenizer stored with a model: a ``.ckpt`` from ``lit-gpt fit``, or a folder from ``lit-gpt export``.

        See ``lit_gpt.checkpoint.load_tokenizer``, to which this delegates.

        Raises:
            ConfigError: if the path is missing, not a lit_gpt checkpoint or export, or names no usable tokenizer.
        """
        from lit_gpt.checkpoint import load_tokenizer  # lit_gpt.checkpoint imports this module

        return load_tokenizer(path)

    @property
    def spec(self) -> dict:
        """A JSON-able description from which ``from_spec`` rebuilds this tokenizer.

        For kind ``bpe`` it holds the ranks as text (about 12 bytes per token: ~25 KB for 2,000 tokens).
        """
        if self.kind == "bpe":
            from lit_gpt.bpe import ranks_to_text  # lit_gpt.bpe imports this module

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
