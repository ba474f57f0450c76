"""The normalisation layers of ``lit_gpt.model``: RMSNorm (Zhang & Sennrich 2019) and LayerNorm, chosen by
``Config.norm``. Imports torch and the config only."""

from __future__ import annotations

import torch
from torch import nn

from lit_gpt.config import Config


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019, https://arxiv.org/abs/1910.07467).

    ``y = x / sqrt(mean(x**2, dim=-1) + eps) * weight``, computed in float32 and cast back to the input dtype,
    as in Hugging Face ``LlamaRMSNorm``. Input and output shape: (..., dim). A float32 input (with float32 weights)
    goes through ``torch.rms_norm``: a fused kernel on CUDA, and on CPU ATen's C++ composite without the formula's
    Python-level casts, which gives the same result bit for bit there, forward and backward. Any other input
    (bfloat16 queries under autocast) takes the formula above, whose output has the weight's dtype.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
