"""The tokenizer of a Hugging Face folder, for ``lit_gpt.tokenizer.Tokenizer`` (kind ``hf``): its files read into a
spec, and the ``tokenizers`` pipeline, special tokens and chat template that the spec describes.

A folder is read from ``tokenizer.json`` (any ``tokenizers`` pipeline: byte-level BPE as in GPT-2, Llama 3, Qwen2/3
and SmolLM2, BPE with byte fallback, Unigram ...) or, without one, a SentencePiece ``tokenizer.model``, converted as
transformers 5 converts it (``lit_gpt.spm``). Beside it: ``tokenizer_config.json`` (named special tokens, the chat
template, and for a ``tokenizer.model`` ``add_bos_token`` / ``legacy``), ``special_tokens_map.json``,
``chat_template.jinja`` (which wins over the config's template, as in transformers 5) and ``generation_config.json``
(the ids that end a turn).

The spec embeds the files' texts, so a checkpoint rebuilds its tokenizer anywhere and an export writes the same files
back (``lit_gpt.hf_tokenizer``)::

    {"kind": "hf", "name": "org/model", "files": {"tokenizer.json": "...", "tokenizer_config.json": "...", ...},
     "binary": {"tokenizer.model": "<base64>"}, "eos_token_ids": [128001, 128008, 128009]}

Ids follow transformers' ``AutoTokenizer`` on the same folder: ``tokenizer(text)["input_ids"]`` is
``prefix_ids + encode(text) + suffix_ids`` for text without special-token strings (the post-processor's BOS / EOS,
which transformers 5 takes from ``tokenizer.json`` and ignores ``add_bos_token`` for), and ``encode(text,
allow_special=True)`` is ``tokenizer(text, add_special_tokens=False)["input_ids"]``.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from lit_gpt.errors import ConfigError
from lit_gpt.spm import SPECIAL_KEYS, token_content

TEXT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
"""The text files a spec embeds, as they are in the folder."""
LLAMA3_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
"""The pre-tokenizer regex of Llama 3's ``tokenizer.json`` (meta-llama/Llama-3.2-1B)."""
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
"""The pre-tokenizer regex of Qwen2's, Qwen2.5's and Qwen3's ``tokenizer.json``: Llama 3's with single digits."""


def read_folder(folder: Path, name: str) -> dict:
    """The spec of the Hugging Face tokenizer in ``folder``, named ``name``.

    Raises:
        ConfigError: if the folder has neither ``tokenizer.json`` nor ``tokenizer.model``, a file cannot be read or
            is not valid JSON, or the SentencePiece model cannot be converted (``lit_gpt.spm``).
    """
    files = {}
    for file in TEXT_FILES:
        if (folder / file).is_file():
            files[file] = _read(folder / file, lambda path: path.read_text(encoding="utf-8"))
    binary = {}
    if (folder / "tokenizer.model").is_file():
        data = _read(folder / "tokenizer.model", Path.read_bytes)
        binary["tokenizer.model"] = base64.b64encode(data).decode("ascii")
        if "tokenizer.json" not in files:
            from lit_gpt.spm import tokenizer_json

            config = _json(files.get("tokenizer_config.json", "{}"), f"{folder}/tokenizer_config.json")
            files["tokenizer.json"] = tokenizer_json(data, config, str(folder / "tokenizer.model"))
    if "tokenizer.json" not in files:
        raise ConfigError(
            f"{folder} has no tokenizer.tiktoken (`lit-gpt train-tokenizer`), tokenizer.json (Hugging Face "
            "tokenizers) or tokenizer.model (SentencePiece): no tokenizer lit_gpt can use; pass the folder of a "
            "model that has one"
        )
    eos = []
    if (folder / "generation_config.json").is_file():
        path = folder / "generation_config.json"
        ids = _json(_read(path, lambda p: p.read_text(encoding="utf-8")), str(path)).get("eos_token_id")
        eos = [ids] if isinstance(ids, int) else [i for i in ids or [] if isinstance(i, int)]
    return {"kind": "hf", "name": name, "files": files, "binary": binary, "eos_token_ids": eos}


def _read(path: Path, how):
    try:
        return how(path)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path} ({err})") from None


def _json(text: str, source: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(f"{source} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{source} is not a JSON object")
    return value


def _chat_template(files: dict, config: dict) -> str | None:
    """``chat_template.jinja``, else the config's ``chat_template`` (a string, or the ``default`` of a named list)."""
    if "chat_template.jinja" in files:
        return files["chat_template.jinja"]
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def splits_at_newlines(pipeline: dict) -> bool:
    """Whether cutting a text after a newline that follows a non-space, before a non-space or one space and a
    non-space (``lit_gpt.data.encode.pieces``), keeps its ids: true for byte-level pipelines whose pre-tokenizer is
    GPT-2's regex (``ByteLevel`` with ``use_regex``, optionally after ``Digits``, as SmolLM2) or a ``Split`` on
    Llama 3's or Qwen2's regex, with no normalizer but NFC. A pipeline that prepends to each text (``Metaspace``,
    ``add_prefix_space``) or any other is encoded whole."""
    normalizer = pipeline.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        return False
    pre = pipeline.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if len(byte_level) != 1 or byte_level[0].get("add_prefix_space"):
        return False
    splits = [s for s in steps if s.get("type") == "Split"]
    if any(s.get("type") not in ("ByteLevel", "Split", "Digits") for s in steps):
        return False
    if not splits:  # GPT-2's regex inside ByteLevel
        return bool(byte_level[0].get("use_regex", True))
    split = splits[0]
    known = split.get("behavior") == "Isolated" and split.get("pattern", {}).get("Regex") in (
        LLAMA3_PATTERN,
        QWEN2_PATTERN,
    )
    return len(splits) == 1 and known and not byte_level[0].get("use_regex", True)


class HFTokenizer:
    """A ``tokenizers`` pipeline with its folder's special tokens, from a spec (``read_folder``).

    Attributes:
        spec: the spec it was built from.
        named: the named special tokens (``bos_token``, ``eos_token``, ``pad_token`` ...) as text, as transformers'
            ``special_tokens_map`` gives them to chat templates.
        eot_id: the id of ``eos_token`` (else the first of ``eos_token_ids``): documents are separated by it.
        bos_id: the id of ``bos_token``, or None.
        prefix_ids / suffix_ids: what the post-processor adds around a text (``tokenizer(text)``'s BOS / EOS).
        stop_ids: ``eot_id`` and the ``eos_token_id`` of ``generation_config.json``: each ends a generated turn.
        chat_template: the folder's Jinja chat template, or None.
        vocab_size: largest id + 1.
        splits_at_newlines: see ``splits_at_newlines``.

    Raises:
        ConfigError: for a malformed spec, a ``tokenizer.json`` that ``tokenizers`` rejects, or no end-of-text token.
    """

    def __init__(self, spec: dict) -> None:
        from tokenizers import AddedToken, Tokenizer

        files = spec.get("files")
        if not isinstance(files, dict) or not isinstance(files.get("tokenizer.json"), str):
            raise ConfigError(f"not a Hugging Face tokenizer spec (no tokenizer.json): {str(spec)[:200]!r}")
        self.spec, self.name = spec, str(spec.get("name", "hf"))
        config = _json(files.get("tokenizer_config.json", "{}"), "tokenizer_config.json")
        # special_tokens_map.json, when transformers reads it (no added_tokens_decoder), overrides the config
        legacy = {} if "added_tokens_decoder" in config else _json(files.get("special_tokens_map.json", "{}"), "map")
        named = {key: token_content(legacy.get(key, config.get(key))) for key in SPECIAL_KEYS}
        self.named = {key: text for key, text in named.items() if text is not None}
        try:
            self._plain = Tokenizer.from_str(files["tokenizer.json"])
        except Exception as err:  # tokenizers raises a bare Exception for a malformed file
            raise ConfigError(f"{self.name}'s tokenizer.json is not a tokenizers file ({err})") from None
        added = {token.content for token in self._plain.get_added_tokens_decoder().values()}
        missing = [text for text in dict.fromkeys(self.named.values()) if text not in added]
        self._missing = [AddedToken(text, special=True) for text in missing]
        self._plain.add_special_tokens(self._missing)
        self._plain.encode_special_tokens = True  # ordinary text: "<|im_end|>" in a document stays text
        self._special = None
        self.chat_template = _chat_template(files, config)
        self._set_ids([i for i in spec.get("eos_token_ids") or [] if isinstance(i, int)])
        self.splits_at_newlines = splits_at_newlines(json.loads(files["tokenizer.json"]))

    def _set_ids(self, eos_token_ids: list[int]) -> None:
        vocab = self._plain.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        self.bos_id = vocab.get(self.named.get("bos_token"))
        eos = vocab.get(self.named.get("eos_token"))
        self.eot_id = eos if eos is not None else (eos_token_ids[0] if eos_token_ids else None)
        if self.eot_id is None:
            raise ConfigError(
                f"the tokenizer {self.name!r} has no end-of-sequence token (eos_token in tokenizer_config.json, or "
                "eos_token_id in generation_config.json); lit_gpt separates documents with it"
            )
        self.stop_ids = list(dict.fromkeys([self.eot_id, *eos_token_ids]))
        probe = self._plain.encode("a", add_special_tokens=True)
        mask = probe.special_tokens_mask
        start = next((i for i, special in enumerate(mask) if not special), len(mask))
        end = len(mask) - next((i for i, special in enumerate(reversed(mask)) if not special), 0)
        self.prefix_ids, self.suffix_ids = probe.ids[:start], probe.ids[end:]

    def special(self):
        """The pipeline that also matches special tokens in text (built on first use)."""
        if self._special is None:
            from tokenizers import Tokenizer

            special = Tokenizer.from_str(self.spec["files"]["tokenizer.json"])
            special.add_special_tokens(self._missing)
            self._special = special
        return self._special

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Ids of ``text`` without the post-processor's tokens; special tokens written in it are matched only with
        ``allow_special``."""
        tok = self.special() if allow_special else self._plain
        return tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """``encode`` of each text, outside the GIL (``tokenizers``' ``encode_batch``), so threads run in parallel."""
        return [e.ids for e in self._plain.encode_batch(texts, add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
        """``encode(text, allow_special=True)`` and the character where each token starts."""
        encoding = self.special().encode(text, add_special_tokens=False)
        return encoding.ids, [start for start, _ in encoding.offsets]

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``, special tokens included, without transformers' ``clean_up_tokenization_spaces``."""
        return self._plain.decode(ids, skip_special_tokens=False)

    def files(self) -> dict[str, str | bytes]:
        """The folder's tokenizer files, by name: the texts, and ``tokenizer.model``'s bytes when it had one.

        Raises:
            ConfigError: for an embedded ``tokenizer.model`` that is not base64.
        """
        out: dict[str, str | bytes] = dict(self.spec["files"])
        for name, text in (self.spec.get("binary") or {}).items():
            try:
                out[name] = base64.b64decode(text, validate=True)
            except (binascii.Error, TypeError):
                raise ConfigError(f"the tokenizer spec's {name} is not base64") from None
        return out
