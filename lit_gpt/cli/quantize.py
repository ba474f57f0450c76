"""``lit-gpt quantize --checkpoint PATH --out DIR --mode int8|int4 [--group_size G] [--device cpu|cuda]``: write a
quantized folder (``lit_gpt.quantize``, ``lit_gpt.checkpoint.save_quantized``) that ``lit-gpt generate`` and
``lit-gpt evaluate`` load. No Lightning is imported."""

from __future__ import annotations

from lit_gpt.checkpoint import save_quantized
from lit_gpt.cli.args import ArgumentParser
from lit_gpt.cli.loading import load_for_inference
from lit_gpt.quantize import DEFAULT_GROUP_SIZE, GROUP_SIZES, MODES, model_bytes, quantize


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lit-gpt quantize", description="Quantize a checkpoint's weights for inference.")
    parser.add_argument("--checkpoint", required=True, help="any checkpoint `lit-gpt generate` reads (LoRA: merged)")
    parser.add_argument("--out", required=True, help="the folder to write (created if missing; files are replaced)")
    parser.add_argument("--mode", choices=MODES, required=True, help="int8 or int4 weights (see lit_gpt/quantize.py)")
    parser.add_argument(
        "--group_size",
        type=int,
        choices=GROUP_SIZES,
        default=DEFAULT_GROUP_SIZE,
        help="int4: input weights per scale and zero point",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu or cuda (default: cuda if available); int4 runs only on the kind of device it was quantized on",
    )
    return parser


def main(args: list[str]) -> None:
    """Quantize the checkpoint that ``args`` (``["quantize", flags...]``) names and say what was written.

    Raises:
        ConfigError: for bad flags, an unusable checkpoint, torchao missing, a mode this torchao or device lacks,
            or an ``--out`` that is a file.
    """
    opts = _parser().parse_args(args[1:])
    opts.quantize = None  # load in float32, measure, then quantize
    model, tokenizer, _ = load_for_inference(opts)
    float_bytes = model_bytes(model)
    quantize(model, opts.mode, opts.group_size)
    save_quantized(model, tokenizer, opts.out, opts.mode, opts.group_size)
    size = model_bytes(model)
    print(
        f"wrote an {opts.mode} model to {opts.out}: {size / 2**20:,.1f} MiB of weights, "
        f"{100 * size / float_bytes:.1f}% of its {float_bytes / 2**20:,.1f} MiB in float32 (load it with "
        "lit_gpt.load_checkpoint, `lit-gpt generate` or `lit-gpt evaluate`)"
    )
