"""LoRA adapters as a peft folder: ``adapter_model.safetensors`` and ``adapter_config.json``, for
``peft.PeftModel.from_pretrained`` over the Hugging Face base (``lit_gpt.formats.hf_folder``). Written only: peft
reads it. The adapters themselves (settings, injection, merging) are ``lit_gpt.lora``'s."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from lit_gpt import hf_weights
from lit_gpt.errors import ConfigError
from lit_gpt.extras import require
from lit_gpt.formats.files import make_dir
from lit_gpt.lora import ADAPTER, LoRA, has_adapters, peft_config
from lit_gpt.model import GPT


def save_peft_adapter(model: GPT, lora: LoRA, out_dir: str | Path, base: str | None = None) -> Path:
    """Write the adapters of ``model`` as a peft folder: ``adapter_model.safetensors`` and ``adapter_config.json``.

    ``peft.PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(hf_base), out_dir)`` then computes our model's
    logits, where ``hf_base`` is the base saved by ``save_hf``. Names follow transformers' Llama
    (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``). ``base`` is recorded as
    ``base_model_name_or_path``. Returns the folder.

    Raises:
        ConfigError: for a GPT-2-style model (transformers' GPT-2 fuses q, k and v into one Conv1D, which peft adapts
            as one matrix, so our adapters have no exact peft form there), a model without adapters, peft missing,
            or an ``out_dir`` that is a file.
    """
    peft = require("peft", "lora", "LoRA")
    if model.config.position_embedding != "rope":
        raise ConfigError(
            "peft adapter folders are written for LlamaForCausalLM (RoPE models); transformers' GPT-2 fuses q, k and "
            "v, so merge the adapters into the base (lit_gpt.lora.merge_adapters) and save that model instead"
        )
    if not has_adapters(model):
        raise ConfigError(
            "the model has no LoRA adapters to save: load a LoRA checkpoint with merge_lora=False, or add adapters "
            "with lit_gpt.lora.add_adapters"
        )
    state = peft.get_peft_model_state_dict(model, adapter_name=ADAPTER)
    state = {f"base_model.model.{k}": v.detach().cpu() for k, v in hf_weights.state_to_hf(state, model.config).items()}
    out = make_dir(out_dir)
    save_file(state, out / "adapter_model.safetensors", metadata={"format": "pt"})
    peft_config(lora, base).save_pretrained(str(out))
    return out
