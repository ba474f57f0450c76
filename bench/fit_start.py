"""How long a second ``lit-gpt fit`` on an already prepared ~300 MB corpus takes to start training: from the process
start, and from the moment the model is built, to the first training step. The first start after preparation reads
the corpus's sources' sizes and mtimes and its shards' stamps only (``lit_gpt.data.shards``); before the stamps,
every start read every token to check it. The issue's target: <= 5 s after the model is built.

    python bench/fit_start.py [--megabytes 300] [--tokenizer char] [--repeats 3] [--work DIR]

The corpus is the shared TinyStories and WikiText-2 text repeated in one file until its token shards hold
``--megabytes`` MB (uint16: half as many tokens), in a temporary folder (or ``--work``, kept for another run).
``lit-gpt prepare`` tokenizes it once (timed, and exported for streaming too); then each kind of start runs
``lit-gpt fit --config configs/tiny.yaml --trainer.max_steps 1`` ``--repeats`` times in fresh processes:

- ``memory-mapped``: the default ``TextDataModule`` (freshness check of the sources, stamps of the shards);
- ``memory-mapped, --data.verify true``: the same, reading every shard again (what every start cost before);
- ``streaming``: ``StreamingTextDataModule`` on the local litdata export (reads ``meta.json`` and the validation
  split, opens the training chunks).

Timestamps come from the child process: a wrapper around ``lit_gpt.model.GPT.__init__`` (the model is built) and
around ``LitGPT.on_train_batch_start`` (the first step starts); the process start is taken by the parent just before
it starts the child. The page cache is warm (the corpus was just written); a start after a reboot reads the shards
from disk only under ``--data.verify true``. Prints the median and range of each, in a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SOURCES = [
    SHARED / "tinystories" / "train.txt",
    SHARED / "tinystories" / "valid.txt",
    SHARED / "wikitext-2" / "train.txt",
]
PROBE = """
import functools, json, sys, time
from lit_gpt import model
from lit_gpt.train import module
marks = {}
build = model.GPT.__init__
@functools.wraps(build)
def built(self, *args, **kwargs):
    build(self, *args, **kwargs)
    marks["model_built"] = time.time()
model.GPT.__init__ = built
start = module.LitGPT.on_train_batch_start
def first_step(self, batch, batch_idx):
    marks.setdefault("first_step", time.time())
    return start(self, batch, batch_idx)
module.LitGPT.on_train_batch_start = first_step
from lit_gpt.cli import main
try:
    main(sys.argv[1:])
finally:
    print("MARKS " + json.dumps(marks), file=sys.stderr)
"""


def build_corpus(megabytes: float, out: Path) -> Path:
    """The shared sources repeated in one file to about ``megabytes`` MB of uint16 token shards with a character
    vocabulary (one character per token: ``megabytes / 2`` million characters)."""
    data = b"\n\n".join(path.read_bytes() for path in SOURCES)
    copies, rest = divmod(int(megabytes * 1e6 / 2), len(data))
    with open(out, "wb") as f:
        for _ in range(copies):
            f.write(data)
        f.write(data[:rest])
    return out


def timed_start(args: list[str]) -> tuple[float, float]:
    """(seconds from the process start to the first step, seconds from the model built to the first step) of
    ``lit-gpt ARGS`` in a fresh interpreter."""
    start = time.time()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"lit-gpt {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    marks = json.loads(done.stderr.rsplit("MARKS ", 1)[1].splitlines()[0])
    return marks["first_step"] - start, marks["first_step"] - marks["model_built"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=300.0, help="size of the training token shards")
    parser.add_argument("--tokenizer", default="char")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", help="folder for the corpus and its preparation (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / "corpus.txt"
        if not corpus.exists():
            build_corpus(args.megabytes, corpus)
        data = [
            "--data.path",
            str(corpus),
            "--data.tokenizer",
            args.tokenizer,
            "--data.val_fraction",
            "0.01",
            "--data.cache_dir",
            str(work / "prepared"),
            "--data.download_url",
            "null",
        ]
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "lit_gpt.cli",
                "prepare",
                *data,
                "--data.format",
                "litdata",
                "--out",
                str(work / "export"),
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        shards = sum(p.stat().st_size for p in (work / "prepared").glob("train-*.bin"))
        print(
            f"corpus: {corpus.stat().st_size / 1e6:.0f} MB of text -> {shards / 1e6:.0f} MB of training shards "
            f"({args.tokenizer}), prepared and exported in {time.perf_counter() - start:.0f} s\n"
        )
        common = [
            "fit",
            "--config",
            str(REPO / "configs" / "tiny.yaml"),
            "--trainer.max_steps",
            "1",
            "--trainer.logger.init_args.save_dir",
            str(work / "runs"),
            "--checkpoint.dirpath",
            str(work / "ckpt"),
            "--samples.max_new_tokens",
            "0",
        ]
        starts = {
            "memory-mapped": [*common, *data],
            "memory-mapped, --data.verify true": [*common, *data, "--data.verify", "true"],
            "streaming": [
                *common,
                "--data.class_path",
                "lit_gpt.train.streaming.StreamingTextDataModule",
                "--data.input_dir",
                str(work / "export"),
            ],
        }
        print("| start | process start -> first step (s) | model built -> first step (s) |\n|---|---:|---:|")
        for name, fit_args in starts.items():
            runs = [timed_start(fit_args) for _ in range(args.repeats)]
            cells = []
            for values in zip(*runs):
                cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
            print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
