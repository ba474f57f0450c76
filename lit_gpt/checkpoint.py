"""Every form a model is read from or written to, behind one entry point, without Lightning.

``load_checkpoint`` / ``load_model`` / ``load_tokenizer`` (and ``lora_record``) take any of these ``path``s and
dispatch on what it holds; each form's save/load pair lives in its own module of ``lit_gpt.formats`` and is
re-exported here:

- a Lightning ``.ckpt`` written by ``lit-gpt fit`` (LoRA runs too), or a sharded checkpoint folder written under
  ``ModelParallelStrategy`` (FSDP2, tensor parallelism): ``lit_gpt.formats.training`` (``write_training_record`` /
  ``restore_training_record``, ``read_training_checkpoint``). A LoRA checkpoint's base is read from its recorded
  path and checked, and the adapters are merged into it unless asked not to (``merge_lora``);
- our folder (``config.json`` + ``model.safetensors``): ``lit_gpt.formats.folder`` (``save_folder`` /
  ``load_folder``);
- a Hugging Face ``LlamaForCausalLM``, ``Qwen3ForCausalLM`` or ``GPT2LMHeadModel`` folder, ours or not, or its hub
  id ``org/name`` (``lit_gpt.hub``: resolved in huggingface_hub's cache): ``lit_gpt.formats.hf_folder``
  (``save_hf`` / ``load_hf``, ``tokenizer_spec_from_hf``);
- a quantized folder (``config.json`` + ``model.pt``): ``lit_gpt.formats.quantized`` (``save_quantized`` /
  ``load_quantized``);
- LoRA adapters for peft (written only): ``lit_gpt.formats.peft.save_peft_adapter``;
- a GGUF file for llama.cpp and Ollama (written only): ``lit_gpt.formats.gguf.save_gguf``.

A path to a folder's ``config.json``, ``model.safetensors`` or ``model.pt`` means the folder. ``build_model``
(``lit_gpt.formats.weights``) makes a ``GPT`` from a state dict without a random initialisation.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from lit_gpt import hub
from lit_gpt.errors import ConfigError
from lit_gpt.formats.files import WHAT_TO_PASS, read_json
from lit_gpt.formats.folder import FORMAT, VERSION, load_folder, save_folder
from lit_gpt.formats.gguf import save_gguf
from lit_gpt.formats.hf_folder import load_hf, save_hf, tokenizer_spec_from_hf
from lit_gpt.formats.peft import save_peft_adapter
from lit_gpt.formats.quantized import load_quantized, save_quantized
from lit_gpt.formats.training import (
    CHECKPOINT_FORMAT,
    is_sharded_checkpoint,
    read_training_checkpoint,
    recorded_lora,
    recorded_tokenizer,
    restore_training_record,
    training_model,
    write_training_record,
)
from lit_gpt.formats.weights import build_model
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT",
    "VERSION",
    "build_model",
    "is_sharded_checkpoint",
    "load_checkpoint",
    "load_folder",
    "load_hf",
    "load_model",
    "load_quantized",
    "load_tokenizer",
    "lora_record",
    "read_training_checkpoint",
    "restore_training_record",
    "save_folder",
    "save_gguf",
    "save_hf",
    "save_peft_adapter",
    "save_quantized",
    "tokenizer_spec_from_hf",
    "write_training_record",
]


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", merge_lora: bool = True, require_tokenizer: bool = True
) -> tuple[GPT, Tokenizer | None]:
    """The model (in eval mode, on ``device``; float32 parameters, or quantized ones from a quantized folder) and its
    tokenizer, from any form in the module docstring, reading ``path`` once.

    A LoRA checkpoint's adapters are merged into the base weights (a plain ``GPT``, as fast as the base); with
    ``merge_lora=False`` they stay peft layers (``lit_gpt.lora``), e.g. to export them. With
    ``require_tokenizer=False`` the tokenizer is None instead of an error when ``path`` has none lit_gpt can use
    (a foreign Hugging Face folder) or names one that cannot be built here (a moved BPE folder).

    Raises:
        ConfigError: if ``path`` is missing, is not one of those forms, lacks a file, holds weights that do not fit
            its config, (for a foreign Hugging Face folder, unless ``require_tokenizer`` is False) has no tokenizer
            lit_gpt can use, (LoRA) its base moved or changed, or (quantized) an optional package is missing; the
            message says what to pass instead.
    """
    model, tokenizer = _load(
        path, model=True, tokenizer=True, device=device, merge=merge_lora, require_tokenizer=require_tokenizer
    )
    return model.to(device).eval(), tokenizer


def load_model(path: str | Path, device: str | torch.device = "cpu", merge_lora: bool = True) -> GPT:
    """The model alone, in eval mode on ``device``; see ``load_checkpoint`` for ``path`` and errors."""
    return _load(path, model=True, tokenizer=False, device=device, merge=merge_lora)[0].to(device).eval()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer alone (no weights are read from folders); see ``load_checkpoint`` for ``path`` and errors."""
    return _load(path, model=False, tokenizer=True)[1]


def lora_record(path: str | Path) -> dict | None:
    """The ``lora`` record of a LoRA training checkpoint (settings and base identity), or None for any other model
    form; reads no weights from folders. Raises ``ConfigError`` as ``load_checkpoint`` does for a bad ``path``."""
    path = _resolve(path)
    return recorded_lora(read_training_checkpoint(path)) if path.is_file() else None


def _resolve(path: str | Path) -> Path:
    """``path`` itself, the folder of a ``config.json`` / ``.safetensors`` / ``.pt`` file, or the snapshot folder of a
    Hugging Face hub id (``lit_gpt.hub``: an existing path wins); ConfigError if it is missing."""
    try:
        path = hub.resolve(path, hub.MODEL_FILES)
    except hub.NotAvailable as err:
        raise ConfigError(f"checkpoint not found: {path}; {WHAT_TO_PASS}, or a cached hub id ({err})") from None
    if path.is_file() and path.suffix in (".json", ".safetensors", ".pt"):
        path = path.parent
    if not path.exists():
        raise ConfigError(f"checkpoint not found: {path}; {WHAT_TO_PASS}")
    return path


def _load(
    path: str | Path,
    model: bool,
    tokenizer: bool,
    device: str | torch.device = "cpu",
    merge: bool = True,
    require_tokenizer: bool = True,
) -> tuple[GPT | None, Tokenizer | None]:
    """Read what is asked for from ``path``, the tokenizer first so that a missing one fails before the weights."""
    path = _resolve(path)
    if path.is_file() or is_sharded_checkpoint(path):
        checkpoint = read_training_checkpoint(path)
        spec = recorded_tokenizer(checkpoint)
        build = partial(training_model, checkpoint, path, merge, load_base=load_model)
    else:
        meta = read_json(path / "config.json")
        if meta.get("format") == FORMAT:
            spec = meta.get("tokenizer")
            build = partial(load_quantized, path, device) if "quantization" in meta else partial(load_folder, path)
        elif "model_type" in meta:
            spec = tokenizer_spec_from_hf(path) if tokenizer else None
            build = partial(load_hf, path)
        else:
            raise ConfigError(f"{path}/config.json is not from lit_gpt or Hugging Face; {WHAT_TO_PASS}")
    if tokenizer and require_tokenizer and spec is None:
        raise ConfigError(
            f"{path} has no tokenizer lit_gpt can use (its own records, tokenizer.json or tokenizer.model); "
            "load the model alone with lit_gpt.load_model"
        )
    return (build() if model else None), (_tokenizer(spec, require_tokenizer) if tokenizer else None)


def _tokenizer(spec: dict | None, required: bool) -> Tokenizer | None:
    """``Tokenizer.from_spec(spec)``; if not ``required``, None for no spec or one that cannot be built here."""
    if spec is None:
        return None
    try:
        return Tokenizer.from_spec(spec)
    except ConfigError:
        if required:
            raise
        return None
