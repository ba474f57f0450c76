"""Corpus preparation throughput: ``lit_gpt.data.prepare.prepare`` against tiktoken's own batch encoder, and its memory.

    TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache python bench/prepare_throughput.py [--threads 2 --repeat 3]
    TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache python bench/prepare_throughput.py --large_mb 300

Default mode, on WikiText-2 train (``--path``, 10.8 MB) with the GPT-2 BPE and ``--threads`` threads for both:

- ``tiktoken batch (prepare's pieces)``: the file is read and cut into the same pieces that ``prepare`` encodes
  (``lit_gpt.data.encode.pieces``: ~256 Ki characters, cut at newlines between two non-space characters, so the
  tokens equal those of the whole text); only ``encoding.encode_ordinary_batch(pieces, num_threads=threads)`` is
  timed. This is the ceiling for ``prepare``: the same encoder on the same pieces, with nothing around it.
  (WikiText lines end with " \n" and start with " ", so prepare's boundary never matches: one piece, one thread.)
- ``tiktoken batch (~256 Ki-char chunks)``: pieces of the same size cut at prepare's boundary or at a newline
  followed by one space and a non-space (also token-neutral): what 2 threads can do on this text.
- ``tiktoken batch (lines)``: the same, with the text cut into lines (``splitlines(keepends=True)``), for
  reference (36,718 tiny pieces; line cuts are not token-neutral, so the token count differs slightly).
- ``prepare``: the whole ``prepare(Corpus(path), "gpt2", tmp, num_threads=threads)`` call into a fresh temporary
  folder, default ``Cleaning`` (control characters, SHA-1 dedup; NFC is opt-in), i.e. reading, cleaning, dedup,
  encoding, the uint16 conversion, the tail split and writing the shards and ``meta.json``.

Each measurement runs ``--repeat`` times, each in its own fresh subprocess; the best time is reported, and the
largest ``ru_maxrss`` of the subprocess (peak resident memory, imports included; ``baseline`` is the RSS after the
imports and loading the encoding, before any text is read). MB are 10^6 bytes of the UTF-8 file.

``--hf FOLDER`` adds the same two measurements for a Hugging Face tokenizer beside tiktoken's, on the same text:
``tokenizers encode_batch`` of prepare's pieces (``RAYON_NUM_THREADS=--threads``; a SentencePiece-style tokenizer,
which prepare encodes whole, gets the whole text) and the whole ``prepare`` call with ``--data.tokenizer FOLDER``.
FOLDER is a Hugging Face model folder, ``llama2`` (the real Llama 2 ``tokenizer.model`` of shared/data, needs the
``sentencepiece`` extra), or ``llama3`` / ``qwen2`` / ``smollm2``: a byte-level BPE in that model's format trained on
the benchmark text with ``--hf_vocab`` tokens (``tests/hf_formats.py``)::

    TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache python bench/prepare_throughput.py --hf llama2
    TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache python bench/prepare_throughput.py --hf llama3 --hf_vocab 32000

``--large_mb N`` instead builds a corpus of about N MB in a temporary folder from copies of the WikiText text,
every document given a per-copy prefix so that dedup keeps all copies, and runs ``prepare`` on it in a
subprocess: ``--layout separator`` (default) writes one big file whose documents (WikiText articles, split at
their `` = Title = `` headings) are separated by ``<|endoftext|>`` and passes ``separator="<|endoftext|>"``;
``--layout files`` writes one file per copy (each file one document). It prints the time, MB/s, tokens/s and the
peak RSS, which stays bounded by the streaming pipeline (a block of the file, one batch of pieces and its tokens,
the dedup digests) rather than growing with the corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext-2" / "train.txt"
SEPARATOR = "<|endoftext|>"


def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


_WIDER_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)|(?<=\n)(?= \S)")


def _chunks(text: str) -> list[str]:
    """Pieces of about ``PIECE_CHARS`` characters cut at prepare's boundary or at a newline followed by one space
    and a non-space (token-neutral for the GPT-2 and cl100k patterns: checked on every corpus in shared/data)."""
    from lit_gpt.data.encode import PIECE_CHARS

    pieces, start = [], 0
    while len(text) - start > PIECE_CHARS:
        match = _WIDER_BOUNDARY.search(text, start + PIECE_CHARS)
        if match is None:
            break
        pieces.append(text[start : match.start()])
        start = match.start()
    pieces.append(text[start:])
    return pieces


def worker(kind: str, path: str, threads: int, tokenizer: str, separator: str | None) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able result."""
    import tiktoken

    from lit_gpt.data.corpus import resolve_sources
    from lit_gpt.data.encode import pieces as _pieces
    from lit_gpt.data.prepare import prepare
    from lit_gpt.data.settings import Corpus

    if tokenizer in tiktoken.list_encoding_names():
        encoding = tiktoken.get_encoding(tokenizer)
        encoding.encode_ordinary("warm up")  # load the ranks before the clock starts (prepare loads them itself too)
    else:
        encoding = _HFEncoding(tokenizer)
    baseline = _current_rss_mb()
    nbytes = sum(p.stat().st_size for p in resolve_sources(path))
    if kind in ("raw", "chunks", "lines"):
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        if kind == "raw":
            pieces = list(_pieces(text, getattr(encoding, "splits_at_newlines", True)))
        elif kind == "chunks":
            pieces = _chunks(text)
        else:
            pieces = text.splitlines(keepends=True)
        start = time.perf_counter()
        encoded = encoding.encode_ordinary_batch(pieces, num_threads=threads)
        seconds = time.perf_counter() - start
        tokens = sum(len(ids) for ids in encoded)
        extra = {"pieces": len(pieces)}
    else:
        with tempfile.TemporaryDirectory() as out_dir:
            start = time.perf_counter()
            meta = prepare(Corpus(path, separator=separator), tokenizer, out_dir, num_threads=threads)
            seconds = time.perf_counter() - start
            shard_bytes = sum(f.stat().st_size for f in Path(out_dir).glob("*.bin"))
        tokens = sum(meta["tokens"].values())
        extra = {"documents": meta["documents"], "shard_bytes": shard_bytes, "split": meta["options"]["split_by"]}
    return {
        "kind": kind,
        "seconds": seconds,
        "bytes": nbytes,
        "tokens": tokens,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _rss_mb(),
        **extra,
    }


class _HFEncoding:
    """A Hugging Face tokenizer with tiktoken's ``encode_ordinary_batch`` (``RAYON_NUM_THREADS`` sets its threads)."""

    def __init__(self, folder: str) -> None:
        from lit_gpt.tokenizer import Tokenizer

        self.tok = Tokenizer.from_name(folder)
        self.splits_at_newlines = self.tok.splits_at_newlines
        self.tok.encode("warm up")

    def encode_ordinary_batch(self, pieces: list[str], num_threads: int) -> list[list[int]]:
        return self.tok.hf.encode_batch(pieces)


def hf_folder(name: str, text_path: str, vocab: int, tmp: Path) -> str:
    """The folder of ``--hf``: as given, Llama 2's real tokenizer.model, or a BPE trained in a model's format."""
    repo = Path(__file__).resolve().parents[1]
    if name not in ("llama2", "llama3", "qwen2", "smollm2"):
        return name
    sys.path.insert(0, str(repo / "tests"))
    if name == "llama2":
        import shutil

        from conftest import LLAMA2_GENERATION_CONFIG, LLAMA2_TOKENIZER_CONFIG, SHARED_DATA

        shutil.copy(SHARED_DATA / "tokenizers" / "llama2" / "tokenizer.model", tmp / "tokenizer.model")
        (tmp / "tokenizer_config.json").write_text(json.dumps(LLAMA2_TOKENIZER_CONFIG))
        (tmp / "generation_config.json").write_text(json.dumps(LLAMA2_GENERATION_CONFIG))
        return str(tmp)
    from hf_formats import build_folder

    return str(build_folder(name, [Path(text_path).read_text(encoding="utf-8")], tmp, vocab))


def run_worker(kind: str, path: str, threads: int, tokenizer: str, separator: str | None = None) -> dict:
    """Run ``worker`` in a fresh Python process (so ru_maxrss is this measurement's alone)."""
    cmd = [
        sys.executable,
        __file__,
        "--_worker",
        kind,
        "--path",
        str(path),
        "--threads",
        str(threads),
        "--tokenizer",
        tokenizer,
    ]
    if separator is not None:
        cmd += ["--_separator", separator]
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def best_of(kind: str, args: argparse.Namespace, separator: str | None = None) -> dict:
    runs = [run_worker(kind, args.path, args.threads, args.tokenizer, separator) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["seconds"])
    best["all_seconds"] = [round(r["seconds"], 3) for r in runs]
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return best


def row(label: str, r: dict) -> str:
    mb_s = r["bytes"] / 1e6 / r["seconds"]
    tok_s = r["tokens"] / r["seconds"]
    return (
        f"| {label} | {r['seconds']:.3f} | {mb_s:.2f} | {tok_s:,.0f} | {r['tokens']:,} | "
        f"{r['baseline_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
    )


def make_large_corpus(source: Path, target_mb: int, folder: Path, layout: str) -> tuple[Path, int, int]:
    """Copies of ``source`` with a per-copy prefix on every document; returns (path to prepare, bytes, copies)."""
    text = source.read_text(encoding="utf-8")
    copies = max(1, round(target_mb * 1e6 / len(text.encode("utf-8"))))
    if layout == "files":
        for i in range(copies):
            (folder / f"copy-{i:04d}.txt").write_text(f"[copy {i}]\n{text}", encoding="utf-8")
        path = folder
    else:
        # WikiText articles start with a line " = Title = " (one '=' on each side) after a blank line
        articles = [a for a in re.split(r"\n(?= = [^=].* = \n)", text) if a.strip()]
        path = folder / "corpus.txt"
        with open(path, "w", encoding="utf-8") as f:
            for i in range(copies):
                f.write(SEPARATOR.join(f"[copy {i}]\n{a}" for a in articles))
                f.write(SEPARATOR)
    nbytes = sum(p.stat().st_size for p in folder.iterdir())
    return path, nbytes, copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", default=str(DEFAULT_PATH), help="the text file to benchmark (WikiText-2 train)")
    parser.add_argument("--threads", type=int, default=2, help="encoding threads, the same for every contender")
    parser.add_argument("--tokenizer", default="gpt2")
    parser.add_argument("--repeat", type=int, default=3, help="fresh subprocesses per measurement; best time")
    parser.add_argument("--large_mb", type=int, default=0, help="build a corpus of about this many MB and prepare it")
    parser.add_argument("--layout", choices=("separator", "files"), default="separator")
    parser.add_argument("--tmp", default=None, help="where to build the large corpus (default: the system's temp)")
    parser.add_argument("--hf", default=None, help="also a Hugging Face tokenizer: a folder, llama2, llama3, ...")
    parser.add_argument("--hf_vocab", type=int, default=32000, help="--hf llama3/qwen2/smollm2: tokens to train")
    parser.add_argument("--_worker", choices=("raw", "chunks", "lines", "prepare"), help=argparse.SUPPRESS)
    parser.add_argument("--_separator", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._worker:
        print(json.dumps(worker(args._worker, args.path, args.threads, args.tokenizer, args._separator)))
        return

    import tiktoken

    header = (
        "| contender | seconds (best) | MB/s | tokens/s | tokens | baseline RSS MiB | peak RSS MiB |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    print(f"tiktoken {tiktoken.__version__}, {args.tokenizer}, {args.threads} threads, {os.cpu_count()} CPUs")
    if args.large_mb:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            start = time.perf_counter()
            path, nbytes, copies = make_large_corpus(Path(args.path), args.large_mb, Path(tmp), args.layout)
            print(
                f"built {nbytes / 1e6:.1f} MB ({copies} copies of {args.path}, layout {args.layout}) "
                f"in {time.perf_counter() - start:.1f} s"
            )
            separator = SEPARATOR if args.layout == "separator" else None
            r = run_worker("prepare", path, args.threads, args.tokenizer, separator)
        print(header)
        print(row(f"prepare, {nbytes / 1e6:.0f} MB ({args.layout})", r))
        print(
            f"documents {r['documents']}, split {r['split']}, shards {r['shard_bytes'] / 1e6:.1f} MB; "
            f"peak RSS {r['peak_rss_mb']:.0f} MiB, {r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} MiB above the "
            f"baseline = {(r['peak_rss_mb'] - r['baseline_rss_mb']) * 2**20 / nbytes:.1%} of the corpus"
        )
        return

    if args.hf:
        compare_hf(args, header)
        return
    raw = best_of("raw", args)
    chunks = best_of("chunks", args)
    lines = best_of("lines", args)
    prep = best_of("prepare", args)
    print(header)
    print(row(f"tiktoken `encode_ordinary_batch`, prepare's pieces ({raw['pieces']})", raw))
    print(row(f"tiktoken `encode_ordinary_batch`, ~256 Ki-char chunks ({chunks['pieces']})", chunks))
    print(row(f"tiktoken `encode_ordinary_batch`, lines ({lines['pieces']:,})", lines))
    print(row("`lit_gpt.data.prepare.prepare` (whole call)", prep))
    print(
        f"times: raw {raw['all_seconds']}, chunks {chunks['all_seconds']}, lines {lines['all_seconds']}, "
        f"prepare {prep['all_seconds']}"
    )
    print(
        f"prepare / tiktoken (pieces), MB/s: {raw['seconds'] / prep['seconds']:.1%}; "
        f"prepare tokens {prep['tokens']:,} = tiktoken tokens {raw['tokens']:,} + {prep['tokens'] - raw['tokens']} "
        f"(end-of-text tokens between documents of each split); documents {prep['documents']}"
    )
    print(f"prepare / tiktoken (~256 Ki-char chunks): {chunks['seconds'] / prep['seconds']:.1%}")


def compare_hf(args: argparse.Namespace, header: str) -> None:
    """tiktoken's rows and a Hugging Face tokenizer's, on the same text and threads."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = hf_folder(args.hf, args.path, args.hf_vocab, Path(tmp))
        print(f"Hugging Face tokenizer {args.hf} ({folder}) ready in {time.perf_counter() - start:.1f} s")
        rows = {"tiktoken": (best_of("raw", args), best_of("prepare", args))}
        args.tokenizer = folder
        rows[args.hf] = (best_of("raw", args), best_of("prepare", args))
    print(header)
    for name, (raw, prep) in rows.items():
        print(row(f"{name}: encoder alone, prepare's pieces ({raw['pieces']})", raw))
        print(row(f"{name}: `prepare` (whole call)", prep))


if __name__ == "__main__":
    main()
