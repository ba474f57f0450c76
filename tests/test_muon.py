"""lit_gpt.train.muon.Muon against torch.optim.Muon: the same updates (bfloat16: to the kernels' accumulation order;
float32: to bfloat16's precision), interchangeable state dicts, and the dtype chosen from the machine."""

import copy

import pytest
import torch

from lit_gpt.train import hardware, optim
from lit_gpt.train.muon import Muon, newton_schulz

SHAPES = [(32, 32), (32, 32), (96, 32), (32, 96), (96, 32), (48, 16)]
"""Square, tall and wide matrices: (96, 32) and (32, 96) share a batch (a tall one is orthogonalised transposed)."""


def parameters() -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(0.1 * torch.randn(shape, generator=generator)) for shape in SHAPES]


def run(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], steps: int, seed: int = 1) -> list:
    """``steps`` steps with fixed random gradients; returns each step's updates (after - before), per parameter."""
    generator = torch.Generator().manual_seed(seed)
    updates = []
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator).to(p.dtype)
        before = [p.detach().clone() for p in params]
        optimizer.step()
        updates.append([p.detach() - b for p, b in zip(params, before)])
    return updates


@pytest.mark.parametrize("adjust_lr_fn", ["match_rms_adamw", None])
@pytest.mark.parametrize("nesterov", [True, False])
def test_bfloat16_updates_equal_torch_muons(adjust_lr_fn, nesterov):
    """In bfloat16 (torch's dtype) the batched iteration is torch's, matrix by matrix. The stated tolerance: each
    update element within 1% of the step's largest update element, the room a batched matmul's accumulation order
    may take on other kernels (on the CPUs measured here the updates are equal bit for bit)."""
    settings = dict(lr=1e-2, weight_decay=0.1, adjust_lr_fn=adjust_lr_fn, nesterov=nesterov)
    theirs, ours = parameters(), parameters()
    expected = run(torch.optim.Muon(theirs, **settings), theirs, steps=4)
    got = run(Muon(ours, **settings, ns_dtype=torch.bfloat16), ours, steps=4)
    for step_expected, step_got in zip(expected, got):
        largest = max(u.abs().max().item() for u in step_expected)
        for e, g in zip(step_expected, step_got):
            torch.testing.assert_close(g, e, rtol=0, atol=0.01 * largest)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_float32_updates_are_torch_muons_without_bfloat16_rounding():
    """In float32 each update is within 5% of the step's largest update element of torch's bfloat16 one (5
    iterations of bfloat16 rounding, relative 2**-8 each, are what separates them), and within 1e-5 of the same
    iteration in float64."""
    settings = dict(lr=1e-2, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    theirs, ours = parameters(), parameters()
    exact = [torch.nn.Parameter(p.detach().double()) for p in parameters()]
    expected = run(torch.optim.Muon(theirs, **settings), theirs, steps=1)[0]
    got = run(Muon(ours, **settings, ns_dtype=torch.float32), ours, steps=1)[0]
    reference = run(Muon(exact, **settings, ns_dtype=torch.float64), exact, steps=1)[0]
    largest = max(u.abs().max().item() for u in expected)
    for e, g, r in zip(expected, got, reference):
        torch.testing.assert_close(g, e, rtol=0, atol=0.05 * largest)
        torch.testing.assert_close(g.double(), r, rtol=0, atol=1e-5 * largest)


def test_newton_schulz_orthogonalises_each_matrix_of_a_batch():
    x = torch.randn(3, 16, 48, dtype=torch.float64)
    ortho = newton_schulz(x, (3.4445, -4.7750, 2.0315), steps=5, eps=1e-7, dtype=torch.float64)
    singular = torch.linalg.svdvals(ortho)  # (3, 16): Keller Jordan's quintic leaves them in about (0.5, 1.5)
    assert singular.min() > 0.5 and singular.max() < 1.5
    for i in range(3):  # each matrix on its own, as torch.optim.Muon runs it
        alone = newton_schulz(x[i : i + 1], (3.4445, -4.7750, 2.0315), steps=5, eps=1e-7, dtype=torch.float64)
        torch.testing.assert_close(alone[0], ortho[i], rtol=1e-12, atol=1e-12)


def test_state_dicts_load_into_each_other_and_resume_bitwise():
    settings = dict(lr=1e-2, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    params = parameters()
    ours = Muon(params, **settings)
    run(ours, params, steps=2)
    saved = copy.deepcopy(ours.state_dict())
    assert set(saved["param_groups"][0]) == set(torch.optim.Muon(parameters()).state_dict()["param_groups"][0])
    torch_twin = torch.optim.Muon(parameters(), **settings)
    torch_twin.load_state_dict(saved)  # ours -> torch's
    back_params = parameters()
    back = Muon(back_params, **settings)
    back.load_state_dict(copy.deepcopy(torch_twin.state_dict()))  # torch's -> ours
    for p, q in zip(back_params, params):
        p.data.copy_(q.data)
    continued, resumed = run(ours, params, steps=3, seed=2), run(back, back_params, steps=3, seed=2)
    for step_a, step_b in zip(continued, resumed):
        for a, b in zip(step_a, step_b):
            assert torch.equal(a, b)


def test_bad_settings_raise_as_torchs_do():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        Muon(parameters(), adjust_lr_fn="other")
    with pytest.raises(ValueError, match=">= 0"):
        Muon(parameters(), lr=-1.0)


@pytest.mark.parametrize("native", [True, False])
def test_the_iteration_dtype_follows_the_machine(tiny_config, monkeypatch, native):
    from lit_gpt.model import GPT

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: (native, "mocked"))
    settings = dict(learning_rate=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    optimizer = optim.build_optimizer(GPT(tiny_config), "muon", **settings)
    assert optimizer.muon.ns_dtype == (torch.bfloat16 if native else torch.float32)
