"""LoRA adapters on a ``GPT`` with peft, and the identity of the base model they adapt.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) freezes a pretrained weight W (out, in) and learns a low-rank
update: ``y = x W^T + (alpha / r) * dropout(x) A^T B^T`` with A (r, in) random and B (out, r) zero at the start, so
training starts exactly at the base model and trains ``r * (in + out)`` numbers per adapted matrix. peft's
``inject_adapter_in_model`` puts its ``lora.Linear`` in place of each targeted ``nn.Linear`` (our module names are
Hugging Face Llama's, so peft's names and files apply unchanged); ``lit_gpt.model._fused_linear`` fuses plain
``nn.Linear`` layers only, so an adapted projection always runs peft's forward.

A LoRA training checkpoint (``lit_gpt.train.module.LitGPT`` with ``model.lora``) stores the adapter matrices and the
base's identity (``base_identity``: its path and the SHA-256 of its weights), not a second copy of the base;
``lit_gpt.formats.training`` writes and reads that record, rebuilds the model from both and refuses a base that moved
or changed (``check_base``). ``lit_gpt.formats.peft.save_peft_adapter`` writes the adapters as a peft folder for
Hugging Face models. peft is an optional extra (``pip install -e ".[lora]"``), imported only through
``lit_gpt.extras.require``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lit_gpt.errors import ConfigError
from lit_gpt.extras import require
from lit_gpt.model import GPT

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linear layers LoRA may adapt: attention (q/k/v/o) and MLP (gate/up/down; GPT-2's GELU MLP has no gate)."""
ADAPTER = "default"
"""peft's name of the one adapter (it appears in parameter names: ``q_proj.lora_A.default.weight``)."""


@dataclass
class LoRA:
    """LoRA settings (``model.lora`` in a training config).

    Raises:
        ConfigError: for r < 1, alpha <= 0, dropout outside [0, 1), or a target that is not a projection name.
    """

    r: int = 8
    """Rank of each update (trainable numbers per adapted (out, in) matrix: r * (in + out))."""
    alpha: float = 16.0
    """The update is scaled by alpha / r, so changing r keeps the update's scale at a given learning rate."""
    dropout: float = 0.0
    """Dropout on the adapters' input (training only)."""
    target_modules: list[str] = field(default_factory=lambda: list(PROJECTIONS))
    """The projections to adapt, by module name; default: all of attention and MLP."""

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ConfigError(f"model.lora.r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise ConfigError(f"model.lora.alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.lora.dropout must be in [0, 1), got {self.dropout!r}")
        self.target_modules = list(self.target_modules)
        unknown = [name for name in self.target_modules if name not in PROJECTIONS]
        if unknown or not self.target_modules:
            raise ConfigError(f"model.lora.target_modules {unknown or '[]'}: choose among {', '.join(PROJECTIONS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> "LoRA":
        """The settings in a checkpoint's ``lora`` record (``to_dict`` plus the base's identity)."""
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})


def peft_config(lora: LoRA, base_model_name_or_path: str | None = None):
    """The ``peft.LoraConfig`` for ``lora`` (a causal language model, no bias training)."""
    peft = require("peft", "lora", "LoRA")
    return peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path,
    )


def add_adapters(model: GPT, lora: LoRA) -> GPT:
    """Put LoRA adapters into ``model`` in place (peft's ``inject_adapter_in_model``) and freeze everything else.

    The new A matrices are drawn from torch's global generator; B is zero, so the model's outputs are unchanged.
    Returns ``model``.

    Raises:
        ConfigError: if peft is missing, the model already has adapters, or it has none of ``lora.target_modules``.
    """
    peft = require("peft", "lora", "LoRA")
    if has_adapters(model):
        raise ConfigError("the model already has LoRA adapters; merge them first (lit_gpt.lora.merge_adapters)")
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if not present & set(lora.target_modules):
        raise ConfigError(f"model.lora.target_modules {lora.target_modules}: the model has none of these layers")
    model.requires_grad_(False)
    peft.inject_adapter_in_model(peft_config(lora), model, adapter_name=ADAPTER)
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)
    return model


def has_adapters(model: nn.Module) -> bool:
    """Whether ``model`` holds LoRA adapters (peft layers), merged or not."""
    return any(name.endswith(".lora_A") for name, _ in model.named_modules())


def adapter_names(model: nn.Module) -> list[str]:
    """The state-dict names of the adapter matrices, e.g. ``layers.0.self_attn.q_proj.lora_A.default.weight``."""
    return [name for name, _ in model.named_parameters() if ".lora_" in name]


def load_adapters(model: GPT, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy adapter matrices (``adapter_names`` keys) into a model that ``add_adapters`` prepared.

    Raises:
        ConfigError: if ``state`` lacks an adapter matrix, has a tensor the model lacks, or a shape differs.
    """
    expected = set(adapter_names(model))
    missing, extra = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or extra:
        raise ConfigError(
            f"the LoRA adapters in {source} do not fit its record: missing {missing[:2]}, unexpected {extra[:2]}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ConfigError(f"the LoRA adapters in {source} do not fit: {str(err).splitlines()[-1].strip()}") from None


def merge_adapters(model: GPT) -> GPT:
    """Fold every adapter into its base weight (``W + (alpha / r) B A``, peft's ``merge``) and put the plain
    ``nn.Linear`` back in its place, so the model runs (and fuses, and quantizes) like any other. In place; returns
    ``model``."""
    peft = require("peft", "lora", "LoRA")
    for name, module in list(model.named_modules()):
        if isinstance(module, peft.tuners.lora.LoraLayer):
            module.merge(safe_merge=True)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    return model


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 (hex) over ``model``'s state dict: every tensor's name, dtype, shape and bytes, in name order.

    The identity of a LoRA base: the same weights give the same digest whatever file format holds them.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def base_identity(path: str | Path, model: nn.Module) -> dict:
    """``{"path": absolute path, "sha256": weights_sha256(model)}`` of a LoRA base read from ``path``."""
    return {"path": str(Path(path).resolve()), "sha256": weights_sha256(model)}


def check_base(model: nn.Module, identity: dict, checkpoint: str | Path) -> None:
    """Raise ``ConfigError`` unless ``model`` has the weights that ``identity`` (from ``base_identity``) recorded."""
    found = weights_sha256(model)
    if found != identity["sha256"]:
        raise ConfigError(
            f"the LoRA checkpoint {checkpoint} adapts the base model at {identity['path']}, whose weights have "
            f"changed since (SHA-256 {found[:12]}..., recorded {identity['sha256'][:12]}...): restore that base, or "
            "train the adapters again on the new one"
        )
