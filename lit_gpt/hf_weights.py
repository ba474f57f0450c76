"""Hugging Face weights as pure maps: our state dict <-> ``LlamaForCausalLM`` / ``Qwen3ForCausalLM`` /
``GPT2LMHeadModel`` names and layouts (their configs are ``lit_gpt.hf``'s).

Our module names follow transformers' ``models/llama/modeling_llama.py``, so the Llama map adds a ``model.`` prefix;
GPT-2 (``models/gpt2/modeling_gpt2.py``) stores ``Conv1D`` weights transposed, as (in, out), and fuses q, k and v into
``attn.c_attn``. RoPE is already in HF's half-split (``rotate_half``) layout, so no weight is permuted; every map is
exact, so export -> import gives bit-identical tensors.

Tensors in, tensors out: no file is read or written here (``lit_gpt.checkpoint`` does that).
"""

from __future__ import annotations

import torch

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.meta import meta_model

_GPT2_TOP = {"embed_tokens": "wte", "embed_positions": "wpe", "norm": "ln_f"}
_GPT2_LAYER = {
    "input_layernorm": "ln_1",
    "post_attention_layernorm": "ln_2",
    "self_attn.o_proj": "attn.c_proj",
    "mlp.up_proj": "mlp.c_fc",
    "mlp.down_proj": "mlp.c_proj",
}
_GPT2_CONV1D = ("self_attn.o_proj", "mlp.up_proj", "mlp.down_proj")  # HF Conv1D stores weight as (in, out)


def _gpt2_key(key: str) -> tuple[str, bool]:
    """The GPT2LMHeadModel name of one of our (non-q/k/v) parameters, and whether its weight is transposed."""
    module, param = key.rsplit(".", 1)
    if module == "lm_head":
        return key, False
    if module in _GPT2_TOP:
        return f"transformer.{_GPT2_TOP[module]}.{param}", False
    _, i, sub = module.split(".", 2)  # layers.{i}.{sub}
    return f"transformer.h.{i}.{_GPT2_LAYER[sub]}.{param}", sub in _GPT2_CONV1D and param == "weight"


def state_to_hf(state: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
    """Map our state dict to ``LlamaForCausalLM`` (and Qwen3) / ``GPT2LMHeadModel`` names and layouts (contiguous
    tensors).

    A tied head is left out, as transformers saves it. Llama: ``model.`` prefix on all but ``lm_head``. GPT-2:
    ``c_attn`` is ``cat(q, k, v)`` along the output dimension, and Conv1D weights are transposed to (in, out).
    """
    state = {k: v for k, v in state.items() if not (config.tie_embeddings and k == "lm_head.weight")}
    if config.position_embedding == "rope":
        return {k if k.startswith("lm_head.") else f"model.{k}": v.contiguous() for k, v in state.items()}
    out = {}
    for i in range(config.n_layer):
        for param in ("weight", "bias"):
            qkv = torch.cat([state.pop(f"layers.{i}.self_attn.{x}_proj.{param}") for x in "qkv"])  # (3C, C) or (3C,)
            out[f"transformer.h.{i}.attn.c_attn.{param}"] = qkv.t().contiguous() if param == "weight" else qkv
    for key, value in state.items():
        name, transpose = _gpt2_key(key)
        out[name] = value.t().contiguous() if transpose else value.contiguous()
    return out


def state_from_hf(hf_state: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
    """The inverse of ``state_to_hf``: our state dict from Hugging Face tensors (a tied head is filled in).

    GPT-2 files from the Hub without the ``transformer.`` prefix, and their attention-mask buffers
    (``attn.bias``, ``attn.masked_bias``), are accepted, as are Llama's ``rotary_emb.inv_freq`` buffers.

    Raises:
        ConfigError: if a weight the config needs is missing, or a weight is left over.
    """
    hf_state = dict(hf_state)
    if config.position_embedding == "learned" and "wte.weight" in hf_state:
        hf_state = {k if k.startswith("lm_head.") else f"transformer.{k}": v for k, v in hf_state.items()}
    ours = list(meta_model(config).state_dict())  # key names only: no memory, no initialisation
    if config.tie_embeddings:
        ours.remove("lm_head.weight")
        hf_state.pop("lm_head.weight", None)  # some tied checkpoints store the head too
    state = {}

    def take(name: str) -> torch.Tensor:
        if name not in hf_state:
            raise ConfigError(f"the Hugging Face weights lack {name!r}, which config.json implies")
        return hf_state.pop(name)

    if config.position_embedding == "rope":
        for key in ours:
            state[key] = take(key if key.startswith("lm_head.") else f"model.{key}")
    else:
        C = config.n_embd
        for i in range(config.n_layer):
            for param in ("weight", "bias"):
                qkv = take(f"transformer.h.{i}.attn.c_attn.{param}")
                qkv = qkv.t() if param == "weight" else qkv  # (3C, C) or (3C,)
                for x, part in zip("qkv", qkv.split(C)):
                    state[f"layers.{i}.self_attn.{x}_proj.{param}"] = part
        for key in ours:
            if ".self_attn." in key and key.split(".")[-2] in ("q_proj", "k_proj", "v_proj"):
                continue
            name, transpose = _gpt2_key(key)
            state[key] = take(name).t() if transpose else take(name)
    buffers = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")
    left = [k for k in hf_state if not k.endswith(buffers)]
    if left:
        raise ConfigError(
            f"unexpected Hugging Face weights {left[:3]} ({len(left)} in all): lit_gpt has no such tensors"
        )
    if config.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    return state
