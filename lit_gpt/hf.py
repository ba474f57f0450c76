"""Hugging Face interop as pure maps: our ``Config`` and state dict <-> ``LlamaForCausalLM`` / ``Qwen3ForCausalLM`` /
``GPT2LMHeadModel``.

A LLaMA-style config maps to ``LlamaForCausalLM`` (with ``qk_norm``: ``Qwen3ForCausalLM``, Llama plus a per-head
RMSNorm on queries and keys, ``self_attn.q_norm`` / ``k_norm`` as ours) and a GPT-2-style one to
``GPT2LMHeadModel``. Our module names follow transformers' ``models/llama/modeling_llama.py``, so the Llama map
adds a ``model.`` prefix; GPT-2 (``models/gpt2/modeling_gpt2.py``) stores ``Conv1D`` weights transposed, as (in,
out), and fuses q, k and v into ``attn.c_attn``. RoPE is already in HF's half-split (``rotate_half``) layout, so
no weight is permuted; every map is exact, so export -> import gives bit-identical tensors. GPT-2's byte-level BPE
files (``vocab.json``, ``merges.txt``) are rebuilt from tiktoken's ranks.

Dicts and tensors in, dicts and tensors out: no file is read or written here (``lit_gpt.checkpoint`` does that),
and neither transformers nor Lightning is imported (the tests compare against transformers).
"""

from __future__ import annotations

import torch

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.meta import meta_model
from lit_gpt.tokenizer import Tokenizer

# ---------------------------------------------------------------------------------------------------------------
# Hugging Face configs


def config_to_hf(config: Config, tokenizer: Tokenizer) -> dict:
    """The Hugging Face ``config.json`` for ``config``: ``LlamaForCausalLM`` for RoPE (``Qwen3ForCausalLM`` with
    ``qk_norm``), ``GPT2LMHeadModel`` otherwise.

    ``vocab_size`` is ``padded_vocab_size``; bos and eos are the tokenizer's end-of-text id. RoPE's base is written
    as ``rope_parameters`` (read by transformers 5) and as ``rope_theta`` (transformers 4). Llama has no embedding
    or residual dropout, so ``dropout`` goes to ``attention_dropout`` only (dropout matters in training only).
    The dict also carries a ``lit_gpt`` record (our config and tokenizer spec) from which ``config_from_hf``
    restores the exact ``Config`` (e.g. the unpadded ``vocab_size``) and ``lit_gpt.checkpoint`` the tokenizer.

    Raises:
        ConfigError: naming every setting the chosen class cannot express (e.g. RoPE with LayerNorm, or learned
            positions without biases).
    """
    return {
        **_hf_architecture(config),
        "bos_token_id": tokenizer.eot_id,
        "eos_token_id": tokenizer.eot_id,
        "lit_gpt": {"config": config.to_dict(), "tokenizer": tokenizer.spec},
    }


def _hf_architecture(config: Config) -> dict:
    """The model fields of ``config_to_hf`` (no token ids, no ``lit_gpt`` record)."""
    common = {"vocab_size": config.padded_vocab_size, "tie_word_embeddings": config.tie_embeddings}
    return _llama_to_hf(config, common) if config.position_embedding == "rope" else _gpt2_to_hf(config, common)


def _llama_to_hf(config: Config, common: dict) -> dict:
    """``LlamaForCausalLM`` fields, or ``Qwen3ForCausalLM``'s for a QK-norm model."""
    # QK-norm: Qwen3 is Llama with a per-head RMSNorm on queries and keys before RoPE (our q_norm / k_norm)
    qwen3 = config.qk_norm
    arch, name = ("Qwen3ForCausalLM", "Qwen3") if qwen3 else ("LlamaForCausalLM", "Llama")
    _check_expressible(
        arch,
        "qk_norm=True" if qwen3 else "position_embedding='rope'",
        {
            f"norm='layernorm' ({name} uses RMSNorm)": config.norm != "rmsnorm",
            f"mlp='gelu' ({name}'s MLP is gated: SwiGLU)": config.mlp == "gelu",
            f"sliding_window={config.sliding_window} ({name} attends to the whole prefix here)": config.sliding_window
            is not None,
            "bias=True (Qwen3's MLP has no biases)": qwen3 and config.bias,
            **_switch_problems(config, name),
        },
    )
    fields = {
        "architectures": [arch],
        "model_type": "qwen3" if qwen3 else "llama",
        **common,
        "hidden_size": config.n_embd,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_size,
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rope_theta": config.rope_theta,
        "hidden_act": "silu",
        "attention_bias": config.bias,
        "attention_dropout": config.dropout,
    }
    return {**fields, "use_sliding_window": False} if qwen3 else {**fields, "mlp_bias": config.bias}


def _gpt2_to_hf(config: Config, common: dict) -> dict:
    """``GPT2LMHeadModel`` fields."""
    _check_expressible(
        "GPT2LMHeadModel",
        "position_embedding='learned'",
        {
            "norm='rmsnorm' (GPT-2 uses LayerNorm)": config.norm != "layernorm",
            "mlp='swiglu' (GPT-2's MLP is GELU)": config.mlp == "swiglu",
            "bias=False (GPT-2 always has biases)": not config.bias,
            f"grouped-query attention (n_kv_head={config.n_kv_head} < n_head={config.n_head})": config.n_kv_head
            != config.n_head,
            f"sliding_window={config.sliding_window} (GPT-2 attends to the whole prefix)": config.sliding_window
            is not None,
            **_switch_problems(config, "GPT-2"),
        },
    )
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        **common,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_positions": config.block_size,
        "n_inner": config.intermediate_size,
        "activation_function": "gelu_new",  # the tanh approximation of GELU, as our MLP uses
        "layer_norm_epsilon": config.norm_eps,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
    }


def _switch_problems(config: Config, name: str) -> dict[str, bool]:
    """The optional architecture switches (squared-ReLU MLP, QK-norm, logit soft cap, value residuals) that the
    Hugging Face class ``name`` (Llama, Qwen3, GPT-2) lacks, each with why (Qwen3 has QK-norm)."""
    return {
        f"mlp='relu2' ({name}'s MLP is {'GELU' if name == 'GPT-2' else 'gated: SwiGLU'}, not squared ReLU)": config.mlp
        == "relu2",
        f"qk_norm=True ({name} has no norm on queries and keys)": config.qk_norm and name != "Qwen3",
        f"logit_softcap={config.logit_softcap} ({name} has no tanh cap on the logits)": config.logit_softcap
        is not None,
        f"value_residual=True ({name}'s layers have no value residuals)": config.value_residual,
    }


def config_from_hf(hf: dict) -> Config:
    """Our ``Config`` for a Hugging Face ``config.json`` of a Llama, Qwen3 or GPT-2 model (``model_type`` llama,
    qwen3 or gpt2; Qwen3 is Llama with ``qk_norm``).

    The padded vocabulary is taken as it is (``padding_multiple=1``), unless the file carries the ``lit_gpt``
    record that ``config_to_hf`` writes and that record still describes the same model.

    Raises:
        ConfigError: for another ``model_type``, a missing field, or a feature our model lacks (RoPE scaling, a
            head_dim other than hidden_size / heads, separate attention and MLP bias flags, an exact-erf GELU, ...).
    """
    model_type = hf.get("model_type")
    if model_type not in ("llama", "qwen3", "gpt2"):
        raise ConfigError(
            f"cannot import Hugging Face model_type {model_type!r}: lit_gpt reads 'llama', 'qwen3' and 'gpt2'"
        )
    try:
        config = _gpt2_config_from_hf(hf) if model_type == "gpt2" else _llama_config_from_hf(hf, model_type)
    except KeyError as err:
        raise ConfigError(f"the Hugging Face {model_type} config.json lacks {err.args[0]!r}") from None
    record = hf.get("lit_gpt")
    if isinstance(record, dict) and isinstance(record.get("config"), dict):
        try:
            saved = Config(**record["config"])
            same = all(hf.get(key) == value for key, value in _hf_architecture(saved).items())
        except (ConfigError, TypeError):
            same = False
        if same:
            return saved
    return config


def _llama_config_from_hf(hf: dict, model_type: str) -> Config:
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    _check_importable(
        model_type,
        {
            "use_sliding_window=True (lit_gpt's window covers every layer)": hf.get("use_sliding_window", False),
            f"rope_type {rope_type!r} (lit_gpt has plain RoPE only)": rope_type != "default",
            f"partial rotary factor {rope.get('partial_rotary_factor')}": rope.get("partial_rotary_factor", 1.0) != 1.0,
            f"hidden_act {hf.get('hidden_act')!r} (lit_gpt's SwiGLU uses silu)": hf.get("hidden_act", "silu") != "silu",
            f"head_dim {hf.get('head_dim')} != hidden_size / num_attention_heads": hf.get("head_dim")
            not in (None, hidden // heads),
            "attention_bias != mlp_bias (lit_gpt has one bias flag)": hf.get("attention_bias", False)
            != hf.get("mlp_bias", False),
        },
    )
    return Config(
        vocab_size=hf["vocab_size"],
        block_size=hf.get("max_position_embeddings", 2048),
        n_layer=hf["num_hidden_layers"],
        n_head=heads,
        n_embd=hidden,
        n_kv_head=hf.get("num_key_value_heads") or heads,
        intermediate_size=hf["intermediate_size"],
        position_embedding="rope",
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        mlp="swiglu",
        bias=hf.get("attention_bias", False),
        tie_embeddings=hf.get("tie_word_embeddings", False),
        dropout=hf.get("attention_dropout", 0.0),
        qk_norm=model_type == "qwen3",
    )


def _gpt2_config_from_hf(hf: dict) -> Config:
    activation = hf.get("activation_function", "gelu_new")
    _check_importable(
        "gpt2",
        {
            f"activation_function {activation!r} (lit_gpt's GELU is the tanh approximation)": activation
            not in ("gelu_new", "gelu_pytorch_tanh"),
            "scale_attn_weights=False": not hf.get("scale_attn_weights", True),
            "scale_attn_by_inverse_layer_idx=True": hf.get("scale_attn_by_inverse_layer_idx", False),
            "add_cross_attention=True": hf.get("add_cross_attention", False),
        },
    )
    n_embd = hf.get("n_embd", 768)
    return Config(
        vocab_size=hf.get("vocab_size", 50257),
        block_size=hf.get("n_positions", 1024),
        n_layer=hf.get("n_layer", 12),
        n_head=hf.get("n_head", 12),
        n_embd=n_embd,
        intermediate_size=hf.get("n_inner") or 4 * n_embd,
        position_embedding="learned",
        norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        mlp="gelu",
        bias=True,
        tie_embeddings=hf.get("tie_word_embeddings", True),
        dropout=hf.get("resid_pdrop", 0.1),
    )


def _check_expressible(arch: str, reason: str, problems: dict[str, bool]) -> None:
    found = [name for name, bad in problems.items() if bad]
    if found:
        raise ConfigError(
            f"cannot export to Hugging Face: {arch} (chosen for {reason}) cannot express {'; '.join(found)}; "
            "save it in lit_gpt's own folder format instead"
        )


def _check_importable(model_type: str, problems: dict[str, bool]) -> None:
    found = [name for name, bad in problems.items() if bad]
    if found:
        raise ConfigError(f"cannot import this Hugging Face {model_type} model: lit_gpt lacks {'; '.join(found)}")


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face weights

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
