"""Instruction fine-tuning that proves itself: a task with exact answers, exact-match accuracy before and after.

    python bench/sft_task.py --base runs/tinystories/checkpoints/last.ckpt [--runs full-masked,lora-masked,...] \
        [--steps N] [--out runs/sft-task] [--data data/sft-task] [-- FLAGS]
    python bench/sft_task.py --data_only [--data data/sft-task]
    python bench/sft_task.py --score CHECKPOINT [--data data/sft-task]

The task, in chat form, half each: 2-3 digit addition (``What is 347 + 58?`` -> ``405``; each number has 2 or 3
digits, drawn uniformly) and word reversal (reverse the order of 3 to 6 words drawn from ``WORDS``, written as Alpaca
records: instruction, input, output). ``--data`` gets ``train.jsonl`` (``--n_train``), ``val.jsonl`` (``--n_val``,
for val/loss) and ``test.jsonl`` (``--n_test``), all from one seed; no prompt of val or test is in train.

Runs (``--runs``, each a fresh ``lit-gpt fit --config configs/sft-task.yaml`` process on ``--base``, the TinyStories
model of configs/tinystories.yaml): ``full-masked`` (every weight, the loss on the assistant's tokens only),
``full-unmasked`` (the loss on every token), ``lora-masked`` and ``lora-unmasked`` (rank-16 adapters on every
projection of the frozen base, a higher learning rate). Everything after ``--`` goes to every run.

Reported, as a Markdown table and in ``OUT/results.json``: exact match on the held-out test set (greedy decoding up
to the end of the assistant turn, the answer compared after stripping spaces), for addition, reversal and both,
before fine-tuning (the base) and after each run; the final val/loss; the wall time and peak resident memory of each
training process (Linux ``wait4``: the child's own peak). Time and memory depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lit_gpt.chat import ChatTemplate
from lit_gpt.checkpoint import load_checkpoint
from lit_gpt.data.sft import to_messages
from lit_gpt.generate import iter_tokens, left_pad

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "cat dog sun moon tree ball bird fish cake milk book door girl boy mom dad king frog duck bear cup hat box car "
    "bus sea sky rain snow leaf rock hill park road shop toy bed red blue green pink big small happy sad fast slow "
    "hot cold new old good bad nice soft loud kind brave apple bread juice water fire star cloud flower garden house "
    "friend lion mouse horse sheep pig cow owl bee ant seed egg jam pie shoe sock coat bag pen doll kite boat train "
    "plane river lake beach sand shell"
).split()
"""Words a TinyStories model has seen (the reversal task draws from them)."""
RUNS = {
    "full-masked": [],
    "full-unmasked": ["--data.init_args.mask_prompt", "false"],
    "lora-masked": ["--model.lora.r", "16", "--model.lora.alpha", "32", "--model.learning_rate", "3e-3"],
    "lora-unmasked": ["--model.lora.r", "16", "--model.lora.alpha", "32", "--model.learning_rate", "3e-3"]
    + ["--data.init_args.mask_prompt", "false"],
}
"""Each run's flags over configs/sft-task.yaml."""


def addition(rng: np.random.Generator) -> dict:
    a, b = (int(rng.integers(10, 100) if rng.random() < 0.5 else rng.integers(100, 1000)) for _ in range(2))
    user = {"role": "user", "content": f"What is {a} + {b}?"}
    return {"task": "addition", "messages": [user, {"role": "assistant", "content": str(a + b)}]}


def reversal(rng: np.random.Generator) -> dict:
    words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(3, 7)), replace=False)]
    instruction = "Reverse the order of these words."
    return {"task": "reversal", "instruction": instruction, "input": " ".join(words), "output": " ".join(words[::-1])}


def build_data(out: Path, n_train: int, n_val: int, n_test: int, seed: int) -> None:
    """Write ``train.jsonl``, ``val.jsonl`` and ``test.jsonl`` under ``out``: half addition, half reversal each, the
    prompts of val and test unseen in train (and in each other)."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out.mkdir(parents=True, exist_ok=True)
    for name, size in (("train", n_train), ("val", n_val), ("test", n_test)):
        records = []
        while len(records) < size:
            record = (addition if len(records) % 2 == 0 else reversal)(rng)
            prompt = json.dumps(to_messages(json.dumps(record), name)[:-1])
            if prompt not in seen:
                seen.add(prompt)
                records.append(record)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@torch.no_grad()
def exact_match(checkpoint: str | Path, test: Path, batch_size: int = 100, max_new_tokens: int = 24) -> dict:
    """Greedy answers of ``checkpoint`` to the test prompts, up to the end of the assistant turn (a stop id or
    text of its chat template); the share equal to the expected answer (spaces stripped), per task and in all."""
    model, tokenizer = load_checkpoint(checkpoint)
    template = ChatTemplate(tokenizer)
    records = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines() if line.strip()]
    right: dict[str, list[bool]] = {}
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        conversations = [to_messages(json.dumps(r), str(test)) for r in batch]
        prompts = [template.encode(c[:-1], add_generation_prompt=True) for c in conversations]
        idx, pad = left_pad(prompts, tokenizer.eot_id)
        steps = iter_tokens(
            model, idx, max_new_tokens, temperature=0.0, vocab_size=tokenizer.vocab_size, pad=pad if pad.any() else None
        )
        rows = torch.stack(list(steps), dim=1).tolist()
        for record, conversation, row in zip(batch, conversations, rows):
            answer = _answer(row, tokenizer, template)
            right.setdefault(record["task"], []).append(answer.strip() == conversation[-1]["content"].strip())
    scores = {task: float(np.mean(hits)) for task, hits in sorted(right.items())}
    return {**scores, "all": float(np.mean([hit for hits in right.values() for hit in hits]))}


def _answer(row: list[int], tokenizer, template: ChatTemplate) -> str:
    """The text of generated ids up to the first stop id or stop text."""
    stops = set(template.stop_ids)
    cut = next((i for i, token in enumerate(row) if token in stops), len(row))
    text = tokenizer.decode(row[:cut])
    for stop in template.stop_texts:
        text = text.split(stop)[0]
    return text


def train(name: str, base: str, data: Path, out: Path, steps: int | None, extra: list[str]) -> dict:
    """One ``lit-gpt fit`` of configs/sft-task.yaml in a fresh process; its checkpoint, wall time, peak memory and
    final val/loss."""
    folder = out / name
    args = [sys.executable, "-m", "lit_gpt.cli", "fit", "--config", str(REPO / "configs" / "sft-task.yaml")]
    args += ["--model.init_weights", base, "--data.init_args.tokenizer", base]
    args += ["--data.init_args.path", str(data / "train.jsonl"), "--data.init_args.val_path", str(data / "val.jsonl")]
    args += ["--checkpoint.dirpath", str(folder / "checkpoints"), "--trainer.logger.init_args.save_dir", str(folder)]
    args += [*(["--trainer.max_steps", str(steps)] if steps else []), *RUNS[name], *extra]
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the {name} run failed (exit status {os.waitstatus_to_exitcode(status)})")
    checkpoint = folder / "checkpoints" / "last.ckpt"
    record = torch.load(checkpoint, map_location="cpu", weights_only=True)
    val_loss = next(
        (float(v["best_model_score"]) for k, v in record.get("callbacks", {}).items() if "Checkpoint" in k), None
    )
    return {
        "checkpoint": str(checkpoint),
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "val_loss": val_loss,
    }


def table(results: dict) -> str:
    lines = [
        "| run | addition | reversal | all | best val/loss | time (s) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        em = r["exact_match"]
        loss = f"{r['val_loss']:.4f}" if r.get("val_loss") is not None else "-"
        time_ = f"{r['seconds']:.0f}" if "seconds" in r else "-"
        memory = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        lines.append(
            f"| {name} | {em['addition']:.1%} | {em['reversal']:.1%} | {em['all']:.1%} | {loss} | {time_} | {memory} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="the pretrained checkpoint to fine-tune (configs/tinystories.yaml's)")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: the config's)")
    parser.add_argument("--out", default="runs/sft-task-bench", help="runs and results.json go here")
    parser.add_argument("--data", default="data/sft-task", help="where the records are (written if missing)")
    parser.add_argument("--n_train", type=int, default=40000)
    parser.add_argument("--n_val", type=int, default=400)
    parser.add_argument("--n_test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_only", action="store_true", help="write the records and stop")
    parser.add_argument("--score", help="only score this checkpoint on the test set")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    opts = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    data, out = Path(opts.data), Path(opts.out)
    if not (data / "test.jsonl").is_file() or opts.data_only:
        build_data(data, opts.n_train, opts.n_val, opts.n_test, opts.seed)
    if opts.data_only:
        return
    if opts.score:
        print(json.dumps(exact_match(opts.score, data / "test.jsonl")))
        return
    if not opts.base:
        parser.error("--base is required to fine-tune (or pass --data_only / --score)")
    results = {"before (base)": {"exact_match": exact_match(opts.base, data / "test.jsonl")}}
    print(table(results), flush=True)
    for name in opts.runs.split(","):
        results[name] = train(name, opts.base, data, out, opts.steps, extra)
        results[name]["exact_match"] = exact_match(results[name]["checkpoint"], data / "test.jsonl")
        print(table(results), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
