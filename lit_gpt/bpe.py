"""Train a byte-level BPE on your own corpus and keep it as a tiktoken ``Encoding``; ``lit-gpt train-tokenizer``.

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

A trained BPE is saved as a folder::

    tokenizer.tiktoken   tiktoken's own format: one ``base64(token bytes) rank`` per line, ranks 0..n-1
    tokenizer.json       {"format": "lit_gpt-bpe", "version": 1, "name", "pat_str", "special_tokens"}

``Tokenizer.from_name(folder)`` loads it; the tokenizer's ``spec`` (kind ``"bpe"``) carries the same content, so a
checkpoint rebuilds it where the folder does not exist. No Lightning here.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import tiktoken

from lit_gpt.config import ConfigError
from lit_gpt.prepare import resolve_sources
from lit_gpt.tokenizer import EOT_TEXT, Tokenizer, gpt2_byte_to_char

GPT2_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-tokenization regex (``encoder.py`` of openai/gpt-2). tiktoken (fancy-regex) and ``tokenizers``
(Oniguruma) split text identically with it; cl100k's pattern uses ``$``, which the two engines read differently."""
MAX_VOCAB_SIZE = 2**20
"""Upper bound on ``vocab_size`` (cl100k_base has ~100k tokens; a million-token embedding table would dwarf the
models lit_gpt trains, and the corpus rarely has that many distinct pairs)."""
RANKS_FILE, META_FILE = "tokenizer.tiktoken", "tokenizer.json"
FORMAT, VERSION = "lit_gpt-bpe", 1

# A lone newline between two non-space characters is a pre-token of its own under GPT-2's regex (a longer run of
# whitespace is not: "\n\nB" splits as "\n", "\n", "B" but a text ending in "\n\n" keeps them together), so
# splitting after it gives the trainer the same pre-tokens as the whole text (and lets it use threads).
_CHUNK_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)")


def _validate_vocab_size(vocab_size: int) -> None:
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

    _validate_vocab_size(vocab_size)
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
        raise ConfigError("the training corpus is empty; point --data.path at text files")
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
        raise ConfigError(f"cannot write the tokenizer to {out} ({err.strerror}); choose another --out") from None
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


def bytes_per_token(encoding: tiktoken.Encoding, text: str) -> float:
    """Compression of ``text``: UTF-8 bytes divided by tokens (ordinary encoding; higher is better, chars ~1).

    Raises:
        ConfigError: if ``text`` is empty (no tokens to divide by).
    """
    if not text:
        raise ConfigError("cannot measure bytes per token of an empty text")
    return len(text.encode("utf-8")) / len(encoding.encode_ordinary(text))


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one ConfigError line instead of usage + exit
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def _read_corpus(path: str) -> str:
    """The files ``path`` names (see ``lit_gpt.prepare.resolve_sources``), decoded leniently, joined by newlines."""
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in resolve_sources(path))


def main(argv: list[str] | None = None) -> None:
    """``lit-gpt train-tokenizer --data.path PATH --vocab_size N --out DIR [--val_path PATH] [--val_fraction F]``.

    Trains on the corpus (all of it with ``--val_path``, else all but its last ``val_fraction`` of characters),
    saves the folder, and prints the vocabulary size, the training time and the bytes per token of the
    validation text next to GPT-2's.

    Raises:
        ConfigError: for bad arguments, a missing corpus, a bad vocab_size or an unwritable ``--out``.
    """
    parser = _ArgumentParser(prog="lit-gpt train-tokenizer", description="Train a byte-level BPE on a corpus.")
    parser.add_argument("--data.path", dest="path", required=True, help="a text file, a folder of .txt files or a glob")
    parser.add_argument("--vocab_size", type=int, required=True, help="token ids including <|endoftext|> (>= 257)")
    parser.add_argument("--out", required=True, help="folder to write tokenizer.tiktoken and tokenizer.json into")
    parser.add_argument("--val_path", help="text to measure compression on (default: the corpus's held-out tail)")
    parser.add_argument("--val_fraction", type=float, default=0.1, help="held-out tail of the corpus, in (0, 1)")
    parser.add_argument("--name", default="bpe", help="name of the encoding, stored in the folder")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    _validate_vocab_size(args.vocab_size)
    if args.val_path is None and not 0.0 < args.val_fraction < 1.0:
        raise ConfigError(f"--val_fraction must be between 0 and 1 (exclusive), got {args.val_fraction}")

    corpus = _read_corpus(args.path)
    if args.val_path is not None:
        train_text, val_text = corpus, _read_corpus(args.val_path)
    else:
        cut = int(len(corpus) * (1.0 - args.val_fraction))
        train_text, val_text = corpus[:cut], corpus[cut:]
    start = time.perf_counter()
    encoding = train_bpe([train_text], args.vocab_size, name=args.name)
    seconds = time.perf_counter() - start
    out = save_bpe(encoding, args.out)
    print(
        f"trained a byte-level BPE of {encoding.n_vocab} tokens (256 bytes, {encoding.n_vocab - 257} merges, "
        f"{EOT_TEXT}) on {len(train_text.encode('utf-8')):,} bytes in {seconds:.1f} s; saved to {out}"
    )
    if not val_text:
        print("no validation text: compression not measured")
        return
    rows = [(args.name, encoding)]
    try:
        rows.append(("gpt2", Tokenizer.from_name("gpt2").encoding))
    except ConfigError as err:
        rows.append(("gpt2", str(err)))
    n_bytes = len(val_text.encode("utf-8"))
    print(f"compression on {n_bytes:,} bytes of validation text:")
    print(f"{'tokenizer':<16}{'vocab':>8}{'tokens':>12}{'bytes/token':>13}")
    for label, enc in rows:
        if isinstance(enc, str):
            print(f"{label:<16}  unavailable: {enc}")
        else:
            tokens = len(enc.encode_ordinary(val_text))
            print(f"{label:<16}{enc.n_vocab:>8}{tokens:>12,}{n_bytes / tokens:>13.3f}")


if __name__ == "__main__":
    main()
