"""Passkey retrieval: can a model find a number hidden at some depth in a long filler text?

The test of Mohtashami & Jaggi 2023 ("Landmark Attention", https://arxiv.org/abs/2305.16300), also the YaRN
repository's (jquesnelle/yarn, ``eval/passkey.py``), with their text: a task line, the filler "The grass is green.
The sky is blue. ..." repeated, the line "The pass key is N. Remember it. N is the pass key." at a chosen depth, more
filler, and the question "What is the pass key? The pass key is". N is a random integer in [1, 50000]. The model
decodes greedily (``lit_gpt.generate``, with the KV cache) as many tokens as the answer " N" has, plus one; a trial
is correct when the integer its text starts with is N.

Prompts are built from token pieces (each piece starts with a space or a newline, so for GPT-2's BPE the pieces
tokenize as the joined text does), so the prompt and its answer fit ``length`` tokens exactly as filler allows.
A character-level tokenizer whose vocabulary lacks a character of the text (digits, for instance) cannot run it.
Torch only; ``lit-gpt evaluate --passkey`` (``lit_gpt.cli.evaluate``) is the command.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

import torch

from lit_gpt.errors import ConfigError
from lit_gpt.generate import generate
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you "
    "about the important information there."
)
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "\nThe pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "\nWhat is the pass key? The pass key is"
MAX_KEY = 50000
"""Keys are drawn uniformly from 1 .. MAX_KEY, as in the papers' code."""


def passkey_prompt(tokenizer: Tokenizer, length: int, depth: float, key: int) -> tuple[list[int], list[int]]:
    """The prompt's token ids and the answer's (`` {key}``): prompt + answer + one token fit in ``length``, with as
    many filler sentences as fit, ``round(depth * fillers)`` of them before the key line.

    Raises:
        ConfigError: if depth is outside [0, 1], or ``length`` cannot hold the prompt without filler.
    """
    if not 0.0 <= depth <= 1.0:
        raise ConfigError(f"passkey depth must be in [0, 1] (0: the key first, 1: last), got {depth}")
    task, filler, question = (tokenizer.encode(text) for text in (TASK, FILLER, QUESTION))
    key_line, answer = tokenizer.encode(KEY_LINE.format(key=key)), tokenizer.encode(f" {key}")
    fixed = len(task) + len(key_line) + len(question) + len(answer) + 1
    if length < fixed:
        raise ConfigError(f"a passkey prompt needs at least {fixed} tokens with this tokenizer, not {length}")
    fillers = (length - fixed) // len(filler)
    before = round(depth * fillers)
    prompt = task + filler * before + key_line + filler * (fillers - before) + question
    return prompt, answer


def retrieves(model: GPT, tokenizer: Tokenizer, prompt: list[int], answer: list[int], key: int) -> bool:
    """Whether greedy decoding after ``prompt`` starts with the integer ``key`` (``len(answer) + 1`` new tokens)."""
    device = model.lm_head.weight.device
    idx = torch.tensor([prompt], dtype=torch.long, device=device)
    out = generate(model, idx, max_new_tokens=len(answer) + 1, temperature=0.0)
    found = re.match(r"\s*(\d+)", tokenizer.decode(out[0, len(prompt) :].tolist()))
    return found is not None and int(found.group(1)) == key


@torch.no_grad()
def passkey_retrieval(
    model: GPT, tokenizer: Tokenizer, lengths: Iterable[int], depths: Iterable[float], trials: int, seed: int = 0
) -> list[dict]:
    """Accuracy of passkey retrieval per prompt length (tokens) and depth (0: the key first, 1: last).

    Returns one record per (length, depth): ``{"length", "depth", "trials", "correct", "accuracy"}``, in the order
    given. Keys come from ``random.Random(seed)`` in that order, so a run repeats exactly.

    Raises:
        ConfigError: for trials < 1, a length above the model's ``block_size``, or a prompt that cannot be built
            (``passkey_prompt``).
    """
    if trials < 1:
        raise ConfigError(f"passkey trials must be >= 1, got {trials}")
    rng, records = random.Random(seed), []
    for length in lengths:
        if length > model.config.block_size:
            raise ConfigError(f"passkey length {length} exceeds the model's block_size {model.config.block_size}")
        for depth in depths:
            correct = 0
            for _ in range(trials):
                key = rng.randint(1, MAX_KEY)
                prompt, answer = passkey_prompt(tokenizer, length, depth, key)
                correct += retrieves(model, tokenizer, prompt, answer, key)
            records.append(
                {"length": length, "depth": depth, "trials": trials, "correct": correct, "accuracy": correct / trials}
            )
    return records
