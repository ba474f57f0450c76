"""What ``lit-gpt generate`` and ``lit-gpt evaluate`` share: the ``--checkpoint``, ``--device`` and ``--quantize``
options, the context overrides ``--model.config.block_size`` and ``--model.config.rope_scaling`` (the keys ``lit-gpt
fit`` uses), and loading a model for inference with them."""

from __future__ import annotations

import argparse

import torch

from lit_gpt.checkpoint import load_checkpoint
from lit_gpt.errors import ConfigError
from lit_gpt.model import GPT
from lit_gpt.quantize import DEFAULT_GROUP_SIZE, GROUP_SIZES, MODES, quantize
from lit_gpt.tokenizer import Tokenizer


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--device``, ``--quantize``, ``--group_size`` and the context overrides."""
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
    parser.add_argument(
        "--model.config.block_size",
        dest="block_size_override",
        type=int,
        default=None,
        help="run a RoPE model at this context length instead of its own (with a rope_scaling to extend it)",
    )
    parser.add_argument(
        "--model.config.rope_scaling",
        dest="rope_scaling_override",
        default=None,
        help="replace the model's RoPE scaling, in YAML: '{type: yarn, factor: 4, original_block_size: 256}' "
        "(types linear, dynamic, yarn, llama3), or null for none",
    )


def load_for_inference(opts: argparse.Namespace) -> tuple[GPT, Tokenizer, str]:
    """The model (eval mode, quantized if asked), its tokenizer and the device name, from ``add_model_arguments``'
    options.

    Raises:
        ConfigError: as ``lit_gpt.checkpoint.load_checkpoint``, ``override_context`` and ``lit_gpt.quantize.quantize``
            do.
    """
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_checkpoint(opts.checkpoint, device)
    override_context(model, getattr(opts, "block_size_override", None), getattr(opts, "rope_scaling_override", None))
    if opts.quantize:
        quantize(model, opts.quantize, opts.group_size)
    return model, tokenizer, device


def override_context(model: GPT, block_size: int | None, rope_scaling: str | None) -> None:
    """Give ``model`` (in place) another ``block_size`` and/or RoPE scaling (``rope_scaling``: YAML text of a mapping,
    or ``null``), recomputing its RoPE tables; None leaves a setting as it is. Neither changes a weight's shape, so
    a model trained at one length can be run, unchanged, at another.

    Raises:
        ConfigError: for text that is not a mapping or null, a block_size change on a model with learned positions
            (its table has block_size rows), or a combination ``Config`` refuses.
    """
    if block_size is None and rope_scaling is None:
        return
    import yaml  # PyYAML comes with jsonargparse; only these flags read YAML

    changes: dict = {} if block_size is None else {"block_size": block_size}
    if rope_scaling is not None:
        try:
            changes["rope_scaling"] = yaml.safe_load(rope_scaling)
        except yaml.YAMLError as err:
            raise ConfigError(f"--model.config.rope_scaling is not YAML: {' '.join(str(err).split())}") from None
    rope = model.config.position_embedding == "rope"
    if not rope and block_size not in (None, model.config.block_size):
        raise ConfigError("--model.config.block_size needs a RoPE model: learned positions have block_size rows")
    model.config = model.config.replace(**changes)  # ConfigError for a bad scaling, or one on learned positions
    if rope:
        model.reset_rope_cache()
