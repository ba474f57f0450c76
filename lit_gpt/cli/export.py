"""``lit-gpt export --checkpoint PATH --out DIR [--format hf|lit_gpt]``: write a model folder for transformers
(``hf``) or our own safetensors folder (``lit_gpt``); see ``lit_gpt.checkpoint``. No Lightning is imported."""

from __future__ import annotations

from lit_gpt import hf
from lit_gpt.checkpoint import load_checkpoint, save_folder, save_hf
from lit_gpt.cli.args import ArgumentParser


def main(args: list[str]) -> None:
    """Export the checkpoint that ``args`` (``["export", flags...]``) names and say what was written.

    Raises:
        ConfigError: for bad flags, an unusable checkpoint, an ``--out`` that is a file, or a model the chosen
            Hugging Face class cannot express (nothing is written then).
    """
    parser = ArgumentParser(prog="lit-gpt export", description="Export a lit_gpt checkpoint to a folder.")
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by `lit-gpt fit`, or an exported folder")
    parser.add_argument("--out", required=True, help="the folder to write (created if missing; files are replaced)")
    parser.add_argument("--format", choices=("hf", "lit_gpt"), default="hf",
                        help="hf: LlamaForCausalLM or GPT2LMHeadModel for transformers; lit_gpt: our own folder")
    opts = parser.parse_args(args[1:])
    model, tokenizer = load_checkpoint(opts.checkpoint)
    if opts.format == "lit_gpt":
        save_folder(model, tokenizer, opts.out)
        print(f"wrote a lit_gpt folder to {opts.out} (load it with lit_gpt.load_checkpoint)")
        return
    arch = save_hf(model, tokenizer, opts.out)
    print(f"wrote a Hugging Face {arch} to {opts.out} (load it with transformers.AutoModelForCausalLM.from_pretrained)")
    if tokenizer.encoding is None or tokenizer.name not in hf.HF_TOKENIZERS:
        print(f"no tokenizer files: the {tokenizer.name!r} tokenizer has no Hugging Face equivalent here")
