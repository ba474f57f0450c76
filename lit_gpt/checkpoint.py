"""Load a trained model and its tokenizer from any of the places lit_gpt writes them, without Lightning.

``path`` may be:
- a Lightning ``.ckpt`` written by ``lit-gpt fit``: the ``lit_gpt`` record (written by
  ``LitGPT.on_save_checkpoint``) holds the config and tokenizer spec, the weights sit under ``state_dict`` with a
  ``model.`` prefix; read with ``torch.load(weights_only=True)``, which unpickles no code;
- a folder written by ``lit-gpt export --format lit_gpt`` (``lit_gpt.export.save_folder``);
- a Hugging Face ``LlamaForCausalLM`` or ``GPT2LMHeadModel`` folder (``lit_gpt.export.from_hf``), ours or not.
A path to a folder's ``config.json`` or ``model.safetensors`` means the folder.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from lit_gpt import export
from lit_gpt.config import Config, ConfigError
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

WHAT_TO_PASS = "pass a .ckpt written by `lit-gpt fit` or a folder written by `lit-gpt export`"


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, Tokenizer]:
    """The model (in eval mode, on ``device``, float32 parameters) and its tokenizer.

    Raises:
        ConfigError: if ``path`` is missing, is not one of the forms above, lacks a file, holds weights that do
            not fit its config, or (for a foreign Hugging Face folder) has no tokenizer lit_gpt can use; the message
            says what to pass instead.
    """
    model, tokenizer = _load(path, model=True, tokenizer=True)
    return model.to(device).eval(), tokenizer


def load_model(path: str | Path, device: str | torch.device = "cpu") -> GPT:
    """The model alone, in eval mode on ``device``; see ``load_checkpoint`` for ``path`` and errors."""
    return _load(path, model=True, tokenizer=False)[0].to(device).eval()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer alone (no weights are read from folders); see ``load_checkpoint`` for ``path`` and errors."""
    return _load(path, model=False, tokenizer=True)[1]


def _load(path: str | Path, model: bool, tokenizer: bool) -> tuple[GPT | None, Tokenizer | None]:
    """Read what is asked for from ``path``, the tokenizer first so that a missing one fails before the weights."""
    path = Path(path)
    if path.is_file() and path.suffix in (".json", ".safetensors"):
        path = path.parent
    if not path.exists():
        raise ConfigError(f"checkpoint not found: {path}; {WHAT_TO_PASS}")
    if path.is_file():
        checkpoint = _read_lightning(path)
        spec = checkpoint["lit_gpt"].get("tokenizer")  # None when LitGPT was built without one
        build = partial(_model_from_lightning, checkpoint, path)
    else:
        meta = export._read_json(path / "config.json")
        if meta.get("format") == export.FORMAT:
            spec, build = meta.get("tokenizer"), partial(export.load_folder, path)
        elif "model_type" in meta:
            spec = export.tokenizer_spec_from_hf(path) if tokenizer else None
            build = partial(export.from_hf, path)
        else:
            raise ConfigError(f"{path}/config.json is not from lit_gpt or Hugging Face; {WHAT_TO_PASS}")
    if tokenizer and spec is None:
        raise ConfigError(
            f"{path} has no tokenizer lit_gpt can use (it reads its own records and GPT-2's BPE files); "
            "load the model alone with lit_gpt.checkpoint.load_model"
        )
    return (build() if model else None), (Tokenizer.from_spec(spec) if tokenizer else None)


def _model_from_lightning(checkpoint: dict, path: Path) -> GPT:
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    return export.build_model(Config(**checkpoint["lit_gpt"]["config"]), state, path)


def _read_lightning(path: Path) -> dict:
    """The checkpoint dict of a ``LitGPT`` ``.ckpt``, checked to hold our record and a state dict."""
    try:
        with torch.serialization.safe_globals([Config]):  # hyper_parameters hold a Config when built from Python
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # unpickling raises many types for a file that is not a checkpoint
        raise ConfigError(f"{path} is not a lit_gpt checkpoint ({type(err).__name__}); {WHAT_TO_PASS}") from None
    record = checkpoint.get("lit_gpt") if isinstance(checkpoint, dict) else None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("config"), dict)
        or not isinstance(checkpoint.get("state_dict"), dict)
    ):
        raise ConfigError(
            f"{path} is not a lit_gpt training checkpoint (no model config or weights); {WHAT_TO_PASS}"
        )
    if record.get("format") != 1:
        raise ConfigError(f"{path} has lit_gpt checkpoint format {record.get('format')!r}; this lit_gpt reads format 1")
    return checkpoint
