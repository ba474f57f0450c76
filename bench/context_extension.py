"""Context extension on WikiText-2: perplexity at 256 / 512 / 1024 / 2048 tokens of a model trained at 256, with no
scaling, with Position Interpolation, dynamic NTK and YaRN without training, with PI and YaRN after fine-tuning at
2048, and of a model trained at 1024 from scratch on the tokens of the base and one fine-tune together.

    python bench/context_extension.py [--out runs/context_extension] [--base_steps 200] [--finetune_steps 100]
        [--factor 8] [--lengths 256 512 1024 2048] [--eval_chars 100000]

Every run is the recipe's own command (``lit-gpt fit --config configs/wikitext2-long.yaml ...``, in a fresh
process, printed as it starts): the base (block 256, batch 8), each fine-tune (``--model.init_weights`` the base,
``--model.config.block_size`` = factor x 256 with a ``--model.config.rope_scaling``, batch 1), and the 1024 model
(batch 2); every step is 2048 tokens, so token counts compare directly. Compile is off (these runs are too short
for it to pay off); the precision is the machine's choice. The evaluations run in this process, as ``lit-gpt
evaluate`` does (``lit_gpt.cli.loading.override_context``, ``lit_gpt.evaluate``): the first ``--eval_chars``
characters of WikiText-2's valid.txt (whole lines), scored in windows of L tokens advancing by L / 2, so every
token after the first window has at least L / 2 tokens of context; a model is run at a length past its block_size
with ``block_size`` raised (plain RoPE extrapolates), and the scalings without training are applied to the base the
same way. ``by_position`` (``lit_gpt.evaluate.loss_by_position``) records each row's loss per position bucket at
the longest length.

Results: ``OUT/context_extension.json`` (every perplexity, the commands, the settings) and
``OUT/context_extension.md`` (the table and the goal: the YaRN fine-tune's perplexity at 4x the training length
within 1.05x of its perplexity at 1x, and the unscaled base worse at 4x). Finished runs and evaluations are kept
in ``OUT`` and skipped when the script runs again, so an interrupted table resumes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/wikitext2-long.yaml"
VALID = REPO.parent / "shared" / "data" / "wikitext-2" / "valid.txt"
BASE_BLOCK = 256
TOKENS_PER_STEP = 2048


def fit(name: str, out: Path, steps: int, flags: list[str], log: list[dict]) -> Path:
    """``lit-gpt fit`` of one model into ``out/name`` (skipped when its last.ckpt exists); its last checkpoint."""
    checkpoint = out / name / "last.ckpt"
    command = [
        sys.executable,
        "-m",
        "lit_gpt.cli",
        "fit",
        "--config",
        CONFIG,
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        str(steps),
        "--trainer.enable_progress_bar",
        "false",
        "--model.compile",
        "false",
        "--samples.max_new_tokens",
        "0",
        "--checkpoint.dirpath",
        str(out / name),
        "--trainer.logger.init_args.save_dir",
        str(out / "runs"),
        "--trainer.logger.init_args.name",
        name,
        *flags,
    ]
    log.append({"run": name, "steps": steps, "tokens": steps * TOKENS_PER_STEP, "command": command[2:]})
    if checkpoint.is_file():
        print(f"{name}: {checkpoint} exists, not trained again", flush=True)
        return checkpoint
    print(f"{name}: lit-gpt {' '.join(command[3:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed (log in {out / name}.log):\n{done.stderr[-3000:]}")
    print(f"{name}: trained in {time.perf_counter() - start:.0f} s", flush=True)
    return checkpoint


def scaling(kind: str, factor: int) -> str:
    """The ``--model.config.rope_scaling`` YAML of a scaling of the 256-token base by ``factor``."""
    return f"{{type: {kind}, factor: {factor}, original_block_size: {BASE_BLOCK}}}"


def eval_text(out: Path, chars: int) -> Path:
    """The evaluation text: the first ``chars`` characters of valid.txt, cut at a line end."""
    text = VALID.read_text(encoding="utf-8")
    path = out / "eval.txt"
    path.write_text(text[: text.rfind("\n", 0, chars) + 1], encoding="utf-8")
    return path


def evaluate_row(checkpoint: Path, context: dict, text: Path, lengths: list[int], cache: Path) -> dict:
    """Perplexity per length (and the loss per position at the longest) of one checkpoint with the context settings
    ``context`` (``block_size``: a fixed block_size, else each length's; ``rope_scaling``: YAML or None). Cached in
    ``cache`` (a JSON file)."""
    if cache.is_file():
        return json.loads(cache.read_text())
    from lit_gpt.checkpoint import load_checkpoint
    from lit_gpt.cli.loading import override_context
    from lit_gpt.evaluate import document_tokens, evaluate_documents, loss_by_position

    model, tokenizer = load_checkpoint(checkpoint, "cpu")
    model.eval()
    documents = [text.read_text(encoding="utf-8")]
    row = {"checkpoint": str(checkpoint), **context, "perplexity": {}}
    for length in lengths:
        block_size = context.get("block_size") or max(length, model.config.block_size)
        override_context(model, block_size, context.get("rope_scaling"))
        result = evaluate_documents(model, tokenizer, documents, block_size=length, stride=length // 2)
        row["perplexity"][str(length)] = result.perplexity
        print(f"  {cache.stem} at {length}: perplexity {result.perplexity:.2f}", flush=True)
    tokens = document_tokens(tokenizer, documents)[0]
    row["by_position"] = {"length": lengths[-1], "buckets": loss_by_position(model, tokens, lengths[-1])}
    cache.write_text(json.dumps(row, indent=1))
    return row


def table(rows: dict[str, dict], lengths: list[int]) -> str:
    """The markdown table of perplexities: one row per model, one column per evaluation length."""
    lines = ["| model | " + " | ".join(f"ppl @ {n}" for n in lengths) + " |", "|---|" + "---:|" * len(lengths)]
    for name, row in rows.items():
        cells = " | ".join(f"{row['perplexity'][str(n)]:.2f}" for n in lengths)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def goal(rows: dict[str, dict], finetune_steps: int) -> list[str]:
    """The targets at 4x the training length (1024 against 256): the YaRN fine-tune's ratio at most 1.05, the
    unscaled base's above 1."""

    def ratio(name: str) -> float:
        return rows[name]["perplexity"]["1024"] / rows[name]["perplexity"]["256"]

    yarn, base = ratio(f"YaRN, fine-tuned {finetune_steps} steps"), ratio("no scaling")
    return [
        f"YaRN fine-tuned: ppl@1024 / ppl@256 = {yarn:.3f} (goal <= 1.05: {'met' if yarn <= 1.05 else 'not met'})",
        f"no scaling: ppl@1024 / ppl@256 = {base:.3f} (goal > 1: {'met' if base > 1 else 'not met'})",
    ]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/context_extension", help="folder of the runs, evaluations and results")
    parser.add_argument("--base_steps", type=int, default=200, help="steps of the base model (2048 tokens each)")
    parser.add_argument("--finetune_steps", type=int, default=100, help="steps of each fine-tune (2048 tokens each)")
    parser.add_argument("--factor", type=int, default=8, help="scaling factor: the extended block_size is 256 x this")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048], help="evaluation lengths")
    parser.add_argument("--eval_chars", type=int, default=100_000, help="characters of valid.txt to evaluate on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    out = (REPO / args.out).resolve()
    (out / "eval").mkdir(parents=True, exist_ok=True)
    extended, runs = BASE_BLOCK * args.factor, []
    base = fit("base", out, args.base_steps, [], runs)
    tuned = {}
    for kind, name in (("linear", "PI"), ("yarn", "YaRN")):
        flags = ["--model.init_weights", str(base), "--model.config.block_size", str(extended)]
        flags += ["--model.config.rope_scaling", scaling(kind, args.factor), "--data.batch_size", "1"]
        flags += ["--model.warmup_steps", str(max(1, args.finetune_steps // 10)), "--model.learning_rate", "5e-4"]
        tuned[name] = fit(
            f"{name.lower()}-{extended}", out, args.finetune_steps, flags + ["--model.min_lr", "5e-5"], runs
        )
    steps = args.base_steps + args.finetune_steps
    flags = ["--model.config.block_size", "1024", "--data.batch_size", str(TOKENS_PER_STEP // 1024)]
    scratch = fit("scratch-1024", out, steps, flags + ["--model.warmup_steps", "50"], runs)

    text = eval_text(out, args.eval_chars)
    plan = {
        "no scaling": (base, {}),
        "PI, no training": (base, {"block_size": extended, "rope_scaling": scaling("linear", args.factor)}),
        "dynamic NTK, no training": (base, {"block_size": extended, "rope_scaling": scaling("dynamic", args.factor)}),
        "YaRN, no training": (base, {"block_size": extended, "rope_scaling": scaling("yarn", args.factor)}),
        f"PI, fine-tuned {args.finetune_steps} steps": (tuned["PI"], {}),
        f"YaRN, fine-tuned {args.finetune_steps} steps": (tuned["YaRN"], {}),
        f"trained at 1024, {steps} steps": (scratch, {}),
    }
    rows = {}
    for i, (name, (checkpoint, context)) in enumerate(plan.items()):
        print(f"evaluating {name}", flush=True)
        rows[name] = evaluate_row(checkpoint, context, text, args.lengths, out / "eval" / f"row{i}.json")
    settings = {**vars(args), "eval_text": str(text), "eval_stride": "length / 2", "config": CONFIG}
    (out / "context_extension.json").write_text(
        json.dumps({"settings": settings, "runs": runs, "rows": rows}, indent=1)
    )
    report = table(rows, args.lengths) + "\n\n" + "\n".join(goal(rows, args.finetune_steps)) + "\n"
    (out / "context_extension.md").write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
