"""Model FLOPs per token of ``lit_gpt.model.GPT``, from the config alone: what throughput and MFU (model FLOPs
utilisation, PaLM appendix B) are measured against (``lit_gpt.train.module.LitGPT.flops_per_batch``,
``bench/train_throughput.py``). ``tests/test_flops.py`` checks the count against ``torch.utils.flop_counter``.

Standard library only (the config).
"""

from __future__ import annotations

from lit_gpt.config import Config


def flops_per_token(config: Config, seq_len: int | None = None, training: bool = True) -> int:
    """Matmul FLOPs per token of ``GPT(config)`` on sequences of ``seq_len`` tokens (default ``block_size``).

    Counts 2 FLOPs per multiply-add, over every matmul of the forward pass (Kaplan et al. 2020, "Scaling laws",
    section 2.1; PaLM, Chowdhery et al. 2022, appendix B). With C = n_embd, hs = head_size, nh = n_head,
    nkv = n_kv_head, F = intermediate_size, V = padded_vocab_size, T = seq_len, per layer:
    q/k/v projections ``2*C*(nh + 2*nkv)*hs``, output projection ``2*nh*hs*C``, MLP ``2*C*F`` per matrix (3 for
    SwiGLU, 2 for GELU and ReLU²), attention scores QK^T and the weighted sum AV ``2 * 2*nh*hs*T``; plus ``lm_head``
    ``2*C*V`` once. Attention counts the full T x T score matrix, as ``torch.utils.flop_counter`` counts
    scaled_dot_product_attention and as PaLM's and nanoGPT's MFU do; a causal kernel skips about half of it
    (a sliding window more), so that part overstates the work such kernels do.
    Not counted (not matmuls, a few percent at most): embedding lookups, norms (QK-norm too), activations,
    softmax, RoPE, bias additions, value-residual mixing, the logit soft cap, the loss.

    ``training=True`` gives forward + backward = 3 x forward: the backward pass does two matmuls (input and
    weight gradients) per forward matmul. Recomputation is not counted (``gradient_checkpointing``'s second
    forward, FlashAttention's recomputed scores), so FLOPs / time / peak is model FLOPs utilisation (MFU, PaLM),
    not hardware FLOPs utilisation.

    A batch of B sequences of T tokens costs ``B * T * flops_per_token(config, T, training)``.

    Raises:
        ValueError: if ``seq_len`` is not in [1, block_size].
    """
    T = config.block_size if seq_len is None else seq_len
    if not 1 <= T <= config.block_size:
        raise ValueError(f"seq_len must be in [1, block_size={config.block_size}], got {seq_len}")
    C, hs, nh, nkv, F = config.n_embd, config.head_size, config.n_head, config.n_kv_head, config.intermediate_size
    projections = C * (nh + 2 * nkv) * hs + nh * hs * C  # q/k/v and o_proj, multiply-adds
    mlp = (3 if config.mlp == "swiglu" else 2) * C * F
    attention = 2 * nh * hs * T  # QK^T and AV over T keys
    forward = 2 * (config.n_layer * (projections + mlp + attention) + C * config.padded_vocab_size)
    return 3 * forward if training else forward
