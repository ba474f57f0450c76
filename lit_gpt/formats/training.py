"""Training checkpoints: the ``lit_gpt`` record that ``lit_gpt.train.module.LitGPT`` adds to Lightning's ``.ckpt``,
written and read here, and the sharded checkpoint folders of Lightning's ``ModelParallelStrategy``.

A ``.ckpt`` is Lightning's dict: the module's state dict under ``state_dict`` (the ``GPT``'s tensors with the
``model.`` prefix of ``LitGPT.model``), optimizer and loop state, hyperparameters, and what ``write_training_record``
adds:

- ``lit_gpt``: ``{"format": 1, "config": Config.to_dict(), "tokenizer": spec or None}``, enough to rebuild the model
  without Lightning; a LoRA run (``LitGPT(lora=...)``) adds ``lora``: the ``LoRA`` settings and ``base``, the base's
  identity (``lit_gpt.lora.base_identity``: path and weight SHA-256), and its state dict holds the adapter matrices
  only, not a second copy of the frozen base;
- ``rng_states``: torch's CPU generator state (and this rank's CUDA one), which Lightning does not save: dropout
  draws from them, so a resumed run draws the masks an uninterrupted one would.

A sharded checkpoint is a folder: PyTorch Distributed Checkpoint shards (``*.distcp`` + ``.metadata``) and
``meta.pt``, the same dict without the tensors; ``training_model`` consolidates the shards on one process.
Everything is read with ``torch.load(weights_only=True)``, which unpickles no code. No Lightning is imported.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.formats.files import WHAT_TO_PASS
from lit_gpt.formats.weights import build_model
from lit_gpt.lora import LoRA, add_adapters, check_base, load_adapters, merge_adapters
from lit_gpt.model import GPT

CHECKPOINT_FORMAT = 1
"""The ``format`` of the ``lit_gpt`` record in a training ``.ckpt``."""
SHARDED_METADATA = "meta.pt"
"""The file of a sharded checkpoint folder that holds everything but the tensors (Lightning's name for it)."""
PREFIX = "model."
"""The prefix of the ``GPT``'s tensors in a checkpoint's state dict (``LitGPT.model``)."""


def write_training_record(
    checkpoint: dict, model: GPT, tokenizer: dict | None, lora: LoRA | None = None, base: dict | None = None
) -> None:
    """Add the ``lit_gpt`` record and the RNG states (module docstring) to Lightning's ``checkpoint`` dict, in place.

    With ``lora`` (and ``base``, the identity of the base the adapters train on), the record holds both, and the
    state dict keeps the trainable ``model.`` tensors (the adapters) and everything outside the model only.
    """
    record = {"format": CHECKPOINT_FORMAT, "config": model.config.to_dict(), "tokenizer": tokenizer}
    if lora is not None:
        record["lora"] = {**lora.to_dict(), "base": base}
        adapters = {f"{PREFIX}{name}" for name, param in model.named_parameters() if param.requires_grad}
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k in adapters or not k.startswith(PREFIX)}
    checkpoint["lit_gpt"] = record
    checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state()  # this rank's device


def restore_training_record(checkpoint: dict, model: GPT, base: dict | None = None) -> None:
    """Prepare Lightning's ``checkpoint`` dict before it is loaded into a module holding ``model``, and restore the
    RNG states it holds (torch's; CUDA's where CUDA is available).

    ``base``: the identity of the LoRA base ``model`` was built on, for a run that trains adapters. Then the
    checkpoint must hold adapters trained on that same base (same weight SHA-256), and the frozen base tensors,
    which it does not hold, are filled into its state dict from ``model``.

    Raises:
        ConfigError: if the checkpoint's vocabulary size differs from ``model``'s (another tokenizer); with ``base``,
            if the checkpoint has no LoRA record or its adapters were trained on another base.
    """
    recorded = checkpoint.get("lit_gpt", {}).get("config", {}).get("vocab_size")
    if recorded is not None and recorded != model.config.vocab_size:
        raise ConfigError(
            f"the checkpoint's model has a vocabulary of {recorded} tokens, but this run's tokenizer has "
            f"{model.config.vocab_size}: resume with the data.tokenizer the checkpoint was trained with"
        )
    if base is not None:
        record = checkpoint.get("lit_gpt", {}).get("lora")
        if record is None:
            raise ConfigError(
                "this run trains LoRA adapters (model.lora) but the checkpoint has none: resume it without "
                "model.lora, or start from its weights with model.init_weights"
            )
        if record["base"]["sha256"] != base["sha256"]:
            raise ConfigError(
                f"the checkpoint's adapters were trained on the base at {record['base']['path']}, not on "
                f"model.init_weights {base['path']} (different weights): resume with that base"
            )
        state = checkpoint["state_dict"]
        for name, tensor in model.state_dict().items():
            state.setdefault(f"{PREFIX}{name}", tensor)
    states = checkpoint.get("rng_states", {})
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def is_sharded_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a sharded checkpoint folder written by Lightning's ``ModelParallelStrategy``: the tensors
    in PyTorch Distributed Checkpoint files (``*.distcp`` + ``.metadata``), the rest in ``meta.pt``."""
    path = Path(path)
    return path.is_dir() and (path / SHARDED_METADATA).is_file() and (path / ".metadata").is_file()


def read_training_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict of a ``.ckpt`` written by ``lit-gpt fit``, checked to hold our record and a state dict; for
    a sharded checkpoint folder (``is_sharded_checkpoint``), the dict of its ``meta.pt`` (the tensors stay in the
    shards: ``training_model`` consolidates them).

    Read with ``torch.load(weights_only=True)`` (memory-mapped): a pickle that would run code, a truncated or
    corrupted file, or any other file is refused without executing anything from it.

    Raises:
        ConfigError: naming ``path`` and why: unreadable (with the exception's type), not from lit_gpt, or from a
            newer lit_gpt checkpoint format.
    """
    path = Path(path)
    sharded = is_sharded_checkpoint(path)
    try:
        with torch.serialization.safe_globals([Config, LoRA]):  # hyper_parameters hold them when built in Python
            file = path / SHARDED_METADATA if sharded else path
            checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=not sharded)
    except Exception as err:  # unpickling raises many types for a file that is not a checkpoint
        why = type(err).__name__
        raise ConfigError(f"{path} is not a readable lit_gpt checkpoint ({why}); {WHAT_TO_PASS}") from None
    record = checkpoint.get("lit_gpt") if isinstance(checkpoint, dict) else None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("config"), dict)
        or not (sharded or isinstance(checkpoint.get("state_dict"), dict))
    ):
        raise ConfigError(f"{path} is not a lit_gpt training checkpoint (no model config or weights); {WHAT_TO_PASS}")
    if record.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"{path} has lit_gpt checkpoint format {record.get('format')!r}; this lit_gpt reads {CHECKPOINT_FORMAT}"
        )
    return checkpoint


def recorded_tokenizer(checkpoint: dict) -> dict | None:
    """The tokenizer spec in a checkpoint's record (``read_training_checkpoint``); None when it was trained without
    one (a ``LitGPT`` built in Python without ``tokenizer``)."""
    return checkpoint["lit_gpt"].get("tokenizer")


def recorded_lora(checkpoint: dict) -> dict | None:
    """The ``lora`` record (settings and base identity) of a LoRA training checkpoint, or None for any other."""
    return checkpoint["lit_gpt"].get("lora")


def training_model(checkpoint: dict, path: Path, merge_lora: bool, load_base: Callable[[Path], GPT]) -> GPT:
    """The model (float32, CPU) of a checkpoint dict that ``read_training_checkpoint(path)`` returned.

    A LoRA checkpoint's base is read by ``load_base(base path)`` (any model form: ``lit_gpt.checkpoint.load_model``)
    and checked against the recorded weight hash; the adapters are added and loaded, then merged into the base
    weights unless ``merge_lora`` is False (they stay peft layers).

    Raises:
        ConfigError: if the weights do not fit the record's config, a sharded folder cannot be consolidated, or a
            LoRA base is missing or changed.
    """
    states = checkpoint["state_dict"] if "state_dict" in checkpoint else _consolidated_state(path)
    state = {k.removeprefix(PREFIX): v for k, v in states.items() if k.startswith(PREFIX)}
    record = recorded_lora(checkpoint)
    if record is None:
        return build_model(Config(**checkpoint["lit_gpt"]["config"]), state, path)
    base = Path(record["base"]["path"])
    if not base.exists():
        raise ConfigError(
            f"the LoRA checkpoint {path} adapts the base model at {base}, which is not there (moved or deleted?): "
            "put the base back at that path, or save a merged model where both are at hand"
        )
    model = load_base(base)
    check_base(model, record["base"], path)
    add_adapters(model, LoRA.from_record(record))
    load_adapters(model, state, path)
    return merge_adapters(model) if merge_lora else model


def _consolidated_state(folder: Path) -> dict[str, torch.Tensor]:
    """The whole (unsharded) ``state_dict`` of a sharded checkpoint folder, on the CPU, without a process group.

    ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save`` gathers every shard into one ``torch.save`` file
    (a temporary one), read back with ``weights_only=True``.
    """
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        try:
            dcp_to_torch_save(folder, Path(tmp) / "full.pt")
            full = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)
        except Exception as err:  # a missing or truncated shard raises several types
            why = type(err).__name__
            raise ConfigError(f"{folder} is not a readable sharded checkpoint ({why}); {WHAT_TO_PASS}") from None
    if not isinstance(full.get("state_dict"), dict):
        raise ConfigError(f"{folder} holds no model weights; {WHAT_TO_PASS}")
    return full["state_dict"]
