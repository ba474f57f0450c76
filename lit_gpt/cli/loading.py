"""What ``lit-gpt generate`` and ``lit-gpt evaluate`` share: the ``--checkpoint``, ``--device`` and ``--quantize``
options, and loading a model for inference with them."""

from __future__ import annotations

import argparse

import torch

from lit_gpt.checkpoint import load_checkpoint
from lit_gpt.model import GPT
from lit_gpt.quantize import DEFAULT_GROUP_SIZE, GROUP_SIZES, MODES, quantize
from lit_gpt.tokenizer import Tokenizer


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--device``, ``--quantize`` and ``--group_size``."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a .ckpt from `lit-gpt fit` (LoRA ones too), a folder from `lit-gpt export` or "
        "`lit-gpt quantize`, or a Hugging Face Llama / GPT-2 folder or hub id (org/name)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument(
        "--quantize",
        choices=MODES,
        default=None,
        help='quantize the weights after loading (torchao; pip install -e ".[quant]")',
    )
    parser.add_argument(
        "--group_size", type=int, choices=GROUP_SIZES, default=DEFAULT_GROUP_SIZE, help="int4: input weights per scale"
    )


def load_for_inference(opts: argparse.Namespace) -> tuple[GPT, Tokenizer, str]:
    """The model (eval mode, quantized if asked), its tokenizer and the device name, from ``add_model_arguments``'
    options.

    Raises:
        ConfigError: as ``lit_gpt.checkpoint.load_checkpoint`` and ``lit_gpt.quantize.quantize`` do.
    """
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_checkpoint(opts.checkpoint, device)
    if opts.quantize:
        quantize(model, opts.quantize, opts.group_size)
    return model, tokenizer, device
