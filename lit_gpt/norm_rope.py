"""RMSNorm, RoPE, or RMSNorm then RoPE, as one autograd node with a hand-written backward, for eager training.

``norm_rope(x, weight, cos, sin, eps)`` computes what ``lit_gpt.norm.RMSNorm`` (Zhang & Sennrich 2019,
https://arxiv.org/abs/1910.07467, Hugging Face ``LlamaRMSNorm``'s formula) and ``lit_gpt.rope.apply_rope``
(rotate-half RoPE, Su et al. 2021, https://arxiv.org/abs/2104.09864) compute, alone or in sequence (QK-norm: Qwen3's
``q_norm`` / ``k_norm`` on each head's queries and keys, then RoPE). Composed from single ops, autograd records a
node per op, each a kernel over the whole tensor and most with one or two backward kernels; on a CPU these passes
over memory, not their arithmetic, set the time. This node does the same mathematics in fewer passes:
``rotate_half(x) * sin`` is never materialised (two in-place products over the halves of the last dimension add
it to ``x * cos``), the norm weight is folded into the RoPE tables in the forward pass, the normalised input is
kept for the backward pass, and that pass uses the closed forms of the RMSNorm and RoPE gradients (for
``y = n * w`` with ``n = x * rstd``: ``dx = rstd * (dn - n * mean(dn * n))``, ``dn = dy * w``).

Used by ``lit_gpt.model`` and ``lit_gpt.norm`` where ``records_one_node`` says so: on CPU, when autograd records
outside ``torch.compile`` (Inductor fuses the composed ops itself; without autograd there is no backward to save).
Values and gradients equal the composed ops' up to float rounding (RoPE's products are associated differently; the
norm alone in float32 gives ``torch.rms_norm``'s forward bits). Imports torch only.
"""

from __future__ import annotations

import torch
from torch import nn


def records_one_node(*tensors: torch.Tensor | None) -> bool:
    """Whether ``norm_rope`` should replace the composed ops for these inputs and weights (None ones ignored):
    autograd is recording, ``torch.compile`` is not tracing, and each is a plain CPU tensor or parameter (a
    tensor-parallel ``DTensor`` or another subclass runs the composed ops, which dispatch through it; CUDA keeps
    ``torch.rms_norm``'s fused kernel)."""
    if not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return False
    tensors = [t for t in tensors if t is not None]
    return all(type(t) in (torch.Tensor, nn.Parameter) and t.device.type == "cpu" for t in tensors)


def norm_rope(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    cos: torch.Tensor | None,
    sin: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """RMSNorm over the last dimension (when ``weight`` is given), then RoPE (when ``cos`` and ``sin`` are), as one
    autograd node.

    Args:
        x: the input (..., dim): the residual stream (B, T, C) for a block's norm, queries or keys (B, heads, T, hs)
            for QK-norm and RoPE; any floating dtype.
        weight: the norm weight (dim,), or None for RoPE alone.
        cos, sin: the RoPE tables as ``apply_rope`` takes them, (T, hs) or (B, 1, T, hs) for a position per row; or
            both None for the norm alone.
        eps: the norm's epsilon.

    Returns:
        A tensor shaped like x, in the dtype the composed ops give: with a norm, ``weight``'s dtype promoted with
        x's (the norm is computed in float32, or float64 for a float64 x, and rounded to x's dtype before the
        weight, as in ``RMSNorm``); without, x's.

    Raises:
        ValueError: if neither a norm weight nor RoPE tables are given.
    """
    if weight is None and cos is None:
        raise ValueError("norm_rope needs a norm weight, RoPE tables (cos and sin), or both")
    return _NormRoPE.apply(x, weight, cos, sin, eps)


def _add_rotated(out: torch.Tensor, x: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``out += rotate_half(x) * sin`` in place, half by half, without materialising ``rotate_half(x)``:
    ``out[:h] -= x[h:] * sin[:h]`` and ``out[h:] += x[:h] * sin[h:]`` over the last dimension (h = hs / 2)."""
    half = x.shape[-1] // 2
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1.0)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


def _add_rotated_transpose(out: torch.Tensor, grad: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``out += rotate_half^T(grad * sin)`` in place, the gradient of ``_add_rotated`` with respect to x:
    ``out[:h] += grad[h:] * sin[h:]`` and ``out[h:] -= grad[:h] * sin[:h]``."""
    half = grad.shape[-1] // 2
    out[..., :half].addcmul_(grad[..., half:], sin[..., half:])
    out[..., half:].addcmul_(grad[..., :half], sin[..., :half], value=-1.0)
    return out


class _NormRoPE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, cos, sin, eps):
        x = x.contiguous()  # one layout for every kernel here and in backward (mixed strides run far slower)
        ctx.x_dtype = x.dtype
        if weight is None:
            n, n32, rstd, dtype = x, None, None, x.dtype
        else:
            x32 = x.to(torch.promote_types(x.dtype, torch.float32))
            rstd = torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + eps)
            n32 = x32 * rstd  # saved: the backward pass needs it in float32, and recomputing it is a pass more
            n = n32.to(x.dtype)  # rounded to x's dtype before the weight, as RMSNorm does
            dtype = torch.result_type(n, weight)
        if cos is None:
            ctx.save_for_backward(n32, weight, rstd)
            return n * weight
        cos, sin = cos.to(dtype), sin.to(dtype)
        half = sin.shape[-1] // 2
        c, s = (cos, sin) if weight is None else (weight * cos, torch.cat((weight[half:], weight[:half])) * sin)
        ctx.save_for_backward(n32, weight, rstd, cos, sin)
        return _add_rotated(n * c, n, s)

    @staticmethod
    def backward(ctx, grad):
        n, weight, rstd, *tables = ctx.saved_tensors
        grad = grad.contiguous()
        # RoPE: out = y * cos + rotate_half(y) * sin, so dy = grad * cos + rotate_half^T(grad * sin)
        grad_y = grad if not tables else _add_rotated_transpose(grad * tables[0], grad, tables[1])
        if weight is None:
            return grad_y.to(ctx.x_dtype), None, None, None, None
        # y = n * weight with n = x * rstd in float32, rounded to x's dtype: the weight saw the rounded n, and the
        # rounding passes the gradient through to x
        grad_weight = None
        if ctx.needs_input_grad[1]:
            rounded = n.to(ctx.x_dtype)
            grad_weight = (grad_y * rounded).sum(dim=tuple(range(n.dim() - 1))).to(weight.dtype)
        grad_n = (grad_y * weight).to(rstd.dtype)  # a new tensor: the in-place ops below write nothing else
        dot = (grad_n * n).mean(dim=-1, keepdim=True)
        grad_x = grad_n.addcmul_(n, dot, value=-1.0).mul_(rstd)
        return grad_x.to(ctx.x_dtype), grad_weight, None, None, None
