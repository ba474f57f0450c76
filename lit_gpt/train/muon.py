"""Muon with the Newton-Schulz orthogonalisation batched over matrices of one shape.

Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) replaces each update of a 2-D weight matrix by
the quintic Newton-Schulz orthogonalisation of its Nesterov momentum. ``Muon`` here is ``torch.optim.Muon``'s
algorithm, hyperparameters, parameter-group keys and state (``momentum_buffer``), so the state dicts of the two load
into each other; it differs in how the orthogonalisation runs:

- batched: the updates of one step are grouped by shape (a tall matrix is orthogonalised through its transpose, so
  (n, m) and (m, n) share a group), stacked, and each Newton-Schulz iteration is one batched matmul chain per group
  (``torch.baddbmm``) instead of one per matrix, as modded-nanogpt's ``train_gpt.py`` batches its matrices. A
  block's projections come in a few shapes, so a step runs a handful of chains instead of one per matrix;
- in ``ns_dtype``: ``torch.optim.Muon`` always iterates in bfloat16, which is many times slower than float32 where
  bfloat16 matmuls are emulated (CPUs without AVX-512 BF16 or AMX); ``lit_gpt.train.optim.build_optimizer``
  chooses bfloat16 where it is native and float32 elsewhere (``lit_gpt.train.hardware.native_bf16``).

In bfloat16 the updates equal ``torch.optim.Muon``'s up to the matmul kernels' accumulation order (batched and
single matmuls may sum in another order); in float32 they are the same iteration without bfloat16's rounding, so
they differ from torch's by about bfloat16's precision (relative 2**-8) of each update (``tests/test_muon.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""Keller Jordan's quintic (a, b, c), chosen for the largest slope at zero (https://kellerjordan.github.io/posts/muon/);
``torch.optim.Muon``'s default."""


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: tuple[int, int]) -> float:
    """The learning rate of one (A, B) matrix's orthogonalised update, as ``torch.optim.Muon`` scales it: None or
    ``original`` (Keller Jordan's) lr * sqrt(max(1, A / B)); ``match_rms_adamw`` (Moonshot's, Liu et al. 2025,
    https://arxiv.org/abs/2502.16982) lr * 0.2 * sqrt(max(A, B)), the RMS of a typical AdamW update."""
    rows, cols = shape
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1, rows / cols))


def newton_schulz(
    updates: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype
) -> Tensor:
    """The approximate orthogonalisations U S' V^T (S' near 1) of a stack of matrices, in ``dtype``.

    Args:
        updates: (N, r, c) with r <= c (transpose tall matrices first), any floating dtype.
        coefficients: the quintic's (a, b, c): X <- a X + (b A + c A^2) X with A = X X^T.
        steps: iterations; eps: the floor of each matrix's Frobenius norm, by which it is first divided (so its
            spectral norm is at most 1).
    Returns:
        (N, r, c) in ``dtype``: ``torch.optim._muon._zeropower_via_newtonschulz`` of each matrix, batched.
    """
    a, b, c = coefficients
    x = updates.to(dtype)
    x = x / torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT  # (N, r, r)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x


class Muon(torch.optim.Optimizer):
    """``torch.optim.Muon`` (same arguments, defaults, group keys and state) with the Newton-Schulz iterations
    batched over same-shaped matrices and run in ``ns_dtype`` (module docstring).

    Args:
        params: 2-D parameters or parameter groups.
        lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn: as ``torch.optim.Muon``.
        ns_dtype: the dtype of the Newton-Schulz iterations: ``torch.bfloat16`` (torch's) or ``torch.float32``. A
            setting of this machine, not of the run: it is not in the state dict.

    Raises:
        ValueError: for a parameter that is not 2-D, a negative ``lr``, ``momentum`` or ``weight_decay``, an unknown
            ``adjust_lr_fn``, or ``ns_steps`` >= 100 (torch's bounds).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        ns_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        if min(lr, momentum, weight_decay) < 0:
            raise ValueError(f"Muon needs lr, momentum and weight_decay >= 0, got {lr}, {momentum}, {weight_decay}")
        if adjust_lr_fn not in (None, "original", "match_rms_adamw"):
            raise ValueError(f"Muon's adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}")
        if ns_steps >= 100:
            raise ValueError(f"Muon's ns_steps must be < 100, got {ns_steps}")
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D parameters only, got one of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One update of every parameter with a gradient (``closure``, if given, runs first with gradients on)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update_group(group, params)
        return loss

    def _update_group(self, group: dict, params: list[Tensor]) -> None:
        """``torch.optim.Muon``'s update of ``params`` (one group's, each with a gradient), orthogonalised per shape."""
        grads = [p.grad for p in params]
        buffers = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
            buffers.append(state["momentum_buffer"])
        momentum = group["momentum"]
        torch._foreach_lerp_(buffers, grads, 1 - momentum)  # buf = momentum * buf + (1 - momentum) * grad
        updates = torch._foreach_lerp(grads, buffers, momentum) if group["nesterov"] else buffers
        lr = group["lr"].item() if isinstance(group["lr"], Tensor) else group["lr"]
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, update in enumerate(updates):
            rows, cols = update.shape
            by_shape.setdefault((min(rows, cols), max(rows, cols)), []).append(i)
        for indices in by_shape.values():
            tall = [updates[i].size(0) > updates[i].size(1) for i in indices]
            stacked = torch.stack([updates[i].mT if t else updates[i] for i, t in zip(indices, tall)])
            ortho = newton_schulz(stacked, group["ns_coefficients"], group["ns_steps"], group["eps"], self.ns_dtype)
            for i, t, o in zip(indices, tall, ortho):
                params[i].add_(o.mT if t else o, alpha=-adjusted_lr(lr, group["adjust_lr_fn"], params[i].shape))
