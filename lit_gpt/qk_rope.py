"""QK-norm and RoPE on queries or keys as one autograd node with a hand-written backward, for eager training.

``norm_rope(x, weight, cos, sin, eps)`` computes what ``lit_gpt.model`` does to each head's queries and keys:
RMSNorm over the head dimension (``lit_gpt.norm.RMSNorm``'s formula, Qwen3's ``q_norm`` / ``k_norm``; skipped when
``weight`` is None) and then RoPE (``lit_gpt.rope.apply_rope``'s rotate-half layout, Su et al. 2021,
https://arxiv.org/abs/2104.09864). Composed from single ops, autograd records about 25 nodes per call, each a
kernel over the whole (B, T, heads, hs) tensor and most with its own backward kernels; on a CPU, where eager
elementwise kernels are bound by their count more than by their arithmetic, this node runs the same mathematics in
about a third of the kernels: ``rotate_half`` becomes a roll by hs/2 (its own inverse) with the sign folded into the
sin table, the norm weight is folded into the tables in the forward pass, and the backward pass uses the closed
forms of the RMSNorm and RoPE gradients.

Used by ``lit_gpt.model`` when autograd records outside ``torch.compile`` (Inductor fuses the composed ops itself).
The results equal the composed ops' up to float rounding (products are associated differently), not bit for bit.
Imports torch only.
"""

from __future__ import annotations

import torch


def norm_rope(
    x: torch.Tensor, weight: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> torch.Tensor:
    """RMSNorm over the last dimension (when ``weight`` is given), then RoPE, as one autograd node.

    Args:
        x: queries or keys (B, heads, T, hs), any floating dtype.
        weight: the norm weight (hs,), or None for RoPE alone.
        cos, sin: the RoPE tables as ``apply_rope`` takes them: (T, hs), or (B, 1, T, hs) for a position per row.
        eps: the norm's epsilon.

    Returns:
        The rotated (normalised) tensor, shaped like x, in the dtype the composed ops give: ``weight``'s promoted
        with x's when normalising (the norm is computed in float32 and rounded to x's dtype before the weight,
        as in ``RMSNorm``), x's otherwise.
    """
    return _NormRoPE.apply(x, weight, cos, sin, eps)


def _rotate(x: torch.Tensor) -> torch.Tensor:
    """``cat(x2, x1)`` for the halves of the last dimension: ``rotate_half`` without its sign (the sign lives in
    the sin table), and its own inverse."""
    return x.roll(x.shape[-1] // 2, dims=-1)


def _signed(sin: torch.Tensor) -> torch.Tensor:
    """``sin`` with its first half negated, so that ``rotate_half(x) * sin == _rotate(x) * _signed(sin)``."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


class _NormRoPE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, cos, sin, eps):
        x = x.contiguous()  # one layout for every kernel here and in backward (mixed strides run far slower)
        if weight is None:
            n, rstd, dtype = x, None, x.dtype
        else:
            x32 = x.to(torch.promote_types(x.dtype, torch.float32))
            rstd = torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + eps)
            n = (x32 * rstd).to(x.dtype)  # rounded to x's dtype before the weight, as RMSNorm does
            dtype = torch.result_type(n, weight)
        cos, sin = cos.to(dtype), _signed(sin.to(dtype))
        c, s = (cos, sin) if weight is None else (weight * cos, _rotate(weight) * sin)
        out = torch.addcmul(n * c, _rotate(n), s)
        ctx.save_for_backward(x, weight, rstd, cos, sin)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd, cos, sin = ctx.saved_tensors
        grad = grad.contiguous()
        # RoPE: out = y * cos + rotate(y) * sin, so dy = grad * cos + rotate(grad * sin) (rotate is an involution)
        grad_y = grad * cos + _rotate(grad * sin)
        if weight is None:
            return grad_y.to(x.dtype), None, None, None, None
        # y = n * weight with n = x * rstd in float32, rounded to x's dtype: the weight saw the rounded n, and the
        # rounding passes the gradient through to x
        n = x.to(rstd.dtype) * rstd
        grad_weight = None
        if ctx.needs_input_grad[1]:
            rounded = n.to(x.dtype)
            grad_weight = (grad_y * rounded).sum(dim=tuple(range(n.dim() - 1))).to(weight.dtype)
        grad_n = (grad_y * weight).to(rstd.dtype)
        # RMSNorm: dx = rstd * (dn - n * mean(dn * n))
        dot = (grad_n * n).mean(dim=-1, keepdim=True)
        grad_x = torch.addcmul(grad_n, n, dot, value=-1.0) * rstd
        return grad_x.to(x.dtype), grad_weight, None, None, None
