"""The normalisation layers of ``lit_gpt.model``: RMSNorm (Zhang & Sennrich 2019) and LayerNorm, chosen by
``Config.norm``. Imports torch, the config and ``lit_gpt.norm_rope`` only."""

from __future__ import annotations

import torch
from torch import nn

from lit_gpt.config import Config
from lit_gpt.norm_rope import norm_rope, records_one_node


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019, https://arxiv.org/abs/1910.07467).

    ``y = x / sqrt(mean(x**2, dim=-1) + eps) * weight``, computed in float32 and cast back to the input dtype,
    as in Hugging Face ``LlamaRMSNorm``. Input and output shape: (..., dim); the output has the weight's dtype
    promoted with the input's. Eager CPU training runs it as one autograd node with a hand-written backward
    (``lit_gpt.norm_rope``; equal up to float rounding). Otherwise a float32 input (with float32 weights) goes through
    ``torch.rms_norm``: a fused kernel on CUDA, and on CPU ATen's C++ composite without the formula's Python-level
    casts, which gives the same result bit for bit there, forward and backward; any other input takes the formula.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if records_one_node(x, self.weight):  # eager CPU training: one autograd node, fewer passes (lit_gpt.norm_rope)
            return norm_rope(x, self.weight, None, None, self.eps)
        if x.dtype == self.weight.dtype == torch.float32:
            return torch.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def build_norm(config: Config) -> nn.Module:
    """The norm layer that ``config.norm`` names, over the last dimension of size n_embd."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)
