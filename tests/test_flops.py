"""``lit_gpt.flops.flops_per_token`` against the FLOPs that ``torch.utils.flop_counter.FlopCounterMode`` counts."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from lit_gpt.config import Config
from lit_gpt.flops import flops_per_token
from lit_gpt.model import GPT

aten = torch.ops.aten
SMALL = dict(vocab_size=50, padding_multiple=16, block_size=16, n_layer=2, n_head=4, n_embd=32)
CONFIGS = {
    "llama-gqa": Config(**SMALL, n_kv_head=2),
    "gpt2-tied": Config(**SMALL, position_embedding="learned", norm="layernorm", mlp="gelu", bias=True),
    "gpt2-untied": Config(
        **SMALL, position_embedding="learned", norm="layernorm", mlp="gelu", bias=True, tie_embeddings=False
    ),
    "relu2": Config(**SMALL, mlp="relu2"),
    "switches": Config(**SMALL, qk_norm=True, mlp="relu2", logit_softcap=15.0, value_residual=True, n_kv_head=2),
}
B, T = 3, 12  # T < block_size: the attention term follows the sequence length

# FlopCounterMode (torch 2.13) has formulas for the CUDA attention kernels but none for the CPU flash kernel, so on
# CPU it counts no attention at all. Here the CPU kernel gets torch's own formulas for the CUDA kernels.
CPU_FLASH = {
    aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v),
    aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda grad, q, k, v, *_, **__: sdpa_backward_flop_count(
        grad, q, k, v
    ),
}


def counted(model: GPT, idx: torch.Tensor, backward: bool, **counter_kwargs) -> tuple[int, dict]:
    counter = FlopCounterMode(display=False, **counter_kwargs)
    with counter:
        logits = model(idx)
        if backward:
            logits.float().sum().backward()
    return counter.get_total_flops(), {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("training", [False, True], ids=["forward", "forward+backward"])
def test_formula_equals_flop_counter_with_math_attention(name, training):
    # The math backend computes attention as two batched matmuls (QK^T, AV) over the full T x T scores, and the
    # backward as four: every matmul is visible to the counter, and the formula matches it exactly.
    config = CONFIGS[name]
    idx = torch.randint(0, config.vocab_size, (B, T))
    with sdpa_kernel(SDPBackend.MATH):
        total, by_op = counted(GPT(config), idx, backward=training)
    assert "aten.bmm" in by_op  # attention was counted
    assert total == B * T * flops_per_token(config, T, training=training)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_formula_equals_torch_sdpa_formulas_on_the_cpu_flash_kernel(name, autocast):
    # The model's default CPU path (the fused flash kernel; under bf16 autocast it runs attention in float32,
    # see lit_gpt.attention.attend): the dtype changes nothing, and the forward matches exactly.
    config = CONFIGS[name]
    idx = torch.randint(0, config.vocab_size, (B, T))
    model = GPT(config)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        forward, by_op = counted(model, idx, backward=False, custom_mapping=CPU_FLASH)
        training, _ = counted(model, idx, backward=True, custom_mapping=CPU_FLASH)
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in by_op
    assert forward == B * T * flops_per_token(config, T, training=False)
    # The flash backward recomputes the scores QK^T (one extra B*nh*T*T*hs multiply-add per layer) instead of
    # storing them: hardware FLOPs that model FLOPs (the formula, 3 x forward) leave out on purpose.
    recomputed_scores = config.n_layer * 2 * B * config.n_head * T * T * config.head_size
    assert training == B * T * flops_per_token(config, T, training=True) + recomputed_scores


def test_formula_defaults_and_errors():
    config = Config.from_name("gpt2")
    # nanoGPT's estimate_mfu for GPT-2 124M: 6N + 12 L C T with N the parameters without the position table; the
    # formula leaves out norms and biases (not matmuls), about 0.1% of N.
    nanogpt = 6 * (config.num_params() - config.block_size * config.n_embd) + 12 * 12 * 768 * 1024
    assert flops_per_token(config) == flops_per_token(config, config.block_size, training=True)
    assert abs(flops_per_token(config) - nanogpt) / nanogpt < 2e-3
    assert flops_per_token(config) == 3 * flops_per_token(config, training=False)
    for bad in (0, config.block_size + 1):
        with pytest.raises(ValueError, match="seq_len must be in"):
            flops_per_token(config, bad)
