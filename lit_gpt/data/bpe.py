"""Train a byte-level BPE on your own corpus and keep it as a tiktoken ``Encoding`` (``lit-gpt train-tokenizer``).

Byte-pair encoding (Sennrich et al. 2016, https://arxiv.org/abs/1508.07909) starts from single symbols and
repeatedly merges the most frequent adjacent pair into a new token. GPT-2 (Radford et al. 2019) runs it on UTF-8
bytes, so the 256 single bytes are all in the vocabulary and any text encodes with no unknown token, and first
splits text with a regex (``GPT2_PAT_STR``) so that merges never cross word, number or punctuation boundaries.

Training uses Hugging Face ``tokenizers`` (imported only when training); the result is converted to a tiktoken
``Encoding`` (``mergeable_ranks``: token bytes -> rank, where a token's rank is its id and its merge priority),
which is what the rest of lit_gpt encodes with. tiktoken merges the adjacent pair whose concatenation has the
lowest rank, ``tokenizers`` the pair learned earliest; the trainer gives the ``i``-th merge the new token
``256 + i`` and both split text with the same GPT-2 regex, so tiktoken returns the trainer's own token ids
(``tests/test_bpe.py`` checks this on TinyStories stories). ``<|endoftext|>`` is the last id.

A trained BPE is saved as a folder by ``lit_gpt.tokenizer.save_bpe`` (the format lives there, with the reader
``Tokenizer.from_name(folder)`` uses); this module only trains. No Lightning here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import tiktoken

from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import EOT_TEXT, GPT2_PAT_STR, gpt2_byte_to_char

MAX_VOCAB_SIZE = 2**20
"""Upper bound on ``vocab_size`` (cl100k_base has ~100k tokens; a million-token embedding table would dwarf the
models lit_gpt trains, and the corpus rarely has that many distinct pairs)."""
# A lone newline between two non-space characters is a pre-token of its own under GPT-2's regex (a longer run of
# whitespace is not: "\n\nB" splits as "\n", "\n", "B" but a text ending in "\n\n" keeps them together), so
# splitting after it gives the trainer the same pre-tokens as the whole text (and lets it use threads).
_CHUNK_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)")


def validate_vocab_size(vocab_size: int) -> None:
    """Raise ConfigError unless ``vocab_size`` is an integer from 257 (256 bytes + end-of-text) to
    ``MAX_VOCAB_SIZE``."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 257 <= vocab_size <= MAX_VOCAB_SIZE:
        raise ConfigError(
            f"vocab_size must be an integer from 257 (256 bytes + {EOT_TEXT}) to {MAX_VOCAB_SIZE}, got {vocab_size!r}"
        )


def _chunks(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        yield from _CHUNK_BOUNDARY.split(text)


def train_hf_bpe(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE with Hugging Face ``tokenizers``; returns its ``tokenizers.Tokenizer``.

    Ids 0-255 are the single bytes (in the ByteLevel alphabet's order), merges take ids from 256 in the order they
    were learned, and ``<|endoftext|>`` is added last, at ``vocab_size - 1`` when the corpus had enough distinct
    pairs (training stops early, with a smaller vocabulary, when it runs out of pairs).

    Args:
        texts: documents; no merge crosses a document boundary.
        vocab_size: number of token ids, end-of-text included; 257 to ``MAX_VOCAB_SIZE``.
    Raises:
        ConfigError: for a bad ``vocab_size``, or when ``texts`` hold no text at all.
    """
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    validate_vocab_size(vocab_size)
    seen = {"chars": 0}

    def counted() -> Iterator[str]:
        for chunk in _chunks(texts):
            seen["chars"] += len(chunk)
            yield chunk

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT2_PAT_STR), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),  # bytes -> printable characters
        ]
    )
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # the end-of-text token is added after training, as the last id
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even those the corpus lacks
        show_progress=False,
    )
    hf.train_from_iterator(counted(), trainer)
    if not seen["chars"]:
        raise ConfigError("the training corpus is empty; point data.path at text files")
    hf.add_special_tokens([AddedToken(EOT_TEXT, special=True)])
    return hf


def encoding_from_hf(hf, name: str = "bpe") -> tiktoken.Encoding:
    """The tiktoken ``Encoding`` of a ``tokenizers`` byte-level BPE trained by ``train_hf_bpe`` (same token ids).

    Raises:
        ValueError: if the tokenizer is not such a BPE (ids not contiguous, a single byte missing).
    """
    unicode_to_byte = {c: b for b, c in gpt2_byte_to_char().items()}
    vocab = hf.get_vocab(with_added_tokens=False)
    ranks = {bytes(unicode_to_byte[c] for c in token): rank for token, rank in vocab.items()}
    if sorted(ranks.values()) != list(range(len(ranks))) or any(bytes([b]) not in ranks for b in range(256)):
        raise ValueError("not a byte-level BPE from train_hf_bpe: ids are not 0..n-1 or a single byte is missing")
    return tiktoken.Encoding(name, pat_str=GPT2_PAT_STR, mergeable_ranks=ranks, special_tokens={EOT_TEXT: len(ranks)})


def train_bpe(texts: Iterable[str], vocab_size: int, name: str = "bpe") -> tiktoken.Encoding:
    """Train a byte-level BPE (GPT-2's recipe) on ``texts`` and return it as a tiktoken ``Encoding``.

    Args:
        texts: documents (strings); no merge crosses a document boundary.
        vocab_size: number of token ids including ``<|endoftext|>``; 257 (bytes only, no merges) to
            ``MAX_VOCAB_SIZE``. A corpus with too few distinct pairs gives a smaller vocabulary (``n_vocab``).
        name: the encoding's name (shown in messages and stored in the tokenizer spec).
    Returns:
        An ``Encoding`` with ``pat_str=GPT2_PAT_STR``, ranks 0..n-2 (bytes first, then merges in training order)
        and ``special_tokens={"<|endoftext|>": n - 1}``, where n is ``n_vocab``.
    Raises:
        ConfigError: for a bad ``vocab_size`` or an empty corpus.
    """
    return encoding_from_hf(train_hf_bpe(texts, vocab_size), name)


def bytes_per_token(encoding: tiktoken.Encoding, text: str) -> float:
    """Compression of ``text``: UTF-8 bytes divided by tokens (ordinary encoding; higher is better, chars ~1).

    Raises:
        ConfigError: if ``text`` is empty (no tokens to divide by).
    """
    if not text:
        raise ConfigError("cannot measure bytes per token of an empty text")
    return len(text.encode("utf-8")) / len(encoding.encode_ordinary(text))
