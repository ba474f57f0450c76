"""lit_gpt: train LLaMA- and GPT-2-style language models from scratch with PyTorch Lightning.

Importing the package imports the pure-PyTorch model only; the Lightning glue lives in ``lit_gpt.data``,
``lit_gpt.lit_module`` and ``lit_gpt.cli``.
"""

from lit_gpt.config import Config, ConfigError
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

__all__ = ["GPT", "Config", "ConfigError", "Tokenizer"]
__version__ = "0.1.0"
