"""``lit-gpt export --checkpoint PATH --out DIR [--format hf|lit_gpt|peft|gguf] [--dtype f32|f16|q8_0] [--merge]``:
write a model folder for transformers (``hf``), our own safetensors folder (``lit_gpt``), a LoRA checkpoint's adapters
for peft (``peft``), or one GGUF file for llama.cpp and Ollama (``gguf``; ``--out`` is the ``.gguf`` file or a folder
for ``model.gguf``); see ``lit_gpt.checkpoint`` (``lit_gpt.formats``) and ``lit_gpt.lora``. No Lightning is
imported."""

from __future__ import annotations

import sys

from lit_gpt import hf_tokenizer
from lit_gpt.checkpoint import load_checkpoint, lora_record, save_folder, save_gguf, save_hf, save_peft_adapter
from lit_gpt.cli.args import ArgumentParser
from lit_gpt.errors import ConfigError
from lit_gpt.lora import LoRA
from lit_gpt.quantize import is_quantized


def main(args: list[str]) -> None:
    """Export the checkpoint that ``args`` (``["export", flags...]``) names and say what was written.

    Raises:
        ConfigError: for bad flags, an unusable checkpoint, an ``--out`` that is a file, a model the chosen
            Hugging Face class cannot express (nothing is written then), a LoRA checkpoint without ``--merge`` or
            ``--format peft``, ``--format peft`` without a LoRA checkpoint, a quantized model, ``--dtype`` without
            ``--format gguf``, a model or tokenizer llama.cpp cannot express, or ``--format gguf`` without the
            ``gguf`` extra.
    """
    opts = _parser().parse_args(args[1:])
    if opts.dtype is not None and opts.format != "gguf":
        raise ConfigError(f"--dtype applies to --format gguf only, not --format {opts.format}")
    lora = lora_record(opts.checkpoint)
    if opts.merge and (lora is None) != (opts.format == "peft"):  # peft without adapters is refused below
        why = "it has no LoRA adapters to merge" if lora is None else "--format peft exports the adapters unmerged"
        print(f"warning: --merge did nothing: {why}; exporting {opts.checkpoint} as it is", file=sys.stderr)
    if opts.format == "peft":
        _export_adapters(opts.checkpoint, opts.out, lora)
        return
    if lora is not None and not opts.merge:
        raise ConfigError(
            f"{opts.checkpoint} is a LoRA checkpoint: pass --merge to export its base with the adapters "
            "merged in, or --format peft to export the adapters alone"
        )
    model, tokenizer = load_checkpoint(opts.checkpoint)
    if is_quantized(model):
        raise ConfigError(
            f"{opts.checkpoint} is quantized, which neither transformers nor our folder format reads: "
            "export the float checkpoint it was quantized from"
        )
    if opts.format == "gguf":
        path = save_gguf(model, tokenizer, opts.out, dtype=opts.dtype or "f32")
        print(
            f"wrote a GGUF file to {path} (llama.cpp: llama-completion -m {path} -no-cnv -p PROMPT; Ollama: FROM {path})"
        )
        return
    if opts.format == "lit_gpt":
        save_folder(model, tokenizer, opts.out)
        print(f"wrote a lit_gpt folder to {opts.out} (load it with lit_gpt.load_checkpoint)")
        return
    try:
        arch = save_hf(model, tokenizer, opts.out)
    except ConfigError as err:
        raise ConfigError(f"{err} (--format lit_gpt)") from None
    print(f"wrote a Hugging Face {arch} to {opts.out} (load it with transformers.AutoModelForCausalLM.from_pretrained)")
    if not hf_tokenizer.has_hf_files(tokenizer):
        print(f"no tokenizer files: the {tokenizer.name!r} tokenizer has no Hugging Face equivalent here")


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="lit-gpt export", description="Export a lit_gpt checkpoint to a folder or a GGUF file."
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a .ckpt written by `lit-gpt fit`, an exported folder, or a hub id (org/name)",
    )
    parser.add_argument(
        "--out", required=True, help="the folder to write (created if missing; files are replaced), or a .gguf file"
    )
    parser.add_argument(
        "--format",
        choices=("hf", "lit_gpt", "peft", "gguf"),
        default="hf",
        help="hf: LlamaForCausalLM, Qwen3ForCausalLM (qk_norm) or GPT2LMHeadModel for transformers; "
        "lit_gpt: our own folder; peft: a LoRA checkpoint's adapters "
        "(adapter_model.safetensors, adapter_config.json); gguf: one file for llama.cpp and Ollama "
        "(--out FILE.gguf, or a folder for model.gguf)",
    )
    parser.add_argument(
        "--dtype", choices=("f32", "f16", "q8_0"), help="--format gguf: the type of the weight matrices (default f32)"
    )
    parser.add_argument(
        "--merge", action="store_true", help="a LoRA checkpoint: merge the adapters into its base and export the result"
    )
    return parser


def _export_adapters(checkpoint: str, out: str, lora: dict | None) -> None:
    """``--format peft``: the adapters of a LoRA checkpoint as a peft folder."""
    if lora is None:
        raise ConfigError(
            f"--format peft writes LoRA adapters, and {checkpoint} has none: pass a checkpoint of a "
            "`lit-gpt fit` run with model.lora"
        )
    model, _ = load_checkpoint(checkpoint, merge_lora=False)
    base = lora["base"]["path"]
    save_peft_adapter(model, LoRA.from_record(lora), out, base=base)
    print(
        f"wrote LoRA adapters to {out} for peft: PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(BASE), "
        f"{out!r}), where BASE is `lit-gpt export --checkpoint {base} --out BASE`"
    )
