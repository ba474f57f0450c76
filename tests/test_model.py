import math

import pytest
import torch
import torch.nn.functional as F

import lit_gpt.model
import lit_gpt.norm
from lit_gpt.config import Config
from lit_gpt.model import GPT, RMSNorm, _fused_linear
from lit_gpt.rope import apply_rope, rope_cache

SWITCHES = {
    "llama": {},
    "learned_positions": dict(position_embedding="learned"),
    "layernorm": dict(norm="layernorm"),
    "layernorm_bias": dict(norm="layernorm", bias=True),
    "gelu": dict(mlp="gelu"),
    "gqa": dict(n_kv_head=2),
    "mqa": dict(n_kv_head=1),
    "untied": dict(tie_embeddings=False),
    "untied_bias": dict(tie_embeddings=False, bias=True),
    "gpt2_style": dict(position_embedding="learned", norm="layernorm", mlp="gelu", bias=True),
    "padded_vocab_dropout": dict(padding_multiple=64, dropout=0.1),
    "sliding_window": dict(sliding_window=4),
    "xavier_init": dict(init="xavier"),
    "kaiming_init": dict(init="kaiming"),
    "gradient_checkpointing": dict(gradient_checkpointing=True),
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp="relu2"),
    "zero_init_proj": dict(zero_init_proj=True),
    "logit_softcap": dict(logit_softcap=2.0),
    "value_residual": dict(value_residual=True),
    "modded_bias": dict(
        qk_norm=True,
        mlp="relu2",
        zero_init_proj=True,
        logit_softcap=15.0,
        value_residual=True,
        bias=True,
        gradient_checkpointing=True,
    ),
}


def make(tiny_config, **overrides):
    return tiny_config.replace(**overrides)


def test_output_shape(tiny_config):
    model = GPT(tiny_config)
    idx = torch.randint(0, tiny_config.vocab_size, (3, tiny_config.block_size))
    assert model(idx).shape == (3, tiny_config.block_size, tiny_config.padded_vocab_size)
    assert model(idx[:, :5]).shape == (3, 5, tiny_config.padded_vocab_size)


def test_longer_than_block_size_raises(tiny_config):
    model = GPT(tiny_config)
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(torch.zeros(1, tiny_config.block_size + 1, dtype=torch.long))


@pytest.mark.parametrize(
    "switch", ["llama", "gpt2_style", "gqa", "qk_norm", "relu2", "logit_softcap", "value_residual"]
)
def test_causality(tiny_config, switch):
    model = GPT(make(tiny_config, **SWITCHES[switch])).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (2, tiny_config.block_size))
    t = 9
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % tiny_config.vocab_size
    with torch.no_grad():
        before, after = model(idx), model(changed)
    torch.testing.assert_close(before[:, :t], after[:, :t], rtol=0, atol=0)
    assert not torch.allclose(before[:, t:], after[:, t:])


def test_initial_loss_is_ln_vocab():
    config = Config(vocab_size=512, block_size=32, n_layer=2, n_head=4, n_embd=64)
    model = GPT(config)
    idx = torch.randint(0, config.vocab_size, (8, config.block_size))
    with torch.no_grad():
        loss = F.cross_entropy(model(idx).flatten(0, 1), idx.roll(-1, dims=1).flatten())
    assert abs(loss.item() - math.log(config.vocab_size)) < 0.1


def train_steps(model, idx, steps, lr=3e-3):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_overfits_one_batch(tiny_config):
    model = GPT(tiny_config)
    idx = torch.randint(0, tiny_config.vocab_size, (4, tiny_config.block_size + 1))
    losses = train_steps(model, idx, steps=150, lr=1e-2)
    assert losses[0] > 4.0
    assert losses[-1] < 0.1


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_builds_counts_and_trains(tiny_config, switch):
    config = make(tiny_config, **SWITCHES[switch])
    model = GPT(config)
    assert model.num_params() == config.num_params()
    idx = torch.randint(0, config.vocab_size, (4, config.block_size + 1))
    losses = train_steps(model, idx, steps=20)
    assert losses[-1] < losses[0] - 0.5
    assert all(p.grad is not None for p in model.parameters())


def test_weight_tying(tiny_config):
    tied, untied = GPT(tiny_config), GPT(make(tiny_config, tie_embeddings=False))
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.lm_head.weight is not untied.embed_tokens.weight
    assert untied.num_params() - tied.num_params() == tiny_config.padded_vocab_size * tiny_config.n_embd


def test_gqa_matches_mha_with_repeated_kv_heads(tiny_config):
    gqa = GPT(make(tiny_config, n_kv_head=2)).eval()
    mha = GPT(tiny_config).eval()
    state = gqa.state_dict()
    hs = tiny_config.head_size
    for name in list(state):
        if name.endswith(("k_proj.weight", "v_proj.weight")):  # (nkv*hs, C) -> (nh*hs, C), each head twice
            state[name] = state[name].view(2, hs, -1).repeat_interleave(2, dim=0).reshape(4 * hs, -1)
    mha.load_state_dict(state)
    idx = torch.randint(0, tiny_config.vocab_size, (2, tiny_config.block_size))
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx), mha(idx))


def test_residual_projections_are_scaled_at_init():
    config = Config(vocab_size=64, n_layer=8, n_head=4, n_embd=256)
    block = GPT(config).layers[0]
    expected = 0.02 / math.sqrt(2 * config.n_layer)
    assert block.self_attn.o_proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert block.mlp.down_proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert block.self_attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_rope_scores_depend_only_on_relative_position():
    hs = 16
    cos, sin = rope_cache(32, hs)
    q, k = torch.randn(hs), torch.randn(hs)

    def score(m, n):
        qm = apply_rope(q.expand(1, 1, 32, hs), cos, sin)[0, 0, m]
        kn = apply_rope(k.expand(1, 1, 32, hs), cos, sin)[0, 0, n]
        return torch.dot(qm, kn)

    torch.testing.assert_close(score(5, 2), score(20, 17))
    torch.testing.assert_close(score(0, 0), torch.dot(q, k))  # position 0 is the identity rotation
    assert not torch.allclose(score(5, 2), score(5, 4))


def test_rmsnorm_matches_formula():
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(3, 5, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(norm(x.bfloat16()).float(), expected, atol=2e-2, rtol=2e-2)


def test_rmsnorm_fused_path_equals_the_formula_bit_for_bit(monkeypatch):
    # outside eager CPU training (CUDA, compiled) a float32 input runs torch.rms_norm; Hugging Face's formula must
    # give the same bits, forward and backward (the eager CPU node: tests/test_norm_rope.py)
    monkeypatch.setattr(lit_gpt.norm, "records_one_node", lambda *tensors: False)
    norm = RMSNorm(128)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(128))
    x = torch.randn(4, 16, 128, requires_grad=True)
    grad = torch.randn(4, 16, 128)
    fused = norm(x)
    fused_grads = torch.autograd.grad(fused, (x, norm.weight), grad)
    x32 = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + norm.eps)
    formula = norm.weight * x32
    formula_grads = torch.autograd.grad(formula, (x, norm.weight), grad)
    assert torch.equal(fused, formula)
    assert all(torch.equal(a, b) for a, b in zip(fused_grads, formula_grads))
    # a bfloat16 input (queries under autocast) keeps the formula: normalised in float32, rounded, then scaled
    assert norm(x.detach().bfloat16()).dtype == torch.float32


def test_swiglu_eager_silu_equals_the_written_out_form(tiny_config):
    from lit_gpt.model import MLP

    mlp = MLP(tiny_config)
    x = torch.randn(2, 5, tiny_config.n_embd)
    gate, up = mlp.gate_proj(x), mlp.up_proj(x)
    torch.testing.assert_close(mlp(x), mlp.down_proj(gate * torch.sigmoid(gate) * up), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "init, std_of",
    [
        ("gpt2", lambda fan_in, fan_out: 0.02),
        ("xavier", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
        ("kaiming", lambda fan_in, fan_out: 1 / math.sqrt(fan_in)),
    ],
)
def test_init_schemes(init, std_of):
    config = Config(vocab_size=64, n_layer=4, n_head=4, n_embd=256, init=init)
    model = GPT(config)
    block = model.layers[1]
    q = block.self_attn.q_proj.weight  # (256, 256)
    up = block.mlp.up_proj.weight  # (intermediate, 256)
    down = block.mlp.down_proj.weight  # (256, intermediate)
    F_ = config.intermediate_size
    assert q.std().item() == pytest.approx(std_of(256, 256), rel=0.05)
    assert up.std().item() == pytest.approx(std_of(256, F_), rel=0.05)
    assert down.std().item() == pytest.approx(std_of(F_, 256) / math.sqrt(2 * config.n_layer), rel=0.05)
    assert model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.05)  # embeddings: always N(0, 0.02)
    assert torch.equal(block.input_layernorm.weight, torch.ones(256))


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_config):
    plain = GPT(make(tiny_config, n_kv_head=2))
    checkpointed = GPT(make(tiny_config, n_kv_head=2, gradient_checkpointing=True))
    checkpointed.load_state_dict(plain.state_dict())
    idx = torch.randint(0, tiny_config.vocab_size, (3, tiny_config.block_size + 1))
    losses = []
    for model in (plain, checkpointed):
        loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7, msg=name)


class Adapted(torch.nn.Module):
    """A LoRA-shaped wrapper: the frozen linear plus a trainable low-rank update ``B @ A``, counting its calls."""

    def __init__(self, base: torch.nn.Linear, rank: int = 2) -> None:
        super().__init__()
        self.base, self.calls = base, 0
        self.A = torch.nn.Parameter(torch.randn(rank, base.in_features) * 0.1)
        self.B = torch.nn.Parameter(torch.randn(base.out_features, rank) * 0.1)
        self.out_features = base.out_features

    @property
    def weight(self):  # as peft's LoRA layers expose their base layer's weight and bias
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x):
        self.calls += 1
        return self.base(x) + x @ self.A.t() @ self.B.t()


def test_a_wrapped_projection_runs_its_own_forward_in_training(tiny_config):
    model = GPT(tiny_config).train()
    for block in model.layers:
        block.self_attn.q_proj = Adapted(block.self_attn.q_proj)
        block.mlp.up_proj = Adapted(block.mlp.up_proj)
    idx = torch.randint(0, tiny_config.vocab_size, (2, 8))
    model(idx).float().pow(2).mean().backward()
    for block in model.layers:
        for adapted in (block.self_attn.q_proj, block.mlp.up_proj):
            assert adapted.calls == 1  # not bypassed by fusing the concatenated weights
            assert adapted.B.grad is not None and adapted.B.grad.abs().sum() > 0


def test_fused_projections_equal_separate_ones(tiny_config):
    model = GPT(tiny_config).train()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 8))
    fused = model(idx)  # grad enabled: q/k/v as one matmul (gate/up too off the CPU or compiled)
    with torch.no_grad():
        separate = model(idx)  # each linear on its own
    torch.testing.assert_close(fused.detach(), separate, rtol=1e-5, atol=1e-6)
    mlp, x = model.layers[0].mlp, torch.randn(2, 8, tiny_config.n_embd)
    gate, up = _fused_linear(x, (mlp.gate_proj, mlp.up_proj))  # the GPU's gate/up path, run here
    torch.testing.assert_close(gate, mlp.gate_proj(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(up, mlp.up_proj(x), rtol=1e-5, atol=1e-6)
    assert gate.grad_fn is not None and gate.grad_fn is up.grad_fn  # one matmul, split


def test_gate_up_are_one_matmul_when_compiled_and_two_in_eager_cpu_steps(tiny_config, monkeypatch):
    fused_widths = []

    def spy(x, linears):
        fused_widths.append(len(linears))
        return _fused_linear(x, linears)

    monkeypatch.setattr(lit_gpt.model, "_fused_linear", spy)
    model, idx = GPT(tiny_config).train(), torch.randint(0, tiny_config.vocab_size, (2, 8))
    eager = model(idx)
    assert fused_widths == [3] * tiny_config.n_layer  # q/k/v only
    fused_widths.clear()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the code Inductor traces
    compiled_path = model(idx)
    assert fused_widths == [3, 2] * tiny_config.n_layer
    torch.testing.assert_close(compiled_path, eager, rtol=1e-5, atol=1e-6)


def test_zero_init_proj_starts_every_block_as_the_identity(tiny_config):
    model = GPT(make(tiny_config, zero_init_proj=True))
    for block in model.layers:
        assert not block.self_attn.o_proj.weight.any() and not block.mlp.down_proj.weight.any()
        assert block.self_attn.q_proj.weight.std() > 0
    idx = torch.randint(0, tiny_config.vocab_size, (2, 8))
    with torch.no_grad():  # no block changes the residual stream yet
        torch.testing.assert_close(model(idx), model.lm_head(model.norm(model.embed_tokens(idx))))


def test_logit_softcap_bounds_the_logits(tiny_config):
    model = GPT(make(tiny_config, logit_softcap=0.5))
    idx = torch.randint(0, tiny_config.vocab_size, (2, 8))
    with torch.no_grad():
        logits, raw = model(idx), model.lm_head(model.hidden_states(idx))
    assert logits.abs().max() < 0.5
    torch.testing.assert_close(logits, 0.5 * torch.tanh(raw / 0.5))


def test_qk_norm_gives_queries_and_keys_unit_rms_per_head(tiny_config):
    attention = GPT(make(tiny_config, qk_norm=True)).layers[0].self_attn
    seen = {}
    for name in ("q_norm", "k_norm"):
        getattr(attention, name).register_forward_hook(lambda mod, args, out, name=name: seen.update({name: out}))
    attention(100 * torch.randn(2, 8, tiny_config.n_embd), rope=None)  # large enough that eps does not count
    for out in seen.values():  # (B, T, heads, hs), norm weights at one
        torch.testing.assert_close(out.pow(2).mean(-1), torch.ones(out.shape[:-1]))


def test_value_residual_mixes_the_first_layers_values(tiny_config):
    model = GPT(make(tiny_config, n_layer=3, value_residual=True))
    assert not hasattr(model.layers[0].self_attn, "value_residual")
    assert all(block.self_attn.value_residual.weight.item() == 0.5 for block in model.layers[1:])
    idx = torch.randint(0, tiny_config.vocab_size, (2, 8))
    with torch.no_grad():
        before = model(idx)
        for block in model.layers[1:]:
            block.self_attn.value_residual.weight.fill_(1.0)  # every layer keeps its own values: a plain model
        plain = GPT(make(tiny_config, n_layer=3))
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if "value_residual" not in k})
        torch.testing.assert_close(model(idx), plain(idx))
    assert not torch.allclose(before, plain(idx))
