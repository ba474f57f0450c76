"""Our own folder: ``config.json`` (``{"format": "lit_gpt", "version": 1, "config": ..., "tokenizer": ...}``) and
``model.safetensors``, the state dict under our module names with a tied head stored once
(``lit_gpt.formats.weights``). ``save_folder`` writes it, ``load_folder`` reads it back."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.formats.files import make_dir, read_json, write_json
from lit_gpt.formats.weights import build_model, cpu_state, store_head_once
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

FORMAT, VERSION = "lit_gpt", 1
"""The ``format`` and ``version`` of our folder's ``config.json`` (the quantized folder's too)."""


def folder_record(model: GPT, tokenizer: Tokenizer) -> dict:
    """The ``config.json`` of our folder for ``model`` and ``tokenizer``: format, version, config, tokenizer spec."""
    return {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "tokenizer": tokenizer.spec}


def save_folder(model: GPT, tokenizer: Tokenizer, out_dir: str | Path) -> None:
    """Write ``model`` and ``tokenizer`` to ``out_dir`` in our format: ``config.json`` and ``model.safetensors``.

    Tensors keep their dtype and are moved to the CPU. ``load_folder`` (or ``lit_gpt.load_checkpoint``) reads the
    folder back.

    Raises:
        ConfigError: if ``out_dir`` exists and is not a folder.
    """
    out = make_dir(out_dir)
    state = store_head_once(cpu_state(model), model.config)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    write_json(out / "config.json", folder_record(model, tokenizer))


def load_folder(folder: str | Path) -> GPT:
    """Rebuild the model (float32, CPU, train mode) from a folder written by ``save_folder``.

    Raises:
        ConfigError: if ``config.json`` is missing or not ours, a file is missing, or the weights do not fit the config.
    """
    folder = Path(folder)
    meta = read_json(folder / "config.json")
    if meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise ConfigError(
            f"{folder} is not a lit_gpt export folder (its config.json has no lit_gpt record): write one with "
            "lit_gpt.checkpoint.save_folder or `lit-gpt export`"
        )
    if meta.get("version") != VERSION:
        raise ConfigError(f"{folder} has lit_gpt export version {meta.get('version')!r}; this lit_gpt reads {VERSION}")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{folder} has no model.safetensors: export the checkpoint again with `lit-gpt export`")
    return build_model(Config(**meta["config"]), load_file(weights), weights)
