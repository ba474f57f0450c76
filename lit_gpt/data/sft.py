"""Instruction and chat records -> token rows with a loss mask: the pure part of supervised fine-tuning (SFT).

Records are JSONL, one object a line, in either format:
- chat: ``{"messages": [{"role": "system" | "user" | "assistant" | "tool", "content": "..."}, ...]}``, any number
  of turns;
- Alpaca: ``{"instruction": "...", "input": "...", "output": "..."}`` (``input`` optional), read as a user turn
  (the instruction, then a blank line and the input when there is one) and an assistant turn (the output).

Each conversation is rendered by the model's chat template (``lit_gpt.chat.ChatTemplate``: the Jinja template of a
Hugging Face tokenizer, ChatML for models trained here) and the loss covers the assistant turns only, turn by turn
(their content and the template's end of turn, which teaches the model to stop), as TRL's ``SFTTrainer`` with
``assistant_only_loss``; ``mask_prompt=False`` trains on every token.

Rows: an example is ``block_size + 1`` tokens at most: ``x = ids[:-1]`` and ``y = ids[1:]`` with ``IGNORE_INDEX``
where no loss is taken. An example longer than that is cut to its first ``block_size + 1`` tokens
(``overlong="truncate"``; one left with no assistant token is skipped) or skipped (``overlong="skip"``), each
counted. A batch is each example in a row of its own, right-padded (``IGNORE_INDEX`` targets) to the longest row
rounded up to ``pad_multiple`` (fewer shapes for a compiled model), so no example attends to another. The examples
are stored end to end with their offsets (``Examples``), the layout that packing several into one window needs: a
packed batch would add per-token document ids, (B, T), for the document mask.

Bad input (decided here): a line that is not a JSON object, a record in neither format, a message without a string
``role`` and ``content``, an unknown role, or a template that fails to render is a ``ConfigError`` naming the file
and line, since the file needs fixing; a conversation without an assistant turn has nothing to learn from and is a
counted skip, as is an empty line.

Order: training draws whole epochs, each a seeded permutation of the examples (``numpy.random.default_rng((seed,
epoch))``), laid end to end; global batch ``b`` takes the next ``batch_size * replicas`` of them and each
data-parallel replica its slice, so a resumed run continues exactly (as ``lit_gpt.data.windows`` does for windows).
Numpy and the standard library only, with the tokenizer and chat template of the core; no Lightning.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lit_gpt.chat import ChatTemplate
from lit_gpt.data.settings import Batching
from lit_gpt.data.windows import IGNORE_INDEX
from lit_gpt.errors import ConfigError

ROLES = ("system", "user", "assistant", "tool")
"""The roles a message may have."""
OVERLONG = ("truncate", "skip")


@dataclass
class SFTData(Batching):
    """The data section of ``lit_gpt.train.sft.SFTDataModule``: instruction or chat records for fine-tuning.

    Args:
        path: the training records, a JSONL file (chat or Alpaca format; see ``lit_gpt.data.sft``).
        val_path: held-out records for validation, in the same formats. None holds out ``val_fraction`` of
            ``path``'s examples, drawn with ``seed``.
        val_fraction: the share of ``path``'s examples held out when there is no ``val_path``, in (0, 1).
        tokenizer: the model's tokenizer: a checkpoint (a ``.ckpt``, an exported folder: the tokenizer it was trained
            with), a Hugging Face model folder or hub id, a folder from ``lit-gpt train-tokenizer``, or a tiktoken
            name (as ``TextData.tokenizer``).
        chat_template: a Jinja chat template file to render the records with; None: the tokenizer's own (a Hugging
            Face folder's ``chat_template``), else ChatML.
        mask_prompt: take the loss on the assistant turns only (their content and end of turn); False trains on
            every token of the conversation.
        overlong: ``truncate`` an example longer than ``block_size + 1`` tokens to its start, or ``skip`` it.
        pad_multiple: round each batch's padded length up to a multiple of this (at most ``block_size``).

    Raises:
        ConfigError: for a bad batch setting, an unknown ``overlong``, a ``val_fraction`` outside (0, 1) without
            ``val_path``, or a ``pad_multiple`` below 1.
    """

    path: str = "data/sft/train.jsonl"
    val_path: str | None = None
    val_fraction: float = 0.05
    tokenizer: str = "gpt2"
    chat_template: str | None = None
    mask_prompt: bool = True
    overlong: str = "truncate"
    pad_multiple: int = 8

    mixture = None  # one file: the base data module's mixture hooks see a single corpus

    def __post_init__(self) -> None:
        Batching.__post_init__(self)
        if self.overlong not in OVERLONG:
            raise ConfigError(f"data.overlong must be 'truncate' or 'skip', got {self.overlong!r}")
        if self.val_path is None and not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if self.pad_multiple < 1:
            raise ConfigError(f"data.pad_multiple must be a positive integer, got {self.pad_multiple}")

    def weights(self) -> np.ndarray:
        """One corpus, all the weight: ``[1.0]``."""
        return np.ones(1)


def read_records(path: str | Path) -> list[tuple[int, list[dict]]]:
    """The conversations of a JSONL file, each with its line number: ``(line, messages)``; empty lines are left out.

    Raises:
        ConfigError: for a missing file, or a line that is not a record of either format (module docstring), naming
            the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"SFT records {path} not found: pass a JSONL file of chat or Alpaca records")
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                records.append((number, to_messages(line, f"{path}:{number}")))
    return records


def to_messages(line: str, where: str) -> list[dict]:
    """The messages of one JSONL line (chat format, or Alpaca read as a user and an assistant turn).

    Raises:
        ConfigError: naming ``where``, for a line that is not such a record.
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where}: not a JSON object ({err.msg}); fix or remove the line") from None
    if isinstance(record, dict) and "messages" in record:
        messages = record["messages"]
    elif isinstance(record, dict) and isinstance(record.get("instruction"), str) and "output" in record:
        extra = record.get("input") or ""
        prompt = f"{record['instruction']}\n\n{extra}" if extra else record["instruction"]
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    else:
        raise ConfigError(
            f'{where}: a record is {{"messages": [...]}} or {{"instruction", "input", "output"}}, got '
            f"{line.strip()[:80]}"
        )
    if not isinstance(messages, list):
        raise ConfigError(f'{where}: "messages" must be a list of {{"role", "content"}} objects')
    for message in messages:
        if not (isinstance(message, dict) and isinstance(message.get("content"), str)):
            raise ConfigError(f'{where}: each message needs a string "role" and "content", got {str(message)[:80]}')
        if message.get("role") not in ROLES:
            raise ConfigError(f"{where}: unknown role {message.get('role')!r}; a role is one of {', '.join(ROLES)}")
    return messages


@dataclass
class Examples:
    """Encoded examples stored end to end: example i is ``ids[offsets[i]:offsets[i + 1]]`` with its loss mask
    ``trained`` (True where the token is a target), both 1-D numpy arrays; ``skipped`` counts the examples left out,
    by reason, and ``truncated`` those cut to ``block_size + 1`` tokens."""

    ids: np.ndarray
    trained: np.ndarray
    offsets: np.ndarray
    skipped: Counter
    truncated: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids and loss mask of example ``i``."""
        span = slice(self.offsets[i], self.offsets[i + 1])
        return self.ids[span], self.trained[span]

    def subset(self, indices: np.ndarray) -> Examples:
        """The examples at ``indices`` (at least one), in that order; the counts stay those of the whole file."""
        ids, trained = zip(*(self.example(i) for i in indices))
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
        return Examples(np.concatenate(ids), np.concatenate(trained), offsets, self.skipped, self.truncated)

    def summary(self) -> str:
        """One line: the number of examples, and of those truncated and skipped (by reason)."""
        skips = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        return f"{len(self)} examples ({self.truncated} truncated to block_size + 1 tokens; skipped: {skips})"


def encode_examples(
    records: list[tuple[int, list[dict]]], template: ChatTemplate, settings: SFTData, where: str
) -> Examples:
    """Each conversation's ids and loss mask (module docstring), within ``settings.block_size + 1`` tokens.

    Raises:
        ConfigError: when the template fails on a record (naming ``where`` and its line), or no example is left.
    """
    limit, ids, masks, lengths = settings.block_size + 1, [], [], []
    skipped, truncated = Counter(), 0
    for line, messages in records:
        if not any(m["role"] == "assistant" for m in messages):
            skipped["without an assistant turn"] += 1
            continue
        try:
            tokens, spans = template.encode_turns(messages)
        except ConfigError as err:
            raise ConfigError(f"{where}:{line}: {err}") from None
        trained = np.zeros(len(tokens), dtype=bool)
        for start, end in spans if settings.mask_prompt else [(0, len(tokens))]:
            trained[start:end] = True
        cut = len(tokens) > limit
        if cut and settings.overlong == "skip":
            skipped["longer than block_size + 1 tokens"] += 1
            continue
        tokens, trained = tokens[:limit], trained[:limit]
        if not trained[1:].any():  # the first token is never a target
            skipped["with no assistant token within block_size + 1 tokens"] += 1
            continue
        truncated += cut
        ids.append(np.asarray(tokens, dtype=np.int64))
        masks.append(trained)
        lengths.append(len(tokens))
    if not ids:
        raise ConfigError(f"{where} has no example to train on ({sum(skipped.values())} skipped: {dict(skipped)})")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Examples(np.concatenate(ids), np.concatenate(masks), offsets, skipped, truncated)


class PaddedRows(Dataset):
    """Batches of examples, one a row, right-padded: ``dataset[indices]`` with ``indices`` of shape (B,) returns
    ``(x, y)``, int64 tensors of shape (B, T), T the longest example minus one rounded up to ``pad_multiple`` (at
    most ``block_size``); ``y`` is ``IGNORE_INDEX`` past each example and where its loss mask is False; ``x`` is
    padded with ``pad_id``."""

    def __init__(self, examples: Examples, pad_id: int, pad_multiple: int, block_size: int) -> None:
        self.examples, self.pad_id, self.pad_multiple, self.block_size = examples, pad_id, pad_multiple, block_size

    def __getitem__(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.examples.example(i) for i in indices]
        longest = max(len(ids) for ids, _ in rows) - 1
        width = min(-(-longest // self.pad_multiple) * self.pad_multiple, self.block_size)
        x = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        y = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
        for row, (ids, trained) in enumerate(rows):
            n = len(ids) - 1
            x[row, :n] = ids[:-1]
            y[row, :n] = np.where(trained[1:], ids[1:], IGNORE_INDEX)
        return torch.from_numpy(x), torch.from_numpy(y)


class ExampleBatches(Sampler):
    """Infinite sampler of batches of example indices, each an int64 array of shape (batch_size,): epochs of seeded
    permutations end to end, global batch ``b`` the ``batch_size * num_replicas`` after the first ``b`` batches, and
    replica ``rank`` its ``rank``-th slice (module docstring). Iteration starts at batch ``start_batch``."""

    def __init__(
        self, num_examples: int, batch_size: int, seed: int, rank: int = 0, start_batch: int = 0, num_replicas: int = 1
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        self.num_examples, self.batch_size, self.num_replicas = num_examples, batch_size, num_replicas
        self.seed, self.rank, self.start_batch = seed, rank, start_batch

    def __iter__(self):
        size = self.batch_size * self.num_replicas
        position = self.start_batch * size  # in the endless sequence of epochs
        epoch, order = -1, np.empty(0, dtype=np.int64)
        while True:
            batch = np.empty(size, dtype=np.int64)
            for k in range(size):
                if position // self.num_examples != epoch:
                    epoch = position // self.num_examples
                    order = np.random.default_rng((self.seed, epoch)).permutation(self.num_examples)
                batch[k] = order[position % self.num_examples]
                position += 1
            yield batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


def validation_batches(num_examples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """Every ``world_size``-th example from ``rank``, in order, in batches of ``batch_size`` indices."""
    mine = np.arange(rank, num_examples, world_size)
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def held_out(num_examples: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) example indices: a seeded ``fraction`` of the examples (at least one) for validation,
    each part in file order."""
    order = np.random.default_rng((seed, num_examples)).permutation(num_examples)
    n_val = max(1, round(fraction * num_examples))
    if n_val >= num_examples:
        raise ConfigError(f"holding out {n_val} of {num_examples} examples leaves none to train on: set data.val_path")
    return np.sort(order[n_val:]), np.sort(order[:n_val])
