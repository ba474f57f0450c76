"""``lit-gpt evaluate``: how well a model predicts a text, finds a passkey, or does the lm-evaluation-harness's tasks.

    lit-gpt evaluate --checkpoint PATH --data.path FILE_OR_GLOB [--block_size N] [--stride S] [--by_position]
    lit-gpt evaluate --checkpoint PATH --passkey [--passkey.lengths N,N...] [--passkey.depths D,D...]
    lit-gpt evaluate --checkpoint PATH --tasks NAME[,NAME...] [--include_path DIR] [--limit N] [--out FILE]

The first form scores every token of the text (``lit_gpt.evaluate``: sliding windows, end-of-text before the first
token and between documents) and prints a JSON object: tokens, bytes, mean loss (nats per token), perplexity, bits
per token and bits per byte, with the settings; ``--by_position`` adds the loss per position bucket of disjoint
windows (``lit_gpt.evaluate.loss_by_position``). Documents are read as training reads them (``lit_gpt.data.corpus``:
``.txt`` / ``.jsonl`` / ``.gz``, ``--data.separator``, ``--data.text_field``) but not cleaned or deduplicated: the
text is scored as it is. The second form runs passkey retrieval (``lit_gpt.passkey``): accuracy per prompt length
and depth of the key. The third form runs lm-eval's ``simple_evaluate`` on ``lit_gpt.lm_eval_adapter.LitGPTLM``
and prints its ``results``. Every checkpoint form loads (``.ckpt``, LoRA ``.ckpt``, export, Hugging Face and
quantized folders), and ``--quantize`` quantizes after loading; ``--model.config.block_size`` and
``--model.config.rope_scaling`` run a RoPE model at another context length, with another scaling (context extension
without training). ``--out`` also writes the JSON to a file. No Lightning is imported.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lit_gpt.cli.args import ArgumentParser
from lit_gpt.cli.loading import add_model_arguments, load_for_inference
from lit_gpt.data.corpus import Cleaning, CorpusStats, iter_documents, resolve_sources
from lit_gpt.errors import ConfigError
from lit_gpt.evaluate import document_tokens, evaluate_documents, loss_by_position
from lit_gpt.extras import require
from lit_gpt.model import GPT
from lit_gpt.passkey import passkey_retrieval
from lit_gpt.tokenizer import Tokenizer


def _parser() -> ArgumentParser:
    description = "Perplexity and bits per byte of a model on a text, or lm-evaluation-harness tasks."
    parser = ArgumentParser(prog="lit-gpt evaluate", description=description)
    add_model_arguments(parser)
    parser.add_argument("--data.path", dest="path", help="the text: a .txt/.jsonl(.gz) file, a folder or a glob")
    parser.add_argument(
        "--data.separator",
        dest="separator",
        default=None,
        help="string between documents inside .txt files (e.g. <|endoftext|>)",
    )
    parser.add_argument("--data.text_field", dest="text_field", default="text", help="the text field of .jsonl records")
    parser.add_argument("--block_size", type=int, default=None, help="window length (default: the model's)")
    parser.add_argument(
        "--stride",
        type=int,
        default=None,
        help="advance of the windows; each token after the "
        "first window sees >= block_size - stride tokens of context (default: block_size // 2)",
    )
    parser.add_argument("--batch_size", type=int, default=8, help="windows (or harness requests) per forward pass")
    parser.add_argument(
        "--by_position",
        action="store_true",
        help="also report the loss per position bucket (0, 1, 2-3, 4-7, ...) of disjoint --block_size windows",
    )
    _add_passkey_arguments(parser)
    parser.add_argument(
        "--tasks",
        default=None,
        help='lm-eval task names, comma-separated (pip install -e ".[eval]"); most of the harness\'s tasks download '
        "their datasets",
    )
    parser.add_argument("--include_path", default=None, help="a folder of extra lm-eval task YAML files")
    parser.add_argument("--num_fewshot", type=int, default=None, help="lm-eval: examples in each prompt")
    parser.add_argument("--limit", type=float, default=None, help="lm-eval: documents per task (or a fraction)")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    return parser


def main(args: list[str]) -> None:
    """Evaluate as ``args`` (``["evaluate", flags...]``) says; print the JSON result (and write ``--out``).

    Raises:
        ConfigError: for bad flags, neither or both of ``--data.path`` and ``--tasks``, an unusable checkpoint or
            text, or a missing optional package.
    """
    opts = _parser().parse_args(args[1:])
    if (opts.path is not None) + (opts.tasks is not None) + opts.passkey != 1:
        raise ConfigError(
            "pass --data.path (perplexity and bits per byte of a text), --passkey (passkey retrieval) or --tasks "
            "(lm-eval), one of them"
        )
    if opts.by_position and opts.path is None:
        raise ConfigError("--by_position scores a text: pass --data.path")
    for flag, value in (
        ("--block_size", opts.block_size),
        ("--stride", opts.stride),
        ("--batch_size", opts.batch_size),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive integer, got {value} (leave it out for the default)")
    started = time.perf_counter()
    model, tokenizer, device = load_for_inference(opts)
    if opts.path is not None:
        result = _score_text(opts, model, tokenizer)
    elif opts.passkey:
        result = _passkey(opts, model, tokenizer)
    else:
        result = _run_tasks(opts, model, tokenizer)
    seconds = round(time.perf_counter() - started, 3)
    result = {"checkpoint": opts.checkpoint, "quantize": opts.quantize, "device": device, **result, "seconds": seconds}
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if opts.out:
        Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.out).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {opts.out}", file=sys.stderr)


def _score_text(opts, model: GPT, tokenizer: Tokenizer) -> dict:
    """``lit_gpt.evaluate.evaluate_documents`` on the documents of ``--data.path``, with the settings used."""
    block_size = model.config.block_size if opts.block_size is None else opts.block_size
    stride = max(1, block_size // 2) if opts.stride is None else opts.stride
    stats = CorpusStats()
    cleaning = Cleaning(remove_control=False, deduplicate=False)  # score the text as it is
    documents = iter_documents(resolve_sources(opts.path), cleaning, opts.separator, opts.text_field, stats)
    documents = list(documents) if opts.by_position else documents  # read twice
    evaluation = evaluate_documents(model, tokenizer, documents, block_size, stride, opts.batch_size)
    by_position = {}
    if opts.by_position:
        tokens = document_tokens(tokenizer, documents)[0]
        by_position["by_position"] = loss_by_position(model, tokens, block_size, opts.batch_size)
    settings = {
        "data": opts.path,
        "files": stats.files,
        "documents": stats.documents_kept,
        "tokenizer": tokenizer.name,
        "block_size": block_size,
        "stride": stride,
    }
    return {**settings, **evaluation.to_dict(), **by_position}


def _add_passkey_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--passkey", action="store_true", help="passkey retrieval: find a number hidden in filler text")
    parser.add_argument(
        "--passkey.lengths",
        dest="passkey_lengths",
        default=None,
        help="prompt lengths in tokens, comma-separated (default: the model's block_size)",
    )
    parser.add_argument(
        "--passkey.depths",
        dest="passkey_depths",
        default="0,0.25,0.5,0.75,1",
        help="depths of the key in the filler, comma-separated (0: first, 1: last)",
    )
    parser.add_argument(
        "--passkey.trials", dest="passkey_trials", type=int, default=5, help="keys per length and depth"
    )
    parser.add_argument("--passkey.seed", dest="passkey_seed", type=int, default=0, help="seed of the random keys")


def _passkey(opts, model: GPT, tokenizer: Tokenizer) -> dict:
    """``lit_gpt.passkey.passkey_retrieval`` with the ``--passkey.*`` settings: one record per length and depth."""
    try:
        lengths = [int(x) for x in (opts.passkey_lengths or str(model.config.block_size)).split(",")]
        depths = [float(x) for x in opts.passkey_depths.split(",")]
    except ValueError:
        raise ConfigError(
            f"--passkey.lengths takes integers and --passkey.depths numbers, comma-separated; got "
            f"{opts.passkey_lengths!r} and {opts.passkey_depths!r}"
        ) from None
    records = passkey_retrieval(model, tokenizer, lengths, depths, opts.passkey_trials, opts.passkey_seed)
    correct, trials = sum(r["correct"] for r in records), sum(r["trials"] for r in records)
    settings = {"tokenizer": tokenizer.name, "block_size": model.config.block_size, "seed": opts.passkey_seed}
    return {**settings, "passkey": records, "accuracy": correct / trials}


def _run_tasks(opts, model: GPT, tokenizer: Tokenizer) -> dict:
    """lm-eval's ``simple_evaluate`` on ``LitGPTLM`` for the tasks of ``--tasks``; its ``results`` and versions."""
    from lit_gpt.lm_eval_adapter import LitGPTLM  # imports lm-eval's base class: only for --tasks

    lm = LitGPTLM(model, tokenizer, batch_size=opts.batch_size)
    lm_eval = require("lm_eval", "eval", "--tasks")
    manager = require("lm_eval.tasks", "eval", "--tasks").TaskManager(include_path=opts.include_path)
    tasks = [name.strip() for name in opts.tasks.split(",") if name.strip()]
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        raise ConfigError(
            f"unknown lm-eval task(s) {unknown}: see `lm_eval ls tasks`, or add a folder of task YAML files with "
            "--include_path"
        )
    limit = int(opts.limit) if opts.limit is not None and opts.limit >= 1 else opts.limit
    output = lm_eval.simple_evaluate(
        model=lm, tasks=tasks, num_fewshot=opts.num_fewshot, limit=limit, task_manager=manager, log_samples=False
    )
    return {"tasks": tasks, "results": output["results"], "versions": output.get("versions", {})}
