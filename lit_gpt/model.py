"""A decoder-only transformer in plain PyTorch: LLaMA-style by default, GPT-2 by configuration.

Architecture (each choice is a ``Config`` field):
- positions: rotary embeddings, RoPE (Su et al. 2021, https://arxiv.org/abs/2104.09864) in the half-split
  ("rotate_half") layout of Hugging Face Llama, or GPT-2's learned position table;
- pre-norm blocks with RMSNorm (Zhang & Sennrich 2019) or LayerNorm;
- causal self-attention through ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
  kernels where the device has them), with grouped-query attention (Ainslie et al. 2023) when n_kv_head < n_head;
- a SwiGLU MLP (Shazeer 2020) or GPT-2's GELU MLP;
- optional weight tying between the token embedding and the output head.

Module names follow Hugging Face ``LlamaForCausalLM`` (``q_proj``, ``gate_proj``, ``input_layernorm``, ``norm``,
``lm_head`` ...), so converting a state dict is a rename.

Notation in shape comments: B batch size, T sequence length, C n_embd, nh n_head, nkv n_kv_head, hs head_size,
V padded_vocab_size.

This file imports torch and the config only: no Lightning, no training policy (loss, optimizer) and no I/O.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lit_gpt.config import Config


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019, https://arxiv.org/abs/1910.07467).

    ``y = x / sqrt(mean(x**2, dim=-1) + eps) * weight``, computed in float32 and cast back to the input dtype,
    as in Hugging Face ``LlamaRMSNorm``. Input and output shape: (..., dim).
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def build_norm(config: Config) -> nn.Module:
    """The norm layer that ``config.norm`` names, over the last dimension of size n_embd."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def rope_cache(seq_len: int, head_size: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables for RoPE in the half-split layout, each of shape (seq_len, head_size), float32.

    Frequency i (0 <= i < head_size/2) is ``theta ** (-2i / head_size)``; both halves of the last dimension
    repeat the same frequencies, matching Hugging Face ``LlamaRotaryEmbedding``.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs/2,)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (seq_len, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (seq_len, hs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` of shape (B, n_heads, T, hs) by position; cos/sin have shape (T, hs).

    ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)`` for the halves x1, x2 of the
    last dimension. Computed in x's dtype.
    """
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with grouped-query attention (n_kv_head key/value heads)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.n_kv_head, config.head_size
        self.q_proj = nn.Linear(config.n_embd, config.n_head * config.head_size, bias=config.bias)
        self.k_proj = nn.Linear(config.n_embd, config.n_kv_head * config.head_size, bias=config.bias)
        self.v_proj = nn.Linear(config.n_embd, config.n_kv_head * config.head_size, bias=config.bias)
        self.o_proj = nn.Linear(config.n_head * config.head_size, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """x: (B, T, C); rope: the (cos, sin) tables for positions 0..T-1, or None. Returns (B, T, C)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=True,
            enable_gqa=self.n_kv_head != self.n_head,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_size)  # (B, T, nh*hs)
        return self.o_proj(y)


class MLP(nn.Module):
    """Feed-forward block: SwiGLU ``down(silu(gate(x)) * up(x))`` or GPT-2's ``down(gelu(up(x)))``.

    Input and output shape (B, T, C); hidden width ``config.intermediate_size``.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        if self.swiglu:
            self.gate_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))  # GPT-2's GELU approximation


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``. Shape (B, T, C) in and out."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.input_layernorm = build_norm(config)
        self.self_attn = CausalSelfAttention(config)
        self.post_attention_layernorm = build_norm(config)
        self.mlp = MLP(config)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.resid_dropout(self.self_attn(self.input_layernorm(x), rope))
        return x + self.resid_dropout(self.mlp(self.post_attention_layernorm(x)))


class GPT(nn.Module):
    """Decoder-only language model: token ids (B, T) in, next-token logits (B, T, V) out.

    Initialisation follows GPT-2 (and nanoGPT): every Linear and Embedding weight ~ N(0, 0.02), biases zero,
    norm weights one, and the two residual output projections of each block (``o_proj``, ``down_proj``) scaled
    by 1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.padded_vocab_size, config.n_embd)
        if config.position_embedding == "learned":
            self.embed_positions = nn.Embedding(config.block_size, config.n_embd)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = build_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)  # no bias in GPT-2 or LLaMA
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        if config.position_embedding == "rope":
            cos, sin = rope_cache(config.block_size, config.head_size, config.rope_theta)
            # Not persistent: derived from the config, so checkpoints hold weights only.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for block in self.layers:
            nn.init.normal_(block.self_attn.o_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.down_proj.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Number of distinct trainable parameters (a tied matrix counts once); equals ``config.num_params()``."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits for the next token at every position.

        Args:
            idx: token ids, LongTensor (B, T) with T <= block_size.
        Returns:
            logits (B, T, padded_vocab_size) in the compute dtype; position t only depends on idx[:, :t+1].
        Raises:
            ValueError: if T exceeds ``config.block_size``.
        """
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}; crop the input")
        x = self.embed_tokens(idx)  # (B, T, C)
        rope = None
        if self.config.position_embedding == "learned":
            x = x + self.embed_positions(torch.arange(T, device=idx.device))
        else:
            rope = (self.rope_cos[:T], self.rope_sin[:T])  # (T, hs) each
        x = self.embed_dropout(x)
        for block in self.layers:
            x = block(x, rope)
        return self.lm_head(self.norm(x))  # (B, T, V)
