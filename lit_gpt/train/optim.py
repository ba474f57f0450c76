"""The optimizer and learning-rate schedule of ``LitGPT``, as plain functions testable without a Trainer:
``build_optimizer`` (AdamW alone, or Muon for the hidden matrices and AdamW for the rest, as one
``torch.optim.Optimizer``) and ``cosine_schedule`` / ``lr_at`` (linear warmup, cosine decay, then flat).

Parameter groups (``split_parameters``): weight decay on the matrices of linear layers only, not on norms, biases or
embeddings (Loshchilov & Hutter 2019, as in nanoGPT); each group is named (``muon``, ``decay``, ``no_decay``) so
Lightning's LearningRateMonitor logs ``train/lr/<name>``. Under tensor parallelism a group holding both ``DTensor``
and plain parameters is split in two (``<name>`` and ``<name>_whole``): AdamW's fused and foreach kernels take one
kind per call.

Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/; ``lit_gpt.train.muon.Muon``, which is
``torch.optim.Muon`` with its Newton-Schulz iterations batched over same-shaped matrices, in bfloat16 where it is
native and float32 elsewhere) replaces each update of a 2-D weight matrix by its Newton-Schulz orthogonalisation
(about U V^T of the momentum's SVD U S V^T). It suits the
hidden matrices only: the projections inside the blocks (q/k/v/o, gate/up/down). Embeddings, the output head, norms,
biases and value-residual weights keep AdamW, as in modded-nanogpt and Moonshot's "Muon is Scalable for LLM Training"
(Liu et al. 2025, https://arxiv.org/abs/2502.16982). With ``adjust_lr_fn="match_rms_adamw"`` Muon scales each
matrix's update to the RMS of a typical AdamW update (0.2 * sqrt(max(rows, cols)) times the learning rate), so both
share one learning rate, one schedule and one weight decay.

Lightning's automatic optimization takes one optimizer: ``MuonWithAdamW`` is one, whose ``param_groups`` are the
Muon groups followed by the AdamW groups (the very dicts the two inner optimizers read), and whose ``state`` is
shared by both. So Lightning's LR schedulers, gradient clipping, gradient accumulation and LR finder, which work on
``param_groups``, see every parameter, and ``state_dict`` / ``load_state_dict`` are ``torch.optim.Optimizer``'s own:
one state dict with both optimizers' state, restored exactly.

Muon needs each whole matrix in every step; sharded parameters (FSDP, FSDP2, tensor parallelism, DeepSpeed ZeRO)
hold slices of them, so ``LitGPT`` refuses ``optimizer="muon"`` under those strategies (``check_muon_strategy``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from lit_gpt.errors import ConfigError
from lit_gpt.train.hardware import native_bf16
from lit_gpt.train.muon import Muon


class MuonWithAdamW(torch.optim.Optimizer):
    """``lit_gpt.train.muon.Muon`` on ``muon_groups`` and ``torch.optim.AdamW`` on ``adamw_groups``, stepped together.

    Args:
        muon_groups: parameter groups (dicts with ``params``, optionally ``weight_decay``, ``name``) of 2-D matrices.
        adamw_groups: parameter groups of every other trainable parameter.
        lr: the learning rate of both (Muon's is rescaled per matrix by ``adjust_lr_fn``).
        weight_decay: default decoupled weight decay of both (a group's own ``weight_decay`` wins).
        betas, eps, fused: AdamW's.
        momentum, nesterov, adjust_lr_fn, ns_dtype: Muon's (see ``lit_gpt.train.muon.Muon``).

    Raises:
        ValueError: from ``Muon`` if a Muon parameter is not 2-D, or from ``torch.optim.Optimizer`` if a
            parameter appears in two groups.
    """

    def __init__(
        self,
        muon_groups: list[dict],
        adamw_groups: list[dict],
        lr: float,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        fused: bool | None = None,
        momentum: float = 0.95,
        nesterov: bool = True,
        adjust_lr_fn: str = "match_rms_adamw",
        ns_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        self.muon = Muon(
            muon_groups,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            adjust_lr_fn=adjust_lr_fn,
            ns_dtype=ns_dtype,
        )
        self.adamw = torch.optim.AdamW(
            adamw_groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, fused=fused
        )
        # The union of the very group dicts the inner optimizers read: a scheduler's or Lightning's change of a
        # group's "lr" reaches the optimizer that steps it.
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {"lr": lr})
        self._link()

    def _link(self) -> None:
        """Point the inner optimizers at this one's groups and state (after ``__init__`` and ``load_state_dict``)."""
        n_muon = len(self.muon.param_groups)
        self.muon.param_groups, self.adamw.param_groups = self.param_groups[:n_muon], self.param_groups[n_muon:]
        self.muon.state = self.adamw.state = self.state  # disjoint parameters: one mapping serves both

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Run ``closure`` (forward and backward, as Lightning passes it) once, then a Muon and an AdamW step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """``torch.optim.Optimizer.load_state_dict`` (both optimizers' state and groups), then relink the inner
        optimizers to the restored groups and state."""
        super().load_state_dict(state_dict)
        self._link()


def split_parameters(model: nn.Module, muon: bool) -> dict[str, list[nn.Parameter]]:
    """``model``'s trainable parameters by optimizer role, each exactly once (a tied matrix counts as an embedding).

    Returns ``{"muon": ..., "decay": ..., "no_decay": ...}``: ``muon`` holds the weights of the linear layers inside
    the blocks (``model.layers``) when ``muon`` is set, else nothing; ``decay`` the other matrices of linear layers
    (AdamW with weight decay: the block projections without Muon, an untied ``lm_head``); ``no_decay`` embeddings,
    norms, biases and value-residual weights.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    hidden = set()
    if muon:
        hidden = {id(m.weight) for m in model.layers.modules() if isinstance(m, nn.Linear) and m.weight.dim() == 2}
    groups: dict[str, list[nn.Parameter]] = {"muon": [], "decay": [], "no_decay": []}
    for param in model.parameters():  # deduplicated: a tied matrix appears once, as the embedding
        if not param.requires_grad:
            continue
        if id(param) in hidden and id(param) not in embeddings:
            groups["muon"].append(param)
        elif param.dim() >= 2 and id(param) not in embeddings:
            groups["decay"].append(param)
        else:
            groups["no_decay"].append(param)
    return groups


def check_muon_strategy(strategy: object) -> None:
    """Raise ConfigError unless ``strategy`` keeps whole parameters on every device (one device or DDP), as Muon's
    Newton-Schulz orthogonalisation needs each whole matrix."""
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    if type(strategy) not in (SingleDeviceStrategy, DDPStrategy):
        raise ConfigError(
            f"model.optimizer muon needs whole weight matrices on every device (Newton-Schulz orthogonalises each "
            f"matrix), but {type(strategy).__name__} shards them; train on one device or with trainer.strategy ddp, "
            "or use model.optimizer adamw"
        )


def build_optimizer(
    model: nn.Module,
    kind: str = "adamw",
    *,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    fused: bool | None = None,
    sharded: bool = False,
    keep_empty_groups: bool = False,
) -> torch.optim.Optimizer:
    """The optimizer of ``model``'s trainable parameters (module docstring): ``torch.optim.AdamW`` for
    ``kind="adamw"``, ``MuonWithAdamW`` for ``kind="muon"``; ``weight_decay`` on the ``muon`` and ``decay`` groups,
    none on ``no_decay``. Muon orthogonalises in bfloat16 where the parameters' device has native bfloat16 matmuls
    (``lit_gpt.train.hardware.native_bf16``), else in float32.

    Args:
        fused: AdamW's ``fused`` (True: one kernel for every parameter, CPU and CUDA; None: PyTorch chooses).
        sharded: the parameters may be ``DTensor``s (``ModelParallelStrategy``): split each group by tensor kind.
        keep_empty_groups: keep the ``decay`` and ``no_decay`` groups even when empty (LoRA: the group names, and so
            the logged learning rates, of full training).
    Raises:
        ValueError: as ``MuonWithAdamW`` does. Whether the strategy suits Muon is ``check_muon_strategy``'s question.
    """
    muon = kind == "muon"
    split = split_parameters(model, muon)
    groups = [
        {"params": split[name], "weight_decay": weight_decay if name != "no_decay" else 0.0, "name": name}
        for name in ("muon", "decay", "no_decay")
        if split[name] or (keep_empty_groups and name != "muon")
    ]
    if sharded:
        groups = _split_by_tensor_kind(groups)
    adamw = dict(lr=learning_rate, betas=betas, eps=eps, fused=fused)
    if not muon:
        return torch.optim.AdamW(groups, **adamw)
    muon_groups = [group for group in groups if group["name"] == "muon"]
    adamw_groups = [group for group in groups if group["name"] != "muon"]
    device = split["muon"][0].device if split["muon"] else torch.device("cpu")
    ns_dtype = torch.bfloat16 if native_bf16(device) else torch.float32
    return MuonWithAdamW(muon_groups, adamw_groups, weight_decay=weight_decay, ns_dtype=ns_dtype, **adamw)


def _split_by_tensor_kind(groups: list[dict]) -> list[dict]:
    """Each parameter group split into its sharded (``DTensor``) and plain parameters, empty parts dropped; the
    sharded part keeps the group's name, the plain one gets ``_whole`` appended (tensor parallelism leaves
    embeddings and norms whole)."""
    from torch.distributed.tensor import DTensor

    split = []
    for group in groups:
        for suffix, keep in (("", True), ("_whole", False)):
            params = [p for p in group["params"] if isinstance(p, DTensor) == keep]
            if params:
                split.append({**group, "params": params, "name": group["name"] + suffix})
    return split


def lr_at(step: int, learning_rate: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warmup, cosine decay, then flat at min_lr.

    Warmup reaches ``learning_rate`` at step ``warmup_steps - 1``; the cosine runs from step ``warmup_steps``
    (``learning_rate``) to step ``decay_steps`` (``min_lr``), as in nanoGPT's ``get_lr``.
    """
    if step < warmup_steps:
        return learning_rate * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, learning_rate: float, min_lr: float, warmup_steps: int, decay_steps: int | None
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler, stepped once per optimizer step, that sets every group's learning rate to ``lr_at(step, ...)``
    (the groups' ``lr`` must start at ``learning_rate``).

    Raises:
        ConfigError: if ``decay_steps`` is None or negative (the cosine needs a horizon).
    """
    if decay_steps is None or decay_steps < 0:
        raise ConfigError("set trainer.max_steps (or model.lr_decay_steps): the cosine schedule needs a horizon")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_at(step, learning_rate, min_lr, warmup_steps, decay_steps) / learning_rate
    )


def check_resumed_optimizer(checkpoint: dict, optimizer: str) -> None:
    """Raise ConfigError if Lightning's ``checkpoint`` dict holds optimizer state from another ``LitGPT`` optimizer
    kind (``adamw``, ``muon``) than ``optimizer``: their states do not fit each other. Checkpoints whose
    hyperparameters name none were trained with AdamW."""
    saved = checkpoint.get("hyper_parameters", {}).get("optimizer", "adamw")
    if "optimizer_states" in checkpoint and saved != optimizer:
        raise ConfigError(
            f"cannot resume a run trained with model.optimizer {saved} with model.optimizer {optimizer}: set "
            f"model.optimizer {saved}, or start a new run from its weights with model.init_weights"
        )
