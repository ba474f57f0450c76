"""The folder format of a byte-level BPE trained by ``lit-gpt train-tokenizer`` (``save_bpe``, ``load_bpe``), and the
tiktoken ``Encoding`` rebuilt from the parts a folder or a ``"bpe"`` tokenizer spec stores (``build_encoding``)::

    tokenizer.tiktoken   tiktoken's own format: one ``base64(token bytes) rank`` per line, ranks 0..n-1
    tokenizer.json       {"format": "lit_gpt-bpe", "version": 1, "name", "pat_str", "special_tokens"}

Imports tiktoken and the standard library only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

import tiktoken

from lit_gpt.errors import ConfigError

EOT_TEXT = "<|endoftext|>"
RANKS_FILE, META_FILE = "tokenizer.tiktoken", "tokenizer.json"
"""The two files of a trained-BPE folder (see ``save_bpe``)."""
FORMAT, VERSION = "lit_gpt-bpe", 1


def is_bpe_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a trained BPE (its ``tokenizer.tiktoken``, or a ``tokenizer.json`` that ``save_bpe``
    wrote), rather than a Hugging Face tokenizer."""
    folder = Path(folder)
    if (folder / RANKS_FILE).is_file():
        return True
    try:
        with open(folder / META_FILE, encoding="utf-8", errors="replace") as f:
            head = f.read(256)  # save_bpe writes "format" first; a Hugging Face tokenizer.json has no such key
    except OSError:
        return False
    return f'"format": "{FORMAT}"' in head


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
