"""Tokenizers: tiktoken BPE encodings by name, byte-level BPEs trained by ``lit_gpt.data.bpe``, a character
vocabulary, and the tokenizer of any Hugging Face folder or hub id (``lit_gpt.tokenizer_hf``), behind one class.

A tokenizer is fully described by a JSON-able ``spec`` dict (``{"kind": "tiktoken", "name": "gpt2"}``,
``{"kind": "bpe", "name", "pat_str", "special_tokens", "ranks"}``, ``{"kind": "char", "chars": "..."}`` or
``{"kind": "hf", "name", "files", "binary", "eos_token_ids"}``), which is stored in checkpoints so a trained model can
be sampled from with nothing else at hand: the BPE and Hugging Face kinds embed their vocabulary files.

A trained BPE is saved as a folder by ``save_bpe`` and read by ``load_bpe`` (``lit_gpt.bpe_folder``, re-exported here).
Imports tiktoken and the standard library; ``tokenizers`` (and ``huggingface_hub`` for hub ids) when a Hugging Face
tokenizer is built.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import tiktoken

from lit_gpt import hub
from lit_gpt.bpe_folder import EOT_TEXT, build_encoding, is_bpe_folder, load_bpe, ranks_to_text, save_bpe
from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer_hf import HFTokenizer, read_folder

__all__ = ["EOT_TEXT", "GPT2_PAT_STR", "Tokenizer", "gpt2_byte_to_char", "load_bpe", "save_bpe"]

GPT2_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-tokenization regex (``encoder.py`` of openai/gpt-2). tiktoken (fancy-regex) and ``tokenizers``
(Oniguruma) split text identically with it; cl100k's pattern uses ``$``, which the two engines read differently."""


class Tokenizer:
    """Text <-> token ids, with ``vocab_size`` and an end-of-text id (``eot_id``).

    Four kinds (``kind``):
    - ``tiktoken``: a byte-level BPE from tiktoken (``gpt2``, ``r50k_base``, ``cl100k_base``, ...), or any
      ``tiktoken.Encoding`` passed in (tests build a byte-level one in-process). Its spec is the encoding's name.
    - ``bpe``: a byte-level BPE trained by ``lit_gpt.data.bpe`` (a ``tiktoken.Encoding`` passed with ``bpe=True``,
      or a folder given to ``from_name``). Its spec carries the whole vocabulary, so it rebuilds anywhere.
    - ``char``: one id per distinct character of the corpus, in sorted order, plus one end-of-text id after them.
    - ``hf``: a Hugging Face tokenizer (``lit_gpt.tokenizer_hf.HFTokenizer``, as ``hf``), from a folder or hub id
      given to ``from_name``; ``eot_id`` is its ``eos_token``. Its spec carries the folder's tokenizer files.

    ``encode`` reads text as ordinary text: a literal "<|endoftext|>" (or "<|im_end|>" ...) in the input is not
    turned into the special token unless ``allow_special`` asks. Build one with ``Tokenizer.from_name``,
    ``Tokenizer.char`` or ``Tokenizer.from_spec``.

    Attributes beyond ``name``, ``vocab_size`` and ``eot_id`` (a Hugging Face tokenizer's, else the defaults):
        document_prefix: ids that start every text encoded for a model: the BOS that a Hugging Face tokenizer's
            post-processor adds (Llama 2, Llama 3), as transformers' ``tokenizer(text)`` does; else empty.
        stop_ids: ids that end a generated turn: ``eot_id``, and ``generation_config.json``'s ``eos_token_id``.
        chat_template: the Jinja chat template of a Hugging Face folder; else None (``lit_gpt.chat`` uses ChatML).
        special_tokens: the named special tokens as text (``bos_token``, ``eos_token`` ...) that chat templates
            read; else "<|endoftext|>" for both.
        splits_at_newlines: whether ``lit_gpt.data.encode.pieces`` may cut a document for parallel encoding
            (``lit_gpt.tokenizer_hf.splits_at_newlines``); always for the other kinds.
    """

    def __init__(
        self,
        encoding: tiktoken.Encoding | None = None,
        chars: Sequence[str] | None = None,
        *,
        bpe: bool = False,
        hf: HFTokenizer | None = None,
    ) -> None:
        if sum(x is not None for x in (encoding, chars, hf)) != 1:
            raise ValueError("pass exactly one of `encoding` (tiktoken), `chars` (character-level) or `hf`")
        if bpe and encoding is None:
            raise ValueError("`bpe=True` describes an `encoding` trained by lit_gpt.data.bpe")
        self.encoding, self.hf = encoding, hf
        self.chars = "".join(chars) if chars is not None else None
        self.kind = "hf" if hf is not None else "char" if encoding is None else "bpe" if bpe else "tiktoken"
        self._spec: dict | None = None
        if hf is not None:
            self.name, self.vocab_size, self.eot_id = hf.name, hf.vocab_size, hf.eot_id
        elif encoding is not None:
            self.name = encoding.name
            self.vocab_size = encoding.n_vocab
            self.eot_id = encoding.eot_token
        else:
            self.name = "char"
            self._stoi = {c: i for i, c in enumerate(self.chars)}
            self.vocab_size = len(self.chars) + 1
            self.eot_id = len(self.chars)
        self.document_prefix = list(hf.prefix_ids) if hf is not None else []
        self.stop_ids = list(hf.stop_ids) if hf is not None else [self.eot_id]
        self.chat_template = hf.chat_template if hf is not None else None
        self.special_tokens = dict(hf.named) if hf is not None else {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT}
        self.splits_at_newlines = hf.splits_at_newlines if hf is not None else True

    @classmethod
    def from_name(cls, name: str) -> "Tokenizer":
        """A tiktoken encoding by name (``gpt2``, ``cl100k_base``), a folder written by ``lit-gpt train-tokenizer``,
        or a Hugging Face tokenizer: a model folder (``tokenizer.json`` or ``tokenizer.model``, see
        ``lit_gpt.tokenizer_hf``), its ``tokenizer.json`` / ``tokenizer.model`` file, or a hub id ``org/name``.

        A known tiktoken name wins over a folder of the same name (write ``./gpt2`` for the folder); an existing path
        wins over a hub id (``lit_gpt.hub``). tiktoken downloads an encoding's files on first use and caches them in
        ``TIKTOKEN_CACHE_DIR``.

        Raises:
            ConfigError: for an unknown name, for ``char`` (built from a corpus by ``Tokenizer.char``), for a
                missing or corrupt folder, a folder with no tokenizer file, a hub id neither cached nor
                downloadable, or when a tiktoken encoding's files cannot be downloaded and are not in the cache.
        """
        if name == "char":
            raise ConfigError("the 'char' tokenizer is built from a corpus: use Tokenizer.char(texts)")
        known = tiktoken.list_encoding_names()
        looks_like_path = os.sep in name or "/" in name or name.startswith((".", "~"))
        if looks_like_path or (name not in known and os.path.isdir(name)):
            return _from_folder(os.path.expanduser(name))
        if name not in known:
            raise ConfigError(
                f"unknown tokenizer {name!r}; choose 'char', a tiktoken encoding ({', '.join(known)}), a folder "
                "written by `lit-gpt train-tokenizer`, or a Hugging Face model folder or hub id (org/name)"
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

        A ``bpe`` spec holds its whole vocabulary (``ranks``: the ``tokenizer.tiktoken`` text) and an ``hf`` spec its
        folder's files, so neither needs a folder or download.

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
        if kind == "hf" and isinstance(spec.get("files"), dict):
            return cls(hf=HFTokenizer(spec))
        raise ConfigError(f"not a lit_gpt tokenizer spec: {str(spec)[:300]!r}")

    @property
    def spec(self) -> dict:
        """A JSON-able description from which ``from_spec`` rebuilds this tokenizer.

        For kind ``bpe`` it holds the whole vocabulary as the ranks' text (the ``tokenizer.tiktoken`` format), and for
        kind ``hf`` the folder's tokenizer files, so its size grows with ``vocab_size`` (docs/benchmarks.md gives it
        for a trained BPE).
        """
        if self.kind == "hf":
            return dict(self.hf.spec)
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

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``; nothing is added around it (see ``document_prefix``).

        With ``allow_special`` the tokenizer's special tokens written in ``text`` ("<|endoftext|>", "<|im_start|>"
        ...) become their ids, as a rendered chat template needs (transformers' ``tokenizer(text,
        add_special_tokens=False)``); without it they are ordinary text.

        Raises:
            ConfigError: for a character-level tokenizer, if ``text`` has a character outside its vocabulary.
        """
        if self.hf is not None:
            return self.hf.encode(text, allow_special)
        if self.encoding is not None:
            if allow_special:
                return self.encoding.encode(text, allowed_special="all")
            return self.encoding.encode_ordinary(text)
        if allow_special and EOT_TEXT in text:
            parts = [self.encode(part) for part in text.split(EOT_TEXT)]
            return [i for n, part in enumerate(parts) for i in ([self.eot_id] if n else []) + part]
        try:
            return [self._stoi[c] for c in text]
        except KeyError as err:
            raise ConfigError(
                f"character {err.args[0]!r} is not in this character-level vocabulary of {len(self.chars)} characters"
            ) from None

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
        """``encode(text, allow_special=True)`` and the index of the character where each token starts (a token that
        starts inside a multi-byte character gets that character's index)."""
        if self.hf is not None:
            return self.hf.encode_with_offsets(text)
        ids = self.encode(text, allow_special=True)
        if self.encoding is not None:
            return ids, self.encoding.decode_with_offsets(ids)[1]
        starts, position = [], 0
        for i in ids:
            starts.append(position)
            position += len(EOT_TEXT) if i == self.eot_id else 1
        return ids, starts

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; the end-of-text id decodes to its text ("<|endoftext|>", "</s>" ...)."""
        ids = list(ids)
        if self.hf is not None:
            return self.hf.decode(ids)
        if self.encoding is not None:
            return self.encoding.decode(ids)
        return "".join(self.chars[i] if i != self.eot_id else EOT_TEXT for i in ids)


def _from_folder(path: str) -> Tokenizer:
    """The tokenizer of a folder or hub id: a trained BPE (``tokenizer.tiktoken``) or a Hugging Face one; a path to a
    folder's ``tokenizer.json`` or ``tokenizer.model`` means the folder. Raises ConfigError as ``from_name`` does."""
    missing = f"tokenizer folder {str(path)!r} not found; train one with `lit-gpt train-tokenizer`"
    try:
        folder = hub.resolve(path, hub.TOKENIZER_FILES)
    except hub.NotAvailable as err:
        raise ConfigError(f"{missing}, or pass a Hugging Face model folder; {err}") from None
    if folder.is_file() and folder.name in ("tokenizer.json", "tokenizer.model"):
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{missing}, or pass a Hugging Face model folder or hub id (org/name)")
    if is_bpe_folder(folder):
        return Tokenizer(encoding=load_bpe(folder), bpe=True)
    name = str(path) if hub.is_hub_id(path) else hub.display_name(folder)
    return Tokenizer(hf=HFTokenizer(read_folder(Path(folder), name)))


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
