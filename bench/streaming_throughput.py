"""Tokens per second that the training loaders deliver on their own (no model): the memory-mapped ``TextDataModule``
and ``StreamingTextDataModule`` on a local litdata export with 0, 2 and 4 workers, next to what the
``configs/shakespeare-char.yaml`` model consumes per second in training (the streaming loader should deliver at least
10x that, so that it never makes training wait).

    python bench/streaming_throughput.py [--text ../shared/data/tinystories/train.txt] [--megabytes 20]
        [--tokenizer gpt2] [--block_size 64 --batch_size 12] [--batches 2000 --warmup 100] [--workers 0 2 4]
        [--model_steps 200 --model_warmup 50] [--no_model]

The corpus is ``--text`` repeated to ``--megabytes`` MB in one file (one document, so deduplication keeps it all),
prepared (``lit_gpt.data.prepare``) and exported (``lit-gpt prepare --data.format litdata``, in chunks of
``--chunk_tokens``) into a temporary folder. Each loader yields ``--warmup`` batches untimed (worker start-up,
first chunk reads), then ``--batches`` timed ones of ``batch_size x block_size`` input tokens: the figure is
tokens/s delivered to the training loop, on this process's threads and the loader's workers. Epochs that end
during the timed batches (a small corpus) are included: litdata starts its workers again for each epoch. The model's
consumption is ``bench/train_throughput.py``'s measurement of the config (the machine's precision and compile
choice, validation off) on the same shape. Prints one markdown row per loader and the ratio to the model.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/train_throughput.py


def build_corpus(text: Path, megabytes: float, out: Path) -> Path:
    """``text`` repeated to ``megabytes`` MB, in one file."""
    data = text.read_bytes()
    copies, rest = divmod(int(megabytes * 1e6), len(data))
    with open(out, "wb") as f:
        for _ in range(copies):
            f.write(data)
        f.write(data[:rest])
    return out


def loader_rate(make, batches: int, warmup: int) -> tuple[float, float]:
    """(tokens/s over ``batches`` timed batches after ``warmup``, seconds to the first batch) of the training batches
    of the data module that ``make()`` builds."""
    start = time.perf_counter()
    data = make()
    data.setup("fit")
    stream = iter(data.train_dataloader())
    next(stream)
    first = time.perf_counter() - start
    for _ in range(warmup):
        next(stream)
    tokens, start = 0, time.perf_counter()
    for _ in range(batches):
        x, _ = next(stream)
        tokens += x.numel()
    return tokens / (time.perf_counter() - start), first


def model_rate(text: Path, tokenizer_cache: Path, steps: int, warmup: int, block: int, batch: int) -> float:
    """Training tokens/s of configs/shakespeare-char.yaml's model (bench/train_throughput.py's measurement)."""
    from train_throughput import measure

    extra = [
        "--data.path",
        str(text),
        "--data.cache_dir",
        str(tokenizer_cache),
        "--model.config.block_size",
        str(block),
        "--data.batch_size",
        str(batch),
    ]
    result = measure(str(REPO / "configs" / "shakespeare-char.yaml"), "auto", steps, warmup, extra)
    return result["tokens_per_step"] * result["steps"] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", default=str(REPO.parent / "shared" / "data" / "tinystories" / "train.txt"))
    parser.add_argument("--megabytes", type=float, default=20.0)
    parser.add_argument("--tokenizer", default="gpt2")
    parser.add_argument("--chunk_tokens", type=int, default=1 << 25)
    parser.add_argument("--block_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=12)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--model_steps", type=int, default=200)
    parser.add_argument("--model_warmup", type=int, default=50)
    parser.add_argument("--no_model", action="store_true", help="skip the model's measurement")
    args = parser.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "data" / "tiktoken_cache"))

    from lit_gpt.data.litdata_export import export_litdata
    from lit_gpt.data.prepare import prepare
    from lit_gpt.data.settings import Corpus
    from lit_gpt.train.datamodule import TextDataModule
    from lit_gpt.train.streaming import StreamingTextDataModule

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = build_corpus(Path(args.text), args.megabytes, tmp / "corpus.txt")
        start = time.perf_counter()
        meta = prepare(Corpus(str(corpus), val_fraction=0.01), args.tokenizer, tmp / "prepared")
        export_litdata(str(tmp / "prepared"), meta, str(tmp / "export"), chunk_tokens=args.chunk_tokens)
        print(
            f"corpus: {args.megabytes:g} MB of {Path(args.text).name}, {meta['tokens']['train']:,} training tokens "
            f"({args.tokenizer}), prepared and exported in {time.perf_counter() - start:.1f} s; batches of "
            f"{args.batch_size} x {args.block_size} tokens; torch threads {torch.get_num_threads()}, "
            f"{os.cpu_count()} CPUs\n"
        )
        shape = {"block_size": args.block_size, "batch_size": args.batch_size}
        memmap = {"path": str(corpus), "tokenizer": args.tokenizer, "val_fraction": 0.01}
        memmap["cache_dir"] = str(tmp / "prepared")
        loaders = {"memory-mapped (TextDataModule)": lambda: TextDataModule(**memmap, **shape)}
        for workers in args.workers:
            loaders[f"streaming, {workers} workers"] = lambda w=workers: StreamingTextDataModule(
                input_dir=str(tmp / "export"), num_workers=w, **shape
            )
        rates = {name: loader_rate(make, args.batches, args.warmup) for name, make in loaders.items()}
        model = None
        if not args.no_model:
            shakespeare = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
            model = model_rate(
                shakespeare, tmp / "char", args.model_steps, args.model_warmup, args.block_size, args.batch_size
            )
    print("| loader | tokens/s | first batch (s) | x shakespeare-char training |\n|---|---:|---:|---:|")
    for name, (rate, first) in rates.items():
        ratio = f"{rate / model:.0f}x" if model else "-"
        print(f"| {name} | {rate:,.0f} | {first:.2f} | {ratio} |")
    if model:
        print(f"| shakespeare-char model, training (consumes) | {model:,.0f} | | 1x |")


if __name__ == "__main__":
    main()
