"""Hugging Face interop as pure maps: our ``Config`` <-> the ``config.json`` of ``LlamaForCausalLM`` /
``Qwen3ForCausalLM`` / ``GPT2LMHeadModel``; the state-dict maps are ``lit_gpt.hf_weights``'s and the tokenizer files
``lit_gpt.hf_tokenizer``'s.

A LLaMA-style config maps to ``LlamaForCausalLM`` (with ``qk_norm``: ``Qwen3ForCausalLM``, Llama plus a per-head
RMSNorm on queries and keys, ``self_attn.q_norm`` / ``k_norm`` as ours) and a GPT-2-style one to
``GPT2LMHeadModel``. RoPE, and its scaling, are carried by ``rope_to_hf`` / ``rope_from_hf`` as transformers 5
(``rope_parameters``) and 4 (``rope_scaling``, ``rope_theta``) read them. Settings a class cannot express are
refused by name, on export and on import.

Dicts in, dicts out: no file is read or written here (``lit_gpt.checkpoint`` does that), and neither transformers
nor Lightning is imported (the tests compare against transformers).
"""

from __future__ import annotations

import math

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
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
        **rope_to_hf(config),
        "rms_norm_eps": config.norm_eps,
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
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    _check_importable(
        model_type,
        {
            "use_sliding_window=True (lit_gpt's window covers every layer)": hf.get("use_sliding_window", False),
            f"hidden_act {hf.get('hidden_act')!r} (lit_gpt's SwiGLU uses silu)": hf.get("hidden_act", "silu") != "silu",
            f"head_dim {hf.get('head_dim')} != hidden_size / num_attention_heads": hf.get("head_dim")
            not in (None, hidden // heads),
            "attention_bias != mlp_bias (lit_gpt has one bias flag)": hf.get("attention_bias", False)
            != hf.get("mlp_bias", False),
        },
    )
    return Config(
        vocab_size=hf["vocab_size"],
        **rope_from_hf(hf, model_type),
        n_layer=hf["num_hidden_layers"],
        n_head=heads,
        n_embd=hidden,
        n_kv_head=hf.get("num_key_value_heads") or heads,
        intermediate_size=hf["intermediate_size"],
        position_embedding="rope",
        norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        mlp="swiglu",
        bias=hf.get("attention_bias", False),
        tie_embeddings=hf.get("tie_word_embeddings", False),
        dropout=hf.get("attention_dropout", 0.0),
        qk_norm=model_type == "qwen3",
    )


_HF_ROPE_EXTRAS = {  # the optional keys of each scaling, named as in RopeScaling and in transformers' rope_parameters
    "yarn": ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"),
    "llama3": ("low_freq_factor", "high_freq_factor"),
}


def rope_to_hf(config: Config) -> dict:
    """The Hugging Face fields of ``config``'s RoPE: ``max_position_embeddings``, ``rope_parameters`` (transformers 5:
    ``rope_type``, ``rope_theta`` and the scaling's keys), ``rope_theta`` and, with a scaling, ``rope_scaling``
    (transformers 4: the same keys but the base). ``original_block_size`` is ``original_max_position_embeddings``
    for yarn and llama3; ``max_position_embeddings`` is ``block_size``, but for dynamic scaling, which transformers
    computes from that length: there it is ``original_block_size`` (the ``lit_gpt`` record keeps ``block_size``).
    """
    scaling, theta = config.rope_scaling, config.rope_theta
    if scaling is None:
        params = {"rope_type": "default", "rope_theta": theta}
        return {"max_position_embeddings": config.block_size, "rope_parameters": params, "rope_theta": theta}
    keys = {"rope_type": scaling.type, "factor": float(scaling.factor)}
    if scaling.type in _HF_ROPE_EXTRAS:
        keys["original_max_position_embeddings"] = scaling.original_block_size
    keys.update(
        (k, getattr(scaling, k)) for k in _HF_ROPE_EXTRAS.get(scaling.type, ()) if getattr(scaling, k) is not None
    )
    length = scaling.original_block_size if scaling.type == "dynamic" else config.block_size
    params = {**keys, "rope_theta": theta}
    return {"max_position_embeddings": length, "rope_parameters": params, "rope_theta": theta, "rope_scaling": keys}


def rope_from_hf(hf: dict, model_type: str = "llama") -> dict:
    """``Config`` arguments ``block_size``, ``rope_theta`` and ``rope_scaling`` (a dict or None) for the RoPE of a
    Hugging Face ``config.json`` of the Llama family, read as transformers 5 reads it: ``rope_scaling`` (transformers
    4's name, with ``type`` for ``rope_type`` in older files) wins over ``rope_parameters``, and the base comes from
    that dict or the top-level ``rope_theta``. ``block_size`` is ``max_position_embeddings``, but for dynamic
    scaling, which transformers computes from that length: it becomes ``original_block_size``, and ``block_size``
    ``factor`` times it (the length a factor is named for). A linear scaling's ``original_block_size``, only a bound
    (``RopeScaling``), is ``max_position_embeddings / factor`` rounded up unless the file names it.

    Raises:
        ConfigError: for a rope_type other than default, linear, dynamic, yarn and llama3, or a partial rotary factor.
        KeyError: for a missing ``factor`` (linear, dynamic, llama3).
    """
    rope = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
    kind = rope.get("rope_type", rope.get("type", "default"))
    partial = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    supported = kind in ("default", "linear", "dynamic", "yarn", "llama3")
    _check_importable(
        model_type,
        {
            f"rope_type {kind!r} (it reads default, linear, dynamic, yarn, llama3)": not supported,
            f"partial rotary factor {partial}": partial != 1.0,
        },
    )
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    length = hf.get("max_position_embeddings", 2048)
    if kind == "default":
        return {"block_size": length, "rope_theta": theta, "rope_scaling": None}
    # a top-level original_max_position_embeddings (Phi-3 style) wins, as in transformers' standardize_rope_params
    original = hf.get("original_max_position_embeddings", rope.get("original_max_position_embeddings", length))
    factor = (rope.get("factor") or length / original) if kind == "yarn" else rope["factor"]
    if kind == "linear":
        original = rope.get("original_max_position_embeddings") or math.ceil(length / factor)
    elif kind == "dynamic":
        original, length = length, round(factor * length)
    extras = {k: rope[k] for k in _HF_ROPE_EXTRAS.get(kind, ()) if rope.get(k) is not None}
    scaling = {"type": kind, "factor": factor, "original_block_size": original, **extras}
    return {"block_size": length, "rope_theta": theta, "rope_scaling": scaling}


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
