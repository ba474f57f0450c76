"""Hugging Face tokenizer files for an export (``tokenizer_files``): a Hugging Face tokenizer's own files as its spec
embeds them, or for GPT-2's byte-level BPE ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` rebuilt from
tiktoken's ranks; each with a chat template (ChatML, ``lit_gpt.chat.CHATML``, when the model has none). And the
recognition of GPT-2's vocabulary in a folder's files.

Strings in, strings out: no file is read or written here (``lit_gpt.formats.hf_folder`` does that).
"""

from __future__ import annotations

import json

from lit_gpt.chat import CHATML
from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import EOT_TEXT, Tokenizer, gpt2_byte_to_char

HF_TOKENIZERS = ("gpt2", "r50k_base")
"""tiktoken encodings with a Hugging Face equivalent (GPT-2's byte-level BPE; ``r50k_base`` is the same BPE)."""


def _merge_pair(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The two tokens whose merge made ``token``: BPE on its bytes with only the merges ranked before it."""
    parts = [bytes([b]) for b in token]
    limit = ranks[token]
    while len(parts) > 2:
        rank, i = min((ranks.get(a + b, limit), i) for i, (a, b) in enumerate(zip(parts, parts[1:])))
        if rank >= limit:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} is not a single merge of earlier tokens")
    return parts[0], parts[1]


def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list of a byte-level BPE from its tiktoken ranks (token bytes -> rank; special tokens left out).

    One pair per token longer than one byte, in rank order: the two tokens whose merge made it (tiktoken merges the
    adjacent pair whose concatenation ranks lowest, so a token's pair is found by BPE on its bytes with the merges
    ranked before it). Hugging Face ``merges.txt`` and GGUF's ``tokenizer.ggml.merges`` list these pairs.

    Raises:
        ValueError: if a token is not a single merge of lower-ranked tokens (not a byte-level BPE).
    """
    return [_merge_pair(ranks, token) for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]) if len(token) > 1]


def gpt2_tokenizer_files(tokenizer: Tokenizer, block_size: int) -> dict[str, str]:
    """The texts of ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` of GPT-2's byte-level BPE, by name.

    tiktoken's rank of a token is its GPT-2 id, the 256 single bytes come first and the merges follow in rank
    order, so the merge list is rebuilt from the ranks alone (``_merge_pair``).

    Raises:
        ConfigError: if ``tokenizer`` is not one of ``HF_TOKENIZERS``.
    """
    if tokenizer.encoding is None or tokenizer.name not in HF_TOKENIZERS:
        raise ConfigError(f"the {tokenizer.name!r} tokenizer has no Hugging Face equivalent here")
    encoding, to_char = tokenizer.encoding, gpt2_byte_to_char()
    ranks = {encoding.decode_single_token_bytes(i): i for i in range(encoding.n_vocab) if i != encoding.eot_token}

    def text(token: bytes) -> str:
        return "".join(to_char[b] for b in token)

    vocab = {text(token): i for token, i in ranks.items()}
    vocab[EOT_TEXT] = encoding.eot_token
    merges = bpe_merges(ranks)
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": block_size,
        "add_prefix_space": False,
        "bos_token": EOT_TEXT,
        "eos_token": EOT_TEXT,
        "unk_token": EOT_TEXT,
        "chat_template": CHATML,
    }
    return {
        "vocab.json": json.dumps(vocab, indent=2, ensure_ascii=False) + "\n",
        "merges.txt": "#version: 0.2\n" + "".join(f"{text(a)} {text(b)}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
    }


def has_hf_files(tokenizer: Tokenizer) -> bool:
    """Whether ``tokenizer_files`` writes anything for ``tokenizer``: a Hugging Face tokenizer, or GPT-2's BPE."""
    return tokenizer.kind == "hf" or (tokenizer.encoding is not None and tokenizer.name in HF_TOKENIZERS)


def tokenizer_files(tokenizer: Tokenizer, block_size: int) -> dict[str, str | bytes]:
    """The tokenizer files of an export, by name: for a Hugging Face tokenizer its folder's files as its spec
    embeds them (``tokenizer.json``, ``tokenizer_config.json``, ``tokenizer.model`` ...; a ``tokenizer_config.json``
    without a chat template, or none, gets ``CHATML``), for GPT-2's BPE ``gpt2_tokenizer_files``; else nothing.

    Raises:
        ConfigError: for a corrupt embedded ``tokenizer.model``, or a ``tokenizer_config.json`` that is not JSON.
    """
    if tokenizer.kind != "hf":
        return gpt2_tokenizer_files(tokenizer, block_size) if has_hf_files(tokenizer) else {}
    files = tokenizer.hf.files()
    if tokenizer.chat_template is None:
        text = files.get("tokenizer_config.json", "{}")
        try:
            config = json.loads(text)
        except ValueError:
            raise ConfigError(f"the tokenizer spec's tokenizer_config.json is not JSON: {text[:80]!r}") from None
        if not config:
            config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size}
            config.update({key: value for key, value in tokenizer.special_tokens.items()})
        files["tokenizer_config.json"] = json.dumps({**config, "chat_template": CHATML}, indent=2, ensure_ascii=False)
    return files


def tokenizer_spec_from_vocab(vocab: object) -> dict | None:
    """``{"kind": "tiktoken", "name": "gpt2"}`` if ``vocab`` (a ``vocab.json`` mapping, token text -> id) is
    exactly GPT-2's byte-level BPE, else None."""
    if not isinstance(vocab, dict) or len(vocab) != 50257:
        return None
    gpt2 = Tokenizer.from_name("gpt2").encoding
    char_byte = {c: b for b, c in gpt2_byte_to_char().items()}
    try:
        same = all(
            (i == gpt2.eot_token)
            if text == EOT_TEXT
            else gpt2.decode_single_token_bytes(i) == bytes(map(char_byte.get, text))
            for text, i in vocab.items()
        )
    except (KeyError, TypeError, ValueError):  # a character outside the byte map, or an id outside gpt2's range
        return None
    return {"kind": "tiktoken", "name": "gpt2"} if same else None
