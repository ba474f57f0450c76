"""``lit_gpt.norm_rope.norm_rope``, the one-node RMSNorm / RoPE / QK-norm + RoPE of eager CPU training: equal to
the composed ops it replaces (``RMSNorm``, ``apply_rope``), forward and backward, in float32 and with bfloat16
autocast's dtypes, for shared and per-row positions; its hand-written backward against numerical gradients; and the
model using it only where autograd records outside ``torch.compile``."""

import pytest
import torch
import torch.nn.functional as F

import lit_gpt.model
import lit_gpt.norm
from lit_gpt.config import Config
from lit_gpt.model import GPT, RMSNorm
from lit_gpt.norm_rope import norm_rope
from lit_gpt.rope import apply_rope, rope_cache

B, H, T, HS = 2, 3, 7, 8


def tables(per_row: bool, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = rope_cache(16, HS, 10000.0)
    if not per_row:
        return cos[:T].to(dtype), sin[:T].to(dtype)
    positions = torch.stack([torch.arange(T), torch.arange(T) + 5])  # (B, T): rows at different offsets
    return cos[positions].unsqueeze(1).to(dtype), sin[positions].unsqueeze(1).to(dtype)  # (B, 1, T, hs)


MODES = {"qk-norm+rope": (True, True), "rope-only": (False, True), "norm-only": (True, False)}


CASES = [(mode, per_row) for mode in MODES for per_row in (False, True) if MODES[mode][1] or not per_row]


@pytest.mark.parametrize("mode, per_row", CASES, ids=[f"{m}-{'per-row' if p else 'shared'}" for m, p in CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_equals_the_composed_ops_forward_and_backward(mode, per_row, dtype, monkeypatch):
    with_norm, with_rope = MODES[mode]
    torch.manual_seed(0)
    norm = RMSNorm(HS) if with_norm else None
    if norm is not None:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)  # not all ones, so the weight's gradient and folding are exercised
    cos, sin = tables(per_row) if with_rope else (None, None)
    # the (B, T, H, hs) projection output seen as (B, H, T, hs), as the model passes it
    x = torch.randn(B, T, H, HS).to(dtype).transpose(1, 2).requires_grad_()
    grad = torch.randn(B, H, T, HS)

    ours = norm_rope(x, None if norm is None else norm.weight, cos, sin, 1e-5 if norm is None else norm.eps)
    monkeypatch.setattr(lit_gpt.norm, "records_one_node", lambda *tensors: False)  # RMSNorm's composed ops
    reference = x if norm is None else norm(x)
    if with_rope:
        reference = apply_rope(reference, cos, sin)
    assert ours.dtype == reference.dtype and ours.shape == reference.shape
    if mode == "norm-only" and dtype == torch.float32:  # the same ops as torch.rms_norm's: the same bits
        assert torch.equal(ours, reference)
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if reference.dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(ours, reference, **tolerance)

    inputs = [x] if norm is None else [x, norm.weight]
    ours_grads = torch.autograd.grad(ours, inputs, grad.to(ours.dtype))
    reference_grads = torch.autograd.grad(reference, inputs, grad.to(reference.dtype))
    for a, b in zip(ours_grads, reference_grads):
        assert a.dtype == b.dtype
        if a.dtype == torch.float32:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        else:  # both computed in float32 and rounded to bfloat16 at the end: one rounding step apart at most
            torch.testing.assert_close(a, b, atol=2**-7 * b.abs().max().item(), rtol=2**-7)


@pytest.mark.parametrize("mode", MODES)
def test_backward_matches_numerical_gradients(mode):
    with_norm, with_rope = MODES[mode]
    torch.manual_seed(0)
    cos, sin = tables(per_row=True, dtype=torch.float64) if with_rope else (None, None)
    x = torch.randn(B, H, T, HS, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(HS, dtype=torch.float64).add(0.5).requires_grad_() if with_norm else None
    inputs = (x, weight, cos, sin, 1e-5)
    assert torch.autograd.gradcheck(norm_rope, inputs)


def test_the_model_uses_it_in_eager_training_only(monkeypatch):
    calls, norm_calls = [], []
    original = lit_gpt.model.norm_rope
    monkeypatch.setattr(lit_gpt.model, "norm_rope", lambda *args: calls.append(args) or original(*args))
    monkeypatch.setattr(lit_gpt.norm, "norm_rope", lambda *args: norm_calls.append(args) or original(*args))
    config = Config(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, qk_norm=True)
    model = GPT(config)
    idx = torch.randint(0, 50, (2, 16))
    loss = F.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
    assert len(calls) == 2 * config.n_layer  # queries and keys of each layer
    assert len(norm_calls) == 2 * config.n_layer + 1  # each block's two norms and the final one
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())

    calls.clear(), norm_calls.clear()
    with torch.no_grad():
        model(idx)
    assert not calls and not norm_calls  # no backward to save: the composed ops


def test_model_gradients_equal_the_composed_path(monkeypatch):
    """A training step's loss and every gradient, QK-norm, GQA and value residuals on, against the model with the
    composed ops (``records_one_node`` off)."""
    config = Config(
        vocab_size=50, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, qk_norm=True, value_residual=True
    )
    torch.manual_seed(0)
    model = GPT(config)
    idx = torch.randint(0, 50, (2, 16))

    def loss_and_grads():
        model.zero_grad()
        loss = F.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    loss, grads = loss_and_grads()
    for module in (lit_gpt.model, lit_gpt.norm):
        monkeypatch.setattr(module, "records_one_node", lambda *tensors: False)
    reference_loss, reference_grads = loss_and_grads()
    torch.testing.assert_close(loss, reference_loss, atol=1e-6, rtol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_nothing_to_compute_is_refused():
    with pytest.raises(ValueError, match="needs a norm weight, RoPE tables"):
        norm_rope(torch.randn(2, 4), None, None, None, 1e-5)
