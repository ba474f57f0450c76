"""Datasets of the local lm-eval tasks in this folder, read from the JSONL files beside it (no download).

lm-eval calls a task's ``custom_dataset`` with the task's metadata as keyword arguments and expects a mapping from
split names to datasets.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _split(name: str, **_) -> dict:
    from datasets import Dataset  # installed with lm-eval

    rows = [json.loads(line) for line in (HERE / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    return {"test": Dataset.from_list(rows)}


def choice(**metadata) -> dict:
    """Cloze questions on Tiny Shakespeare: ``context``, ``choices``, ``label`` (the index of the right choice)."""
    return _split("shakespeare_choice.jsonl", **metadata)


def text(**metadata) -> dict:
    """Passages of Tiny Shakespeare (``text``) for rolling log-likelihood: perplexity and bits per byte."""
    return _split("shakespeare_text.jsonl", **metadata)


def prompts(**metadata) -> dict:
    """Prompts (``prompt``) to continue up to the end of the line, with an expected ``answer``."""
    return _split("shakespeare_prompts.jsonl", **metadata)
