"""A decoder-only transformer in plain PyTorch: LLaMA-style by default, GPT-2 by configuration.

Architecture (each choice is a ``Config`` field):
- positions: rotary embeddings, RoPE (Su et al. 2021, https://arxiv.org/abs/2104.09864) in the half-split
  ("rotate_half") layout of Hugging Face Llama, with optional scaling (``lit_gpt.rope``), or GPT-2's learned table;
- pre-norm blocks with RMSNorm (Zhang & Sennrich 2019) or LayerNorm (``lit_gpt.norm``);
- causal self-attention through ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
  kernels where the device has them), with grouped-query attention (Ainslie et al. 2023) when n_kv_head < n_head;
- a SwiGLU MLP (Shazeer 2020), GPT-2's GELU MLP or a squared-ReLU MLP (Primer, So et al. 2021);
- optional weight tying between the token embedding and the output head;
- switches from the fast small-GPT training work (modded-nanogpt): RMSNorm on queries and keys (QK-norm), output
  projections initialised to zero, value residuals (Zhou et al. 2024) and a tanh soft cap on the logits (Gemma 2);
- optional sliding-window attention, attention within documents (``documents``: ``lit_gpt.attention``, whose
  kernel, SDPA or FlexAttention, computes every attention) and per-block activation checkpointing;
- a key/value cache for generation (``GPT.setup_kv_cache``), with left-padded batches: preallocated, or rolling
  with attention sinks past ``block_size``; the caches, the attention masks and the positions of cached tokens are
  ``lit_gpt.kv_cache``'s.

Speed: q/k/v (and gate/up, except in eager CPU code) run as one matmul over concatenated weights (``_fused_linear``);
on CPU, attention runs in float32 even under bf16 autocast (``lit_gpt.attention.attend``). ``lit_gpt.flops`` counts
the model FLOPs that MFU is measured against; ``lit_gpt.meta.meta_model`` builds the model without memory for loading.

Module names follow Hugging Face ``LlamaForCausalLM`` (``q_proj``, ``gate_proj``, ``input_layernorm``, ``norm``,
``lm_head`` ...), so converting a state dict is a rename.

Notation in shape comments: B batch size, T sequence length, C n_embd, nh n_head, nkv n_kv_head, hs head_size,
V padded_vocab_size, S key length (T without a cache, the cache length with one).

This file imports torch, the config and its own parts (``lit_gpt.rope``, ``lit_gpt.kv_cache``, ``lit_gpt.attention``,
``lit_gpt.norm``, ``lit_gpt.norm_rope``: torch only): no Lightning, no training policy (loss, optimizer), no
parallelism (FSDP and tensor parallelism are applied from ``lit_gpt.train``) and no file I/O (``lit_gpt.checkpoint``
loads models: ``lit_gpt.load_model(path)``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from lit_gpt.attention import attend, document_mask
from lit_gpt.config import Config
from lit_gpt.kv_cache import KVCache, RollingKVCache, attention_layout
from lit_gpt.norm import RMSNorm, build_norm
from lit_gpt.norm_rope import norm_rope, records_one_node
from lit_gpt.rope import apply_rope, rope_at, rope_cache


def _fused_linear(x: torch.Tensor, linears: tuple[nn.Module, ...]) -> tuple[torch.Tensor, ...]:
    """``tuple(linear(x) for linear in linears)``, as one matmul over the concatenated weights when that is exact.

    In training one larger matmul runs faster than several small ones (q/k/v; gate/up off the CPU), and the modules
    (and their Hugging Face names) stay separate. Fused only when every module is a plain
    ``nn.Linear`` holding plain parameters: a wrapped or replaced layer (a LoRA adapter, a quantized layer) or a
    tensor-subclass weight (a tensor-parallel ``DTensor``, a quantized tensor) runs its own ``forward``, which
    fusing would silently bypass. Without autograd (evaluation, generation) each linear runs on its own:
    concatenating the weights would re-read them every call, the bottleneck of KV-cache decoding.
    """
    plain = all(type(linear) is nn.Linear and type(linear.weight) is nn.Parameter for linear in linears)
    if not (plain and torch.is_grad_enabled()):
        return tuple(linear(x) for linear in linears)
    weight = torch.cat([linear.weight for linear in linears])
    bias = None if linears[0].bias is None else torch.cat([linear.bias for linear in linears])
    return F.linear(x, weight, bias).split([linear.out_features for linear in linears], dim=-1)


class ValueResidual(nn.Module):
    """Value residual learning (Zhou et al. 2024, https://arxiv.org/abs/2410.17897): ``weight * v + (1 - weight) *
    v_first``, a learned mix (``weight`` of shape (1,), 0.5 at init) of a layer's values with the first layer's.
    v and v_first (B, nkv, T, hs); returns the same shape."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((1,), 0.5))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, 0.5)

    def forward(self, v: torch.Tensor, v_first: torch.Tensor) -> torch.Tensor:
        return self.weight * v + (1 - self.weight) * v_first


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with grouped-query attention (n_kv_head key/value heads), optional RMSNorm
    on each head's queries and keys (``config.qk_norm``) and value residuals (``config.value_residual``: layers after
    the first, ``layer_idx > 0``, mix the first layer's values into theirs: ``ValueResidual``)."""

    def __init__(self, config: Config, layer_idx: int = 0) -> None:
        super().__init__()
        if config.qk_norm:  # per head, weights of size hs shared by the heads (Qwen3's q_norm / k_norm)
            self.q_norm = RMSNorm(config.head_size, eps=config.norm_eps)
            self.k_norm = RMSNorm(config.head_size, eps=config.norm_eps)
        if config.value_residual and layer_idx > 0:
            self.value_residual = ValueResidual()
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.n_kv_head, config.head_size
        qkv_bias = config.bias or config.qkv_bias  # Qwen2: biases on q, k and v only
        self.q_proj = nn.Linear(config.n_embd, config.n_head * config.head_size, bias=qkv_bias)
        self.k_proj = nn.Linear(config.n_embd, config.n_kv_head * config.head_size, bias=qkv_bias)
        self.v_proj = nn.Linear(config.n_embd, config.n_kv_head * config.head_size, bias=qkv_bias)
        self.o_proj = nn.Linear(config.n_head * config.head_size, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
        kv_length: int | None = None,
        v_first: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention output (B, T, C) for x (B, T, C), and the values (B, nkv, T, hs) of these T positions.

        rope: (cos, sin) for these T positions (see ``apply_rope``), or None for learned positions.
        mask: boolean (T, S), (1, T, S) or (B, 1, T, S), True where a query may attend to a key, or a FlexAttention
            block mask (``lit_gpt.attention``); None means causal over these T keys, or every one of the
            ``kv_length`` cached keys (``lit_gpt.kv_cache.attention_layout``).
        input_pos: cache indices (T,) of these positions when decoding with the KV cache, else None.
        kv_length: with ``input_pos``, attend to the first ``kv_length`` cache entries (S = kv_length); None attends
            to these T keys only (a prefill from position 0), which are still written to the cache.
        v_first: the first layer's values (B, nkv, T, hs) of these positions, mixed into this layer's when it has a
            ``value_residual``; the cache stores the mixed values, so decoding needs only the new positions' v_first.
        """
        B, T, _ = x.shape
        q, k, v = _fused_linear(x, (self.q_proj, self.k_proj, self.v_proj))
        # Heads are counted from the projections' widths, so a tensor-parallel shard (lit_gpt.train.parallel), which
        # holds n_head / tp query and n_kv_head / tp key/value heads, runs this code unchanged.
        q = q.view(B, T, -1, self.head_size)  # (B, T, nh, hs)
        k = k.view(B, T, -1, self.head_size)  # (B, T, nkv, hs)
        q_norm, k_norm = (self.q_norm, self.k_norm) if hasattr(self, "q_norm") else (None, None)
        weights = (None, None) if q_norm is None else (q_norm.weight, k_norm.weight)
        one_node = rope is not None and records_one_node(q, k, *weights)  # eager CPU training: QK-norm + RoPE, one node
        if q_norm is not None and not one_node:
            q, k = q_norm(q), k_norm(k)  # on (B, T, heads, hs), the layout tensor parallelism shards (train.parallel)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, nh, T, hs), (B, nkv, T, hs)
        v = v.view(B, T, -1, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        if hasattr(self, "value_residual"):
            v = self.value_residual(v, v_first)
        values = v
        if one_node:  # q_norm's eps is k_norm's (config.norm_eps)
            q, k = (norm_rope(t, w, *rope, 0.0 if q_norm is None else q_norm.eps) for t, w in zip((q, k), weights))
        elif rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if input_pos is not None:
            cached_k, cached_v = self.kv_cache.update(input_pos, k, v)
            if kv_length is not None:
                k, v = cached_k[:, :, :kv_length], cached_v[:, :, :kv_length]  # (B, nkv, S, hs)
        dropout_p = self.dropout if self.training else 0.0
        y = attend(q, k, v, mask, mask is None and kv_length is None, dropout_p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, nh*hs)
        return self.o_proj(y), values


class MLP(nn.Module):
    """Feed-forward block: SwiGLU ``down(silu(gate(x)) * up(x))``, GPT-2's ``down(gelu(up(x)))`` or squared ReLU
    ``down(relu(up(x))**2)``. Input and output shape (B, T, C); hidden width ``config.intermediate_size``.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.swiglu, self.relu2 = config.mlp == "swiglu", config.mlp == "relu2"
        if self.swiglu:
            self.gate_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            linears = (self.gate_proj, self.up_proj)  # eager CPU: two (C, I) products beat one (C, 2I) in float32
            compiling = torch.compiler.is_compiling()
            gate, up = (linear(x) for linear in linears) if x.is_cpu and not compiling else _fused_linear(x, linears)
            if compiling:
                # silu(gate) = gate * sigmoid(gate), written out so that a compiled backward computes the sigmoid
                # once (Inductor recomputes F.silu's in both of its gradient terms; the cost is in docs/benchmarks.md)
                return self.down_proj(gate * torch.sigmoid(gate) * up)
            return self.down_proj(F.silu(gate) * up)  # eager: one kernel forward and one backward for silu
        if self.relu2:
            return self.down_proj(F.relu(self.up_proj(x)).square())
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))  # GPT-2's GELU approximation


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``. Shape (B, T, C) in and out; also
    returns the attention's values (B, nkv, T, hs), the first layer's of which feed the value residuals."""

    def __init__(self, config: Config, layer_idx: int = 0) -> None:
        super().__init__()
        self.input_layernorm = build_norm(config)
        self.self_attn = CausalSelfAttention(config, layer_idx)
        self.post_attention_layernorm = build_norm(config)
        self.mlp = MLP(config)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
        kv_length: int | None = None,
        v_first: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, values = self.self_attn(self.input_layernorm(x), rope, mask, input_pos, kv_length, v_first)
        x = x + self.resid_dropout(y)
        return x + self.resid_dropout(self.mlp(self.post_attention_layernorm(x))), values


class GPT(nn.Module):
    """Decoder-only language model: token ids (B, T) in, next-token logits (B, T, V) out.

    Initialisation (``config.init``): linear weights by the chosen scheme (GPT-2's N(0, 0.02) by default),
    embeddings N(0, 0.02), biases zero, norm weights one, and the two residual output projections of each block
    (``o_proj``, ``down_proj``) scaled by 1/sqrt(2 * n_layer) so the residual stream's variance does not grow
    with depth (GPT-2, nanoGPT); with ``config.zero_init_proj`` those two start at zero instead. Value-residual
    lambdas start at 0.5.

    Generation with a KV cache: ``setup_kv_cache(batch_size, max_seq_length)``, then call the model with
    ``input_pos`` (the cache indices of the tokens passed): first the whole prompt (prefill), then one token
    at a time. ``clear_kv_cache()`` frees the cache.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.padded_vocab_size, config.n_embd)
        if config.position_embedding == "learned":
            self.embed_positions = nn.Embedding(config.block_size, config.n_embd)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = build_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)  # no bias in GPT-2 or LLaMA
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        if config.position_embedding == "rope":
            # Not persistent: derived from the config, so checkpoints hold weights only.
            self.register_buffer("rope_cos", torch.empty(0), persistent=False)
            self.register_buffer("rope_sin", torch.empty(0), persistent=False)
            self.reset_rope_cache()
        self.left_pad: torch.Tensor | None = None  # (B,) padding tokens per row of the cached batch
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """(Re)initialise every weight by ``config.init`` (see the class docstring)."""
        residual_scale = 1.0 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and module.weight is not self.embed_tokens.weight:
                fan_out, fan_in = module.weight.shape
                if self.config.init == "xavier":
                    std = math.sqrt(2.0 / (fan_in + fan_out))
                elif self.config.init == "kaiming":
                    std = 1.0 / math.sqrt(fan_in)
                else:
                    std = 0.02
                if name.endswith(("o_proj", "down_proj")):  # residual-branch outputs
                    std *= 0.0 if self.config.zero_init_proj else residual_scale
                if std:
                    nn.init.normal_(module.weight, mean=0.0, std=std)
                else:
                    nn.init.zeros_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):  # also the output head when tied
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, (RMSNorm, nn.LayerNorm, ValueResidual)):
                module.reset_parameters()

    def reset_rope_cache(self) -> None:
        """(Re)compute the RoPE tables (block_size, head_size), with ``config.rope_scaling``, on the device of the
        weights; a model built on the meta device (to load weights without initialising them) needs this before use."""
        c, device = self.config, self.embed_tokens.weight.device
        cos, sin = rope_cache(c.block_size, c.head_size, c.rope_theta, c.rope_scaling)
        self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)

    def num_params(self) -> int:
        """Number of distinct trainable parameters (a tied matrix counts once); equals ``config.num_params()``."""
        return sum(p.numel() for p in self.parameters())

    def setup_kv_cache(
        self,
        batch_size: int,
        max_seq_length: int | None = None,
        left_pad: torch.Tensor | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        sinks: int | None = None,
    ) -> None:
        """Allocate a key/value cache in every layer for ``batch_size`` rows of ``max_seq_length`` entries.

        Args:
            left_pad: (B,) number of padding tokens at the start of each row of a left-padded batch: those
                keys are never attended to, and positions count from each row's first real token.
            device, dtype: of the cache; default those of the model's weights.
            sinks: None for a cache of up to ``max_seq_length`` tokens (``KVCache``); else a rolling cache
                (``lit_gpt.kv_cache.RollingKVCache``) for sequences of any length, which keeps each row's first
                ``sinks`` tokens (attention sinks; a left-padded row's padding too) and its most recent ones. RoPE only.
        Raises:
            ValueError: if ``max_seq_length`` exceeds ``block_size``, or for a rolling cache with learned positions.
        """
        max_seq_length = max_seq_length or self.config.block_size
        if max_seq_length > self.config.block_size:
            raise ValueError(f"max_seq_length {max_seq_length} exceeds block_size {self.config.block_size}")
        if sinks is not None and self.config.position_embedding != "rope":
            raise ValueError("a rolling KV cache moves cached keys by rotating them: it needs RoPE positions")
        weight = self.lm_head.weight
        device, dtype = device or weight.device, dtype or weight.dtype
        shape = (batch_size, self.config.n_kv_head, max_seq_length, self.config.head_size)
        for block in self.layers:
            if sinks is None:
                block.self_attn.kv_cache = KVCache(shape, device=device, dtype=dtype)
            else:  # the rotation by one position: row 1 of the RoPE tables
                kept = sinks + (0 if left_pad is None else int(left_pad.max()))
                shift = (self.rope_cos[1], self.rope_sin[1])
                block.self_attn.kv_cache = RollingKVCache(shape, kept, shift, device=device, dtype=dtype)
        self.left_pad = None if left_pad is None else left_pad.to(device)

    def clear_kv_cache(self) -> None:
        """Free the key/value caches."""
        for block in self.layers:
            block.self_attn.kv_cache = None
        self.left_pad = None

    def forward(
        self,
        idx: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        documents: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for the next token at every position.

        Args:
            idx: token ids, LongTensor (B, T) with T <= block_size.
            input_pos: None to process ``idx`` as a whole sequence from position 0 (training, evaluation); or
                the indices (T,) that ``idx`` occupies in the sequence the KV cache holds, after ``setup_kv_cache``
                (cache indices; a rolling cache's continue past its size).
            documents: None, or (B, T) integer document ids (whole sequences only): a token then attends only to
                earlier tokens of its own document (``lit_gpt.attention.document_mask``).
            positions: None, or integer positions (T,) or (B, T) for the position embeddings of a whole sequence
                (e.g. restarting at each document; each < block_size); None: 0 .. T-1 (or the cache's).
        Returns:
            logits (B, T, padded_vocab_size) in the compute dtype; position t only depends on idx[:, :t+1]
            (and on the cached tokens before it; with ``documents``, on those of its document).
        Raises:
            ValueError: if T exceeds ``config.block_size``, ``input_pos`` is given without a cache, or ``documents``
                or ``positions`` with ``input_pos``.
        """
        return self.head(self.hidden_states(idx, input_pos, documents, positions))  # (B, T, V)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits (..., V) for final hidden states (..., C): ``lm_head``, then ``config.logit_softcap``'s
        ``cap * tanh(logits / cap)`` where set (Gemma 2)."""
        logits = self.lm_head(hidden)
        cap = self.config.logit_softcap
        return logits if cap is None else cap * torch.tanh(logits / cap)

    def hidden_states(
        self,
        idx: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        documents: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final-norm hidden states (B, T, C) that ``forward`` feeds to ``lm_head``; same arguments and errors.

        Generation applies ``head`` to the last position only, which saves a (T, V) matmul per prefill.
        """
        T, cache = idx.size(1), self.layers[0].self_attn.kv_cache
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}; crop the input")
        if input_pos is not None and (cache is None or documents is not None or positions is not None):
            raise ValueError("input_pos needs a KV cache (call setup_kv_cache first), and no documents or positions")
        # (T,) or (B, T) positions; the mask and the cache entries read (see lit_gpt.kv_cache.attention_layout)
        window = self.config.sliding_window
        layout = attention_layout if input_pos is None else cache.layout
        cache_positions, mask, kv_length = layout(T, input_pos, window, self.left_pad, idx.device)
        if documents is not None:  # FlexAttention's block mask on CUDA, which has no attention dropout
            mask = document_mask(documents, window, idx.is_cuda and not (self.training and self.config.dropout))
        positions = cache_positions if positions is None else positions
        x = self.embed_tokens(idx)  # (B, T, C)
        rope = None
        if self.config.position_embedding == "learned":
            x = x + self.embed_positions(positions)
        else:
            cos, sin = rope_at(self.rope_cos, self.rope_sin, positions, self.config)  # (T, hs) or (B, T, hs)
            rope = (cos, sin) if positions.dim() == 1 else (cos.unsqueeze(1), sin.unsqueeze(1))
        x = self.embed_dropout(x)
        v_first = None  # the first layer's values (B, nkv, T, hs), with value residuals
        for block in self.layers:
            args = (x, rope, mask, input_pos, kv_length, v_first)
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, values = torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
            else:
                x, values = block(*args)
            if self.config.value_residual and v_first is None:
                v_first = values
        return self.norm(x)  # (B, T, C)
