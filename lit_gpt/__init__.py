"""lit_gpt: train LLaMA- and GPT-2-style language models from scratch with PyTorch Lightning.

The package has four layers, and imports only point down:

- ``lit_gpt`` (this folder): ``config`` (with ``rope_scaling``), ``rope``, ``model``, ``tokenizer`` (tiktoken, trained
  BPEs, characters, and Hugging Face folders through ``tokenizer_hf``), ``chat`` (chat templates, jinja2), ``hub`` (hub
  ids, huggingface_hub), ``hf`` and ``hf_weights`` (Hugging Face config, name and shape maps), ``checkpoint`` (the
  entry point for every file a model is read from and written to; one module per format in ``lit_gpt.formats``),
  ``generate``, and ``batching`` / ``engine`` (continuous batching; the HTTP server is ``lit_gpt.serve``); torch,
  numpy, safetensors, tiktoken and tokenizers. With optional extras (``extras``): ``lora`` (peft), ``quantize``
  (torchao), ``evaluate`` (perplexity and bits per byte, torch only) and ``lm_eval_adapter`` (lm-eval), ``spm``
  (SentencePiece ``tokenizer.model``, sentencepiece).
- ``lit_gpt.data``: reading, cleaning and tokenizing corpora, training windows, BPE training; no Lightning.
- ``lit_gpt.train``: the LightningModule and the plain policies it calls (optimizer, schedule, parallelism, resume),
  DataModules, callbacks and the LightningCLI builder: the only code that imports Lightning.
- ``lit_gpt.cli``: one module per ``lit-gpt`` subcommand; argument parsing and ``error:`` lines live there only.

Names are exported lazily, so ``import lit_gpt.config`` stays free of torch and tiktoken.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "lit_gpt.config",
    "ConfigError": "lit_gpt.errors",
    "ChatTemplate": "lit_gpt.chat",
    "GPT": "lit_gpt.model",
    "Tokenizer": "lit_gpt.tokenizer",
    "load_checkpoint": "lit_gpt.checkpoint",
    "load_model": "lit_gpt.checkpoint",
    "load_tokenizer": "lit_gpt.checkpoint",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """``lit_gpt.GPT`` etc., imported on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lit_gpt' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
