"""RoPE scaling settings: ``RopeScaling``, the part of ``Config`` that says how RoPE's frequencies are rescaled past
the training length (``lit_gpt.rope`` computes them). Standard library only, like ``lit_gpt.config``, which
re-exports it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lit_gpt.errors import ConfigError

__all__ = ["ROPE_SCALING_TYPES", "RopeScaling"]

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
