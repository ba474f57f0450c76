"""Optional extras (``pip install -e ".[name]"``): imported only by the module that needs one, through ``require``.

| extra   | package  | used by                                          |
| ------- | -------- | ------------------------------------------------ |
| ``lora``  | peft     | ``lit_gpt.lora`` (LoRA adapters)                  |
| ``quant`` | torchao  | ``lit_gpt.quantize`` (int8 / int4 weights)        |
| ``eval``  | lm-eval  | ``lit_gpt.lm_eval_adapter`` (benchmark tasks)     |
| ``sentencepiece`` | sentencepiece, protobuf | ``lit_gpt.spm`` (SentencePiece ``tokenizer.model``) |
| ``gguf``  | gguf     | ``lit_gpt.formats.gguf`` (GGUF files for llama.cpp) |
| ``serve`` | fastapi, uvicorn, openai | ``lit_gpt.serve.app``, ``lit_gpt.cli.serve`` (``lit-gpt serve``); openai: tests, bench |

None of them changes the torch version (checked with ``pip install --dry-run``). Standard library only.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from lit_gpt.errors import ConfigError

_IMPORT_NOISE = ("torchao", "torch.utils._pytree")
"""Loggers that warn while torchao is imported (by us, or by peft when torchao is installed): torchao about its
optional CUDA kernels (``Failed to load .../_C_mxfp8...so``), torch about torchao's enum registrations. Neither says
anything about lit_gpt's use, so they are silenced during the import only."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` (e.g. ``"peft"``) for ``what`` (e.g. ``"LoRA"``), quietly.

    Raises:
        ConfigError: naming the install command of ``extra`` when ``module``'s package is not installed.
        ModuleNotFoundError: when the package is installed but ``module`` (a submodule) is not part of this version,
            for the caller to turn into a message about that feature.
    """
    loggers = [logging.getLogger(name) for name in _IMPORT_NOISE]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        package = module.split(".")[0]
        if err.name != package:
            raise  # the package is there but this part of it (or one of its dependencies) is not: the caller decides
        raise ConfigError(f'{what} needs the optional package {package}: pip install -e ".[{extra}]"') from None
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
