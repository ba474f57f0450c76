"""Model configuration: one validated dataclass, a few named presets, and the parameter-count formula.

Standard library only, so that building or inspecting a config never imports torch, tiktoken or Lightning
(``tests/test_layout.py`` checks it in a fresh interpreter). ``ConfigError`` lives in ``lit_gpt.errors`` and is
re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from lit_gpt.errors import ConfigError

__all__ = ["PRESETS", "Config", "ConfigError", "RopeScaling"]

ROPE_SCALING_TYPES = ("linear", "dynamic", "yarn", "llama3")
_EXTRAS = {  # the optional fields of each scaling type, with their defaults (transformers' defaults)
    "linear": {},
    "dynamic": {},
    "yarn": {
        "attention_factor": None,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": None,
        "mscale_all_dim": None,
        "truncate": True,
    },
    "llama3": {"low_freq_factor": 1.0, "high_freq_factor": 4.0},
}


@dataclass
class RopeScaling:
    """How RoPE's frequencies are rescaled so that a model runs past the length it was trained at: ``linear``
    (Position Interpolation, Chen et al. 2023), ``dynamic`` (NTK-aware, bloc97 2023), ``yarn`` (Peng et al. 2023)
    or ``llama3`` (Llama 3.1). ``lit_gpt.rope`` computes them by the formulas of transformers'
    ``modeling_rope_utils.py`` and describes each.

    Lengths (checked by ``Config``): linear and yarn stretch ``original_block_size`` by ``factor`` (PI's L' = sL,
    YaRN's s = L'/L), so ``block_size <= factor * original_block_size``. dynamic adapts to each pass's length and
    llama3's ``factor`` divides frequencies rather than stretching a length (Llama 3.1 runs 131072 tokens with
    factor 8 over 8192), so neither bounds ``block_size``.

    The extras belong to one type each (yarn: ``attention_factor``, ``beta_fast``, ``beta_slow``, ``mscale``,
    ``mscale_all_dim``, ``truncate``; llama3: ``low_freq_factor``, ``high_freq_factor``); None takes the type's
    default (transformers': beta_fast 32, beta_slow 1, truncate true, low_freq_factor 1, high_freq_factor 4).

    Raises:
        ConfigError: for an unknown type, a factor below 1, a non-positive ``original_block_size``, an extra of
            another type, beta_fast < beta_slow, high_freq_factor <= low_freq_factor or attention_factor <= 0.
    """

    type: str | None = None
    """``linear``, ``dynamic``, ``yarn`` or ``llama3`` (required, as are factor and original_block_size)."""
    factor: float | None = None
    """Scaling factor, >= 1 (1 leaves plain RoPE for linear, dynamic and llama3)."""
    original_block_size: int | None = None
    """The context length the model was trained at before scaling (transformers' original_max_position_embeddings;
    for dynamic, its max_position_embeddings)."""
    attention_factor: float | None = None
    """yarn: multiplier of cos and sin; None: from factor (and mscale / mscale_all_dim)."""
    beta_fast: float | None = None
    """yarn: dimensions turning more than this many times over original_block_size are kept (default 32)."""
    beta_slow: float | None = None
    """yarn: dimensions turning fewer than this many times are divided by factor (default 1)."""
    mscale: float | None = None
    """yarn, with mscale_all_dim: attention_factor = (0.1 mscale ln(factor) + 1) / (0.1 mscale_all_dim ln(factor) + 1)
    (DeepSeek's configs)."""
    mscale_all_dim: float | None = None
    """yarn: see mscale."""
    truncate: bool | None = None
    """yarn: round the ramp's ends to whole dimensions (default true)."""
    low_freq_factor: float | None = None
    """llama3: wavelengths above original_block_size / low_freq_factor are divided by factor (default 1)."""
    high_freq_factor: float | None = None
    """llama3: wavelengths below original_block_size / high_freq_factor are kept (default 4)."""

    def __post_init__(self) -> None:
        if self.type not in ROPE_SCALING_TYPES:
            raise ConfigError(
                f"Config.rope_scaling.type must be one of {', '.join(ROPE_SCALING_TYPES)}, got {self.type!r}"
            )
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)) or not self.factor >= 1:
            raise ConfigError(f"Config.rope_scaling.factor must be a number >= 1 (1: no scaling), got {self.factor!r}")
        size = self.original_block_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"Config.rope_scaling.original_block_size must be a positive integer, got {size!r}")
        extras = _EXTRAS[self.type]
        for field in dataclasses.fields(self)[3:]:
            value = getattr(self, field.name)
            if field.name not in extras and value is not None:
                owner = "yarn" if field.name in _EXTRAS["yarn"] else "llama3"
                raise ConfigError(f"Config.rope_scaling.{field.name} applies to {owner} scaling, not {self.type}")
            if field.name in extras and value is None:
                setattr(self, field.name, extras[field.name])
        self._check_extras()

    def _check_extras(self) -> None:
        if self.type == "yarn" and (self.beta_fast < self.beta_slow or self.beta_slow <= 0):
            raise ConfigError(
                f"Config.rope_scaling needs beta_fast >= beta_slow > 0, got {self.beta_fast} and {self.beta_slow}"
            )
        if self.type == "yarn" and self.attention_factor is not None and not self.attention_factor > 0:
            raise ConfigError(f"Config.rope_scaling.attention_factor must be positive, got {self.attention_factor}")
        if self.type == "llama3" and not self.high_freq_factor > self.low_freq_factor > 0:
            raise ConfigError(
                "Config.rope_scaling needs high_freq_factor > low_freq_factor > 0, got "
                f"{self.high_freq_factor} and {self.low_freq_factor}"
            )

    def max_block_size(self) -> int | None:
        """The longest ``block_size`` this scaling supports: ``factor * original_block_size`` (rounded down) for
        linear and yarn, None (no bound) for dynamic and llama3 (see the class docstring)."""
        if self.type in ("linear", "yarn"):
            return int(self.factor * self.original_block_size)
        return None


@dataclass
class Config:
    """Shape and architecture of a decoder-only transformer.

    The defaults are LLaMA-style (Touvron et al. 2023, https://arxiv.org/abs/2302.13971): RoPE positions,
    RMSNorm, a SwiGLU MLP, no biases, tied input/output embeddings. Each choice switches back to GPT-2's
    (Radford et al. 2019): ``position_embedding="learned"``, ``norm="layernorm"``, ``mlp="gelu"``, ``bias=True``.

    Derived fields (filled in ``__post_init__``): ``n_kv_head`` defaults to ``n_head`` (plain multi-head
    attention), ``intermediate_size`` to the LLaMA rule for SwiGLU or ``4 * n_embd`` for GELU, and
    ``padded_vocab_size`` is ``vocab_size`` rounded up to ``padding_multiple``.

    Raises:
        ConfigError: (a ValueError) naming the field, for any value or combination that cannot build a model.
    """

    vocab_size: int = 50257
    """Number of token ids the tokenizer produces. Set from the data module when training from the CLI."""
    padding_multiple: int = 1
    """Round the embedding and output rows up to a multiple of this (64 turns GPT-2's 50257 into 50304, which
    runs faster on GPUs). The extra ids are never produced by the tokenizer and are masked when sampling."""
    block_size: int = 256
    """Context length in tokens: the longest sequence the model accepts."""
    n_layer: int = 4
    """Number of transformer blocks."""
    n_head: int = 4
    """Number of attention (query) heads."""
    n_embd: int = 128
    """Width of the residual stream (hidden size)."""
    n_kv_head: int | None = None
    """Number of key/value heads for grouped-query attention (Ainslie et al. 2023); must divide ``n_head``.
    None means ``n_head`` (multi-head attention); 1 is multi-query attention."""
    intermediate_size: int | None = None
    """Hidden width of the MLP. None: ``4 * n_embd`` for GELU; for SwiGLU, LLaMA's ``2/3 * 4 * n_embd``
    rounded up to a multiple of 64, which keeps the parameter count of a GELU MLP."""
    position_embedding: Literal["rope", "learned"] = "rope"
    """``rope``: rotary embeddings on queries and keys (Su et al. 2021); ``learned``: GPT-2's table."""
    rope_theta: float = 10000.0
    """RoPE base: frequencies are ``rope_theta ** (-2i / head_size)``."""
    rope_scaling: RopeScaling | None = None
    """RoPE scaling to run past the training length (``RopeScaling``: type linear, dynamic, yarn or llama3, factor,
    original_block_size and the type's extras; a dict is converted). None: plain RoPE."""
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    """Pre-norm type: RMSNorm (Zhang & Sennrich 2019) or LayerNorm (Ba et al. 2016)."""
    norm_eps: float = 1e-5
    """Epsilon added to the variance inside the norms."""
    mlp: Literal["swiglu", "gelu", "relu2"] = "swiglu"
    """MLP type: SwiGLU (Shazeer 2020, three matrices), GPT-2's GELU MLP (two matrices), or ``relu2``: squared ReLU
    ``down(relu(up(x))**2)`` (two matrices; Primer, So et al. 2021, https://arxiv.org/abs/2109.08668, as in
    modded-nanogpt)."""
    bias: bool = False
    """Biases in the attention and MLP linear layers and in LayerNorms (GPT-2 has them, LLaMA does not). The output
    head never has one."""
    tie_embeddings: bool = True
    """Share the token embedding matrix with the output head (Press & Wolf 2017)."""
    dropout: float = 0.0
    """Dropout probability on attention weights, residual branches and embeddings; 0 disables it."""
    sliding_window: int | None = None
    """Sliding-window attention (Beltagy et al. 2020; Mistral 7B): each position attends to itself and the
    ``sliding_window - 1`` positions before it. None attends to the whole causal prefix."""
    init: Literal["gpt2", "xavier", "kaiming"] = "gpt2"
    """Weight init of the linear layers: ``gpt2`` N(0, 0.02) (Radford et al. 2019); ``xavier`` normal with
    std sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio 2010); ``kaiming`` normal with std 1/sqrt(fan_in), the
    variance-preserving rule for a linear map (He et al. 2015). Embeddings are N(0, 0.02) under every scheme,
    and the residual output projections are scaled by 1/sqrt(2 * n_layer) under every scheme."""
    qk_norm: bool = False
    """RMSNorm over each head's queries and keys (weights of size head_size, shared by the heads), before RoPE:
    bounds the attention logits, which lets higher learning rates train stably (Qwen3's per-head q_norm/k_norm;
    OLMo 2, OLMo et al. 2024, https://arxiv.org/abs/2501.00656, norms the whole projection; modded-nanogpt)."""
    zero_init_proj: bool = False
    """Initialise the residual output projections (attention ``o_proj``, MLP ``down_proj``) to zero, so every block
    starts as the identity (modded-nanogpt, KellerJordan/modded-nanogpt; muP's zero readout, Yang et al. 2021)."""
    logit_softcap: float | None = None
    """Soft cap on the output logits: ``cap * tanh(logits / cap)`` bounds them to (-cap, cap) (Gemma 2, Gemma Team
    2024, https://arxiv.org/abs/2408.00118, cap 30; modded-nanogpt uses 15 to 30). None: no cap."""
    value_residual: bool = False
    """Value residual learning (Zhou et al. 2024, https://arxiv.org/abs/2410.17897; modded-nanogpt): every layer after
    the first mixes the first layer's values into its own, ``v = lambda * v + (1 - lambda) * v_1``, with a learned
    scalar lambda per layer starting at 0.5."""
    gradient_checkpointing: bool = False
    """Recompute each block's activations in the backward pass instead of storing them (Chen et al. 2016):
    less memory, about one more forward pass of compute. Has no effect on results."""

    padded_vocab_size: int = dataclasses.field(init=False)
    head_size: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "padding_multiple", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Config.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"Config.n_embd ({self.n_embd}) must be divisible by Config.n_head ({self.n_head})")
        self.head_size = self.n_embd // self.n_head
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.n_kv_head < 1 or self.n_head % self.n_kv_head:
            raise ConfigError(
                f"Config.n_kv_head ({self.n_kv_head}) must be a positive divisor of Config.n_head ({self.n_head})"
            )
        if self.position_embedding not in ("rope", "learned"):
            raise ConfigError(f"Config.position_embedding must be 'rope' or 'learned', got {self.position_embedding!r}")
        if self.position_embedding == "rope" and self.head_size % 2:
            raise ConfigError(f"RoPE needs an even head size, got n_embd / n_head = {self.head_size}")
        if self.rope_theta <= 0:
            raise ConfigError(f"Config.rope_theta must be positive, got {self.rope_theta}")
        self.rope_scaling = _rope_scaling(self)
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ConfigError(f"Config.norm must be 'rmsnorm' or 'layernorm', got {self.norm!r}")
        if self.norm_eps <= 0:
            raise ConfigError(f"Config.norm_eps must be positive, got {self.norm_eps}")
        if self.mlp not in ("swiglu", "gelu", "relu2"):
            raise ConfigError(f"Config.mlp must be 'swiglu', 'gelu' or 'relu2', got {self.mlp!r}")
        if self.intermediate_size is None:
            if self.mlp != "swiglu":
                self.intermediate_size = 4 * self.n_embd
            else:
                self.intermediate_size = _round_up(int(2 * 4 * self.n_embd / 3), 64)
        if self.intermediate_size < 1:
            raise ConfigError(f"Config.intermediate_size must be positive, got {self.intermediate_size}")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ConfigError(f"Config.sliding_window must be a positive integer or None, got {self.sliding_window}")
        if self.init not in ("gpt2", "xavier", "kaiming"):
            raise ConfigError(f"Config.init must be 'gpt2', 'xavier' or 'kaiming', got {self.init!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"Config.dropout must be in [0, 1), got {self.dropout}")
        _check_switches(self)
        self.padded_vocab_size = _round_up(self.vocab_size, self.padding_multiple)

    @classmethod
    def from_name(cls, name: str, **overrides: object) -> "Config":
        """Build a named preset (see ``PRESETS``), with any field overridden by keyword.

        Raises:
            ConfigError: if ``name`` is not a preset.
        """
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        """The constructor arguments (no derived fields), as a JSON-serialisable dict."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return {k: dataclasses.asdict(v) if isinstance(v, RopeScaling) else v for k, v in fields.items()}

    def differences(self, other: "Config", ignore: Iterable[str] = ()) -> list[str]:
        """The names of the constructor arguments (``to_dict``'s keys, in declaration order) whose values differ
        between ``self`` and ``other``, leaving out the names in ``ignore``; empty when the two agree."""
        ours, theirs, skip = self.to_dict(), other.to_dict(), set(ignore)
        return [name for name in ours if name not in skip and ours[name] != theirs[name]]

    def replace(self, **changes: object) -> Config:
        """A new config: this one's constructor arguments (``to_dict``) with ``changes`` applied, validated again.
        Derived values (``n_kv_head``, ``intermediate_size``) are kept unless changed.

        Raises:
            ConfigError: as the constructor, for a value or combination that cannot build a model.
            TypeError: for a name that is not a constructor argument.
        """
        return Config(**{**self.to_dict(), **changes})

    def block_params(self) -> int:
        """Parameters of one transformer block (attention, MLP, its two norms; see ``num_params``), without the
        value-residual lambda that all blocks but the first hold."""
        C, F, hs = self.n_embd, self.intermediate_size, self.head_size
        q_out, kv_out = self.n_head * hs, self.n_kv_head * hs
        norm = C * (2 if self.norm == "layernorm" and self.bias else 1)
        attn = C * q_out + 2 * C * kv_out + q_out * C
        mlp = (3 if self.mlp == "swiglu" else 2) * C * F
        if self.bias:
            attn += q_out + 2 * kv_out + C
            mlp += (2 * F if self.mlp == "swiglu" else F) + C
        if self.qk_norm:
            attn += 2 * hs
        return attn + mlp + 2 * norm

    def num_params(self) -> int:
        """Number of trainable parameters of ``GPT(self)``, from the formula (each tied tensor counted once).

        With V = padded_vocab_size, C = n_embd, L = n_layer, hs = head_size, F = intermediate_size:
        embeddings V*C (+ block_size*C learned positions), per block the attention
        C*(n_head*hs) + 2*C*(n_kv_head*hs) + (n_head*hs)*C (+ 2*hs for the q/k norms, + 1 value-residual lambda
        after the first layer) and the MLP 2*C*F (GELU, ReLU²) or 3*C*F (SwiGLU), two norms per block plus the final
        one, and the head V*C unless tied; biases where enabled (never in the head, as in GPT-2 and LLaMA).
        """
        C = self.n_embd
        norm = C * (2 if self.norm == "layernorm" and self.bias else 1)
        block = self.block_params()
        total = self.padded_vocab_size * C + self.n_layer * block + norm
        if self.value_residual:
            total += self.n_layer - 1
        if self.position_embedding == "learned":
            total += self.block_size * C
        if not self.tie_embeddings:
            total += self.padded_vocab_size * C
        return total


def _check_switches(config: Config) -> None:
    for name in ("qk_norm", "zero_init_proj", "value_residual"):
        if not isinstance(getattr(config, name), bool):
            raise ConfigError(f"Config.{name} must be true or false, got {getattr(config, name)!r}")
    cap = config.logit_softcap
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0):
        raise ConfigError(f"Config.logit_softcap must be a positive number or None, got {cap!r}")


def _rope_scaling(config: Config) -> RopeScaling | None:
    """``config.rope_scaling`` as a ``RopeScaling`` (a dict converted), checked against the rest of the config."""
    scaling = config.rope_scaling
    if scaling is None:
        return None
    if isinstance(scaling, dict):
        if unknown := set(scaling) - {f.name for f in dataclasses.fields(RopeScaling)}:
            raise ConfigError(
                f"Config.rope_scaling has unknown keys {sorted(unknown)}; it takes type, factor, original_block_size "
                "and the type's extras"
            )
        scaling = RopeScaling(**scaling)
    if not isinstance(scaling, RopeScaling):
        raise ConfigError(f"Config.rope_scaling must be a mapping or None, got {scaling!r}")
    if config.position_embedding != "rope":
        raise ConfigError(
            "Config.rope_scaling needs position_embedding='rope'; learned positions have no RoPE to scale"
        )
    limit = scaling.max_block_size()
    if limit is not None and config.block_size > limit:
        raise ConfigError(
            f"Config.block_size {config.block_size} exceeds what {scaling.type} scaling by {scaling.factor} supports "
            f"(factor * original_block_size = {limit}): raise rope_scaling.factor or lower block_size"
        )
    return scaling


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


_GPT2_STYLE = dict(position_embedding="learned", norm="layernorm", mlp="gelu", bias=True, tie_embeddings=True)

PRESETS: dict[str, dict] = {
    # Three small LLaMA-style sizes for CPU experiments.
    "tiny": dict(n_embd=64, n_head=4, n_layer=4, block_size=64),
    "small": dict(n_embd=128, n_head=8, n_layer=6, block_size=256),
    "medium": dict(n_embd=384, n_head=12, n_layer=12, block_size=512),
    # GPT-2 124M (Radford et al. 2019) exactly: 124,439,808 parameters with the 50257-token vocabulary.
    "gpt2": dict(n_embd=768, n_head=12, n_layer=12, block_size=1024, vocab_size=50257, **_GPT2_STYLE),
    # The same shape with the LLaMA-style defaults, and the vocabulary padded to 50304 for GPU speed.
    "llama-124m": dict(n_embd=768, n_head=12, n_layer=12, block_size=1024, vocab_size=50257, padding_multiple=64),
    # Hugging Face SmolLM2-360M's shape (960 wide, 32 layers, 15 heads sharing 5 key/value heads, SwiGLU 2560, tied;
    # HuggingFaceTB/SmolLM2-360M config.json) with GPT-2's padded vocabulary: 362,927,040 parameters.
    "llama-350m": dict(
        n_embd=960,
        n_head=15,
        n_kv_head=5,
        n_layer=32,
        intermediate_size=2560,
        block_size=2048,
        rope_theta=100000.0,
        vocab_size=50257,
        padding_multiple=64,
    ),
    # TinyLlama-1.1B's shape (2048 wide, 22 layers, 32 heads sharing 4 key/value heads, SwiGLU 5632; untied;
    # TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json) with GPT-2's padded vocabulary:
    # 1,175,021,568 parameters.
    "llama-1b": dict(
        n_embd=2048,
        n_head=32,
        n_kv_head=4,
        n_layer=22,
        intermediate_size=5632,
        block_size=2048,
        tie_embeddings=False,
        vocab_size=50257,
        padding_multiple=64,
    ),
}
