"""Hugging Face interop as pure maps: our ``Config`` and state dict <-> the ``config.json`` and weights of transformers'
Llama, Qwen2, Qwen3 and GPT-2 families. A family is one table (``Family``), read from ``config.json`` and not from a
list of model names: its ``model_type`` and class, the ``config.json`` keys that are ``Config`` fields (with
transformers' default for a missing key), what every model of the family shares, and what lit_gpt cannot express in
either direction, each with the reason. ``LLAMA`` is every ``LlamaForCausalLM`` (Llama 2 and 3, SmolLM2, TinyLlama:
GQA, tied or untied embeddings, any ``head_dim``); ``QWEN2`` is Llama with biases on q, k and v only (``qkv_bias``);
``QWEN3`` is Llama with a per-head RMSNorm on queries and keys (``qk_norm``) and no biases; ``GPT2`` is
``GPT2LMHeadModel``. RoPE and its scaling are one call each way, ``rope_to_hf`` / ``rope_from_hf``, as transformers 5
(``rope_parameters``) and 4 (``rope_scaling``, ``rope_theta``) read them. Export picks the family from the config
(``family_for``). The weight maps (``state_to_hf``, ``state_from_hf``) are ``lit_gpt.hf_weights``', re-exported here:
export -> import gives bit-identical tensors. No file is read or written here, and neither transformers nor Lightning
is imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.hf_weights import state_from_hf, state_to_hf
from lit_gpt.tokenizer import Tokenizer

__all__ = ["FAMILIES", "Family", "config_from_hf", "config_to_hf", "family_for", "state_from_hf", "state_to_hf"]

REQUIRED = object()
"""The default of a ``Family.fields`` key that ``config.json`` must hold (a shape)."""


@dataclass(frozen=True)
class Family:
    """One Hugging Face architecture family: how its ``config.json`` maps to ``Config`` and back.

    Attributes:
        name: the family in messages (``Llama``, ``Qwen2``, ``Qwen3``, ``GPT-2``).
        model_type, architecture: ``config.json``'s ``model_type`` and the class written to ``architectures``.
        chosen_for: the ``Config`` setting that makes ``family_for`` choose this family, for export messages.
        fields: (``config.json`` key, ``Config`` field, default) read on import and written on export; the default is
            that of transformers' config class for a missing key, ``REQUIRED`` where the key must be there. On export
            ``vocab_size`` is the padded vocabulary and ``head_dim`` the head size.
        fixed: the ``Config`` fields every model of the family has.
        read: more ``Config`` fields computed from ``config.json`` (RoPE's); raises ``ConfigError`` for what lit_gpt
            lacks there.
        written: more ``config.json`` keys for a ``Config`` on export (constants, RoPE's).
        refused: ``config.json`` -> {what lit_gpt lacks, with why: whether this model has it}, checked on import.
        inexpressible: ``Config`` -> {a setting, with why the family lacks it: whether this config has it}, checked
            on export.
    """

    name: str
    model_type: str
    architecture: str
    chosen_for: str
    fields: tuple[tuple[str, str, object], ...]
    fixed: dict
    read: Callable[[dict], dict]
    written: Callable[[Config], dict]
    refused: Callable[[dict], dict[str, bool]]
    inexpressible: Callable[[Config], dict[str, bool]]


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


def rope_from_hf(hf: dict) -> dict:
    """``Config`` arguments ``block_size``, ``rope_theta`` and ``rope_scaling`` (a dict or None) for the RoPE of a
    Hugging Face ``config.json`` of a Llama-like family, read as transformers 5 reads it: ``rope_scaling`` (transformers
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
        hf.get("model_type", "llama"),
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


def _switch_problems(config: Config, name: str) -> dict[str, bool]:
    """The optional architecture switches (squared-ReLU MLP, QK-norm, logit soft cap, value residuals) that the
    Hugging Face family ``name`` lacks, each with why (Qwen3 has QK-norm)."""
    return {
        f"mlp='relu2' ({name}'s MLP is {'GELU' if name == 'GPT-2' else 'gated: SwiGLU'}, not squared ReLU)": config.mlp
        == "relu2",
        f"qk_norm=True ({name} has no norm on queries and keys)": config.qk_norm and name != "Qwen3",
        f"logit_softcap={config.logit_softcap} ({name} has no tanh cap on the logits)": config.logit_softcap
        is not None,
        f"value_residual=True ({name}'s layers have no value residuals)": config.value_residual,
    }


def _llama_like_problems(config: Config, name: str) -> dict[str, bool]:
    """What a Llama-like family ``name`` (Llama, Qwen2, Qwen3) cannot express, each with why."""
    return {
        f"norm='layernorm' ({name} uses RMSNorm)": config.norm != "rmsnorm",
        f"mlp='gelu' ({name}'s MLP is gated: SwiGLU)": config.mlp == "gelu",
        f"sliding_window={config.sliding_window} ({name} attends to the whole prefix here)": config.sliding_window
        is not None,
        **_switch_problems(config, name),
    }


def _silu(hf: dict) -> dict[str, bool]:
    act = hf.get("hidden_act", "silu")
    return {f"hidden_act {act!r} (lit_gpt's SwiGLU uses silu)": act != "silu"}


def _no_sliding_window(hf: dict) -> dict[str, bool]:
    return {"use_sliding_window=True (lit_gpt's window covers every layer)": bool(hf.get("use_sliding_window", False))}


_SHAPE = (
    ("vocab_size", "vocab_size", REQUIRED),
    ("hidden_size", "n_embd", REQUIRED),
    ("intermediate_size", "intermediate_size", REQUIRED),
    ("num_hidden_layers", "n_layer", REQUIRED),
    ("num_attention_heads", "n_head", REQUIRED),
)
_LLAMA_LIKE = dict(position_embedding="rope", norm="rmsnorm", mlp="swiglu")

LLAMA = Family(
    name="Llama",
    model_type="llama",
    architecture="LlamaForCausalLM",
    chosen_for="position_embedding='rope'",
    fields=(
        *_SHAPE,
        ("num_key_value_heads", "n_kv_head", None),
        ("head_dim", "head_dim", None),
        ("max_position_embeddings", "block_size", 2048),
        ("rms_norm_eps", "norm_eps", 1e-6),
        ("tie_word_embeddings", "tie_embeddings", False),
        ("attention_bias", "bias", False),
        ("attention_dropout", "dropout", 0.0),
    ),
    fixed=_LLAMA_LIKE,
    read=rope_from_hf,
    written=lambda config: {"hidden_act": "silu", "mlp_bias": config.bias, **rope_to_hf(config)},
    refused=lambda hf: {
        **_silu(hf),
        "attention_bias != mlp_bias (lit_gpt has one bias flag)": hf.get("attention_bias", False)
        != hf.get("mlp_bias", False),
    },
    inexpressible=lambda config: _llama_like_problems(config, "Llama"),
)
"""``LlamaForCausalLM`` (``models/llama/configuration_llama.py``): Llama 2 and 3, SmolLM2, TinyLlama."""

QWEN2 = Family(
    name="Qwen2",
    model_type="qwen2",
    architecture="Qwen2ForCausalLM",
    chosen_for="qkv_bias=True",
    fields=(
        *_SHAPE,
        ("num_key_value_heads", "n_kv_head", 32),
        ("head_dim", "head_dim", None),
        ("max_position_embeddings", "block_size", 32768),
        ("rms_norm_eps", "norm_eps", 1e-6),
        ("tie_word_embeddings", "tie_embeddings", False),
        ("attention_dropout", "dropout", 0.0),
    ),
    fixed=dict(**_LLAMA_LIKE, bias=False, qkv_bias=True),
    read=rope_from_hf,
    written=lambda config: {"hidden_act": "silu", "use_sliding_window": False, **rope_to_hf(config)},
    refused=lambda hf: {**_silu(hf), **_no_sliding_window(hf)},
    inexpressible=lambda config: {
        **_llama_like_problems(config, "Qwen2"),
        "bias=True (Qwen2's output projection and MLP have no biases)": config.bias,
    },
)
"""``Qwen2ForCausalLM`` (``models/qwen2/configuration_qwen2.py``): Qwen2 and Qwen2.5, biases on q, k and v."""

QWEN3 = Family(
    name="Qwen3",
    model_type="qwen3",
    architecture="Qwen3ForCausalLM",
    chosen_for="qk_norm=True",
    fields=(
        *_SHAPE,
        ("num_key_value_heads", "n_kv_head", 32),
        ("head_dim", "head_dim", 128),
        ("max_position_embeddings", "block_size", 32768),
        ("rms_norm_eps", "norm_eps", 1e-6),
        ("tie_word_embeddings", "tie_embeddings", False),
        ("attention_dropout", "dropout", 0.0),
    ),
    fixed=dict(**_LLAMA_LIKE, qk_norm=True),
    read=rope_from_hf,
    written=lambda config: {
        "hidden_act": "silu",
        "attention_bias": False,
        "use_sliding_window": False,
        **rope_to_hf(config),
    },
    refused=lambda hf: {
        **_silu(hf),
        **_no_sliding_window(hf),
        "attention_bias=True (lit_gpt's bias flag also puts biases in the MLP)": bool(hf.get("attention_bias")),
    },
    inexpressible=lambda config: {
        **_llama_like_problems(config, "Qwen3"),
        "bias=True (Qwen3's MLP has no biases)": config.bias,
        "qkv_bias=True (Qwen3's attention biases cover the output projection too)": config.qkv_bias,
    },
)
"""``Qwen3ForCausalLM`` (``models/qwen3/configuration_qwen3.py``): Llama with QK-norm, ``head_dim`` of its own."""

GPT2 = Family(
    name="GPT-2",
    model_type="gpt2",
    architecture="GPT2LMHeadModel",
    chosen_for="position_embedding='learned'",
    fields=(
        ("vocab_size", "vocab_size", 50257),
        ("n_embd", "n_embd", 768),
        ("n_layer", "n_layer", 12),
        ("n_head", "n_head", 12),
        ("n_positions", "block_size", 1024),
        ("n_inner", "intermediate_size", None),
        ("layer_norm_epsilon", "norm_eps", 1e-5),
        ("tie_word_embeddings", "tie_embeddings", True),
        ("resid_pdrop", "dropout", 0.1),
    ),
    fixed=dict(position_embedding="learned", norm="layernorm", mlp="gelu", bias=True),
    read=lambda hf: {},
    # the tanh approximation of GELU, as our MLP uses; one dropout probability everywhere
    written=lambda config: {
        "activation_function": "gelu_new",
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
    },
    refused=lambda hf: {
        f"activation_function {hf.get('activation_function')!r} (lit_gpt's GELU is the tanh approximation)": hf.get(
            "activation_function", "gelu_new"
        )
        not in ("gelu_new", "gelu_pytorch_tanh"),
        "scale_attn_weights=False": not hf.get("scale_attn_weights", True),
        "scale_attn_by_inverse_layer_idx=True": hf.get("scale_attn_by_inverse_layer_idx", False),
        "add_cross_attention=True": hf.get("add_cross_attention", False),
    },
    inexpressible=lambda config: {
        "norm='rmsnorm' (GPT-2 uses LayerNorm)": config.norm != "layernorm",
        "mlp='swiglu' (GPT-2's MLP is GELU)": config.mlp == "swiglu",
        "bias=False (GPT-2 always has biases)": not config.bias,
        f"grouped-query attention (n_kv_head={config.n_kv_head} < n_head={config.n_head})": config.n_kv_head
        != config.n_head,
        f"head_dim={config.head_dim} (GPT-2's heads split n_embd evenly)": config.head_size * config.n_head
        != config.n_embd,
        f"sliding_window={config.sliding_window} (GPT-2 attends to the whole prefix)": config.sliding_window
        is not None,
        **_switch_problems(config, "GPT-2"),
    },
)
"""``GPT2LMHeadModel`` (``models/gpt2/configuration_gpt2.py``)."""

FAMILIES = {family.model_type: family for family in (LLAMA, QWEN2, QWEN3, GPT2)}
"""The families lit_gpt reads, by ``config.json``'s ``model_type``."""
_EXPORTED_AS = {"vocab_size": "padded_vocab_size", "head_dim": "head_size"}  # Config fields written as derived ones


def family_for(config: Config) -> Family:
    """The family that exports ``config``: ``GPT2`` for learned positions; with RoPE, ``QWEN3`` for ``qk_norm``,
    ``QWEN2`` for ``qkv_bias``, else ``LLAMA``."""
    if config.position_embedding != "rope":
        return GPT2
    return QWEN3 if config.qk_norm else QWEN2 if config.qkv_bias else LLAMA


def config_to_hf(config: Config, tokenizer: Tokenizer) -> dict:
    """The Hugging Face ``config.json`` for ``config``, in the class of ``family_for(config)``.

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
    family = family_for(config)
    found = [name for name, bad in family.inexpressible(config).items() if bad]
    if found:
        raise ConfigError(
            f"cannot export to Hugging Face: {family.architecture} (chosen for {family.chosen_for}) cannot express "
            f"{'; '.join(found)}; save it in lit_gpt's own folder format instead"
        )
    fields = {key: getattr(config, _EXPORTED_AS.get(field, field)) for key, field, _ in family.fields}
    return {"architectures": [family.architecture], "model_type": family.model_type, **fields, **family.written(config)}


def config_from_hf(hf: dict) -> Config:
    """Our ``Config`` for a Hugging Face ``config.json`` of a family in ``FAMILIES`` (``model_type`` llama, qwen2,
    qwen3 or gpt2), read from its fields with transformers' defaults for those it leaves out.

    The padded vocabulary is taken as it is (``padding_multiple=1``), unless the file carries the ``lit_gpt``
    record that ``config_to_hf`` writes and that record still describes the same model. A ``head_dim`` equal to
    hidden_size / heads is left implicit (``Config.head_dim`` None), as in a config written by hand.

    Raises:
        ConfigError: for another ``model_type``, a missing shape field, or a feature our model lacks, all named with
            the reason (a RoPE variant, a sliding window on some layers, an exact-erf GELU, separate attention and
            MLP bias flags, ...).
    """
    family = FAMILIES.get(hf.get("model_type"))
    if family is None:
        raise ConfigError(
            f"cannot import Hugging Face model_type {hf.get('model_type')!r}: lit_gpt reads {', '.join(FAMILIES)}"
        )
    _check_importable(family.model_type, family.refused(hf))
    try:
        fields = {
            field: hf[key] if default is REQUIRED else hf.get(key, default) for key, field, default in family.fields
        }
    except KeyError as err:
        raise ConfigError(f"the Hugging Face {family.model_type} config.json lacks {err.args[0]!r}") from None
    fields = {**fields, **family.fixed, **family.read(hf)}
    if fields.get("head_dim") is not None and fields["head_dim"] * fields["n_head"] == fields["n_embd"]:
        fields["head_dim"] = None
    config = Config(**fields)
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


def _check_importable(model_type: str, problems: dict[str, bool]) -> None:
    found = [name for name, bad in problems.items() if bad]
    if found:
        raise ConfigError(f"cannot import this Hugging Face {model_type} model: lit_gpt lacks {'; '.join(found)}")
