"""``lit-gpt train-tokenizer --data.path PATH --vocab_size N --out DIR [--val_path PATH] [--val_fraction F]``: train a
byte-level BPE on a corpus (``lit_gpt.data.bpe``), save it as a tiktoken folder (``lit_gpt.tokenizer.save_bpe``) and
print its compression next to GPT-2's. No Lightning is imported."""

from __future__ import annotations

import time

import tiktoken

from lit_gpt.cli.args import ArgumentParser
from lit_gpt.data.bpe import train_bpe, validate_vocab_size
from lit_gpt.data.corpus import resolve_sources
from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import EOT_TEXT, Tokenizer, save_bpe


def _read_corpus(path: str) -> str:
    """The files ``path`` names (see ``lit_gpt.data.corpus.resolve_sources``), decoded leniently, joined by
    newlines."""
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in resolve_sources(path))


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lit-gpt train-tokenizer", description="Train a byte-level BPE on a corpus.")
    parser.add_argument("--data.path", dest="path", required=True, help="a text file, a folder of .txt files or a glob")
    parser.add_argument("--vocab_size", type=int, required=True, help="token ids including <|endoftext|> (>= 257)")
    parser.add_argument("--out", required=True, help="folder to write tokenizer.tiktoken and tokenizer.json into")
    parser.add_argument("--val_path", help="text to measure compression on (default: the corpus's held-out tail)")
    parser.add_argument("--val_fraction", type=float, default=0.1, help="held-out tail of the corpus, in (0, 1)")
    parser.add_argument("--name", default="bpe", help="name of the encoding, stored in the folder")
    return parser


def main(args: list[str]) -> None:
    """Train on the corpus (all of it with ``--val_path``, else all but its last ``val_fraction`` of characters),
    save the folder, and print the vocabulary size, the training time and the bytes per token of the validation
    text next to GPT-2's.

    Raises:
        ConfigError: for bad arguments, a missing corpus, a bad vocab_size or an unwritable ``--out``.
    """
    opts = _parser().parse_args(args[1:])
    validate_vocab_size(opts.vocab_size)
    if opts.val_path is None and not 0.0 < opts.val_fraction < 1.0:
        raise ConfigError(f"--val_fraction must be between 0 and 1 (exclusive), got {opts.val_fraction}")

    corpus = _read_corpus(opts.path)
    if opts.val_path is not None:
        train_text, val_text = corpus, _read_corpus(opts.val_path)
    else:
        cut = int(len(corpus) * (1.0 - opts.val_fraction))
        train_text, val_text = corpus[:cut], corpus[cut:]
    start = time.perf_counter()
    encoding = train_bpe([train_text], opts.vocab_size, name=opts.name)
    seconds = time.perf_counter() - start
    out = save_bpe(encoding, opts.out)
    print(
        f"trained a byte-level BPE of {encoding.n_vocab} tokens (256 bytes, {encoding.n_vocab - 257} merges, "
        f"{EOT_TEXT}) on {len(train_text.encode('utf-8')):,} bytes in {seconds:.1f} s; saved to {out}"
    )
    if not val_text:
        print("no validation text: compression not measured")
        return
    _print_compression(val_text, [(opts.name, encoding)])


def _print_compression(text: str, rows: list[tuple[str, tiktoken.Encoding | str]]) -> None:
    """A table of vocabulary size, tokens and bytes per token of ``text`` for each encoding, plus GPT-2's."""
    try:
        rows = [*rows, ("gpt2", Tokenizer.from_name("gpt2").encoding)]
    except ConfigError as err:
        rows = [*rows, ("gpt2", str(err))]
    n_bytes = len(text.encode("utf-8"))
    print(f"compression on {n_bytes:,} bytes of validation text:")
    print(f"{'tokenizer':<16}{'vocab':>8}{'tokens':>12}{'bytes/token':>13}")
    for label, enc in rows:
        if isinstance(enc, str):
            print(f"{label:<16}  unavailable: {enc}")
        else:
            tokens = len(enc.encode_ordinary(text))
            print(f"{label:<16}{enc.n_vocab:>8}{tokens:>12,}{n_bytes / tokens:>13.3f}")
