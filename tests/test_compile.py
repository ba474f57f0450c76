"""Regional compilation (one compiled graph per kind of block, reused by every layer; evaluation eager) and the choice
of whether a run compiles at all (``model.compile: auto``)."""

import copy
import functools

import pytest
import torch
from torch._dynamo.utils import counters  # dynamo's own graph count (no public equivalent)

from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.train import compile as regional
from lit_gpt.train.compile import COMPILE_COSTS, TrainingRun, choose_compile, compile_blocks, eager_blocks


@pytest.fixture
def traced(monkeypatch):
    """``torch.compile`` with dynamo's ``eager`` backend (the guards and graphs are dynamo's; no Inductor build), and
    dynamo's caches and counters reset; yields a function returning the number of graphs dynamo has built."""
    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(regional.torch, "compile", functools.partial(torch.compile, backend="eager"))
    yield lambda: counters["stats"]["unique_graphs"]
    torch._dynamo.reset()


def train_step(model: GPT, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(idx).float().logsumexp(-1).mean().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(("value_residual", "graphs"), [(False, 1), (True, 2)])
def test_every_layer_of_a_kind_reuses_one_graph(traced, value_residual, graphs):
    config = Config(vocab_size=64, block_size=16, n_layer=10, n_head=4, n_embd=32, value_residual=value_residual)
    model = GPT(config)
    compile_blocks(model)
    idx = torch.randint(0, 64, (2, 16))
    for _ in range(3):
        train_step(model, idx)
    assert traced() == graphs == regional.block_kinds(config)  # 10 layers (more than dynamo's 8 recompiles)


def test_compiled_blocks_train_as_the_plain_model_and_evaluate_eagerly(traced):
    config = Config(vocab_size=64, block_size=16, n_layer=3, n_head=4, n_embd=32, value_residual=True)
    plain = GPT(config)
    model = copy.deepcopy(plain)
    compile_blocks(model)
    idx = torch.randint(0, 64, (2, 16))
    expected, got = train_step(plain, idx), train_step(model, idx)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    built = traced()
    model.eval()
    with torch.inference_mode():  # a partial batch in eval mode, as validation runs: no further graph
        torch.testing.assert_close(model(idx[:1, :9]), plain.eval()(idx[:1, :9]))
    model.train()
    with torch.no_grad():
        model(idx)
    assert traced() == built
    assert model.state_dict().keys() == plain.state_dict().keys()


def test_activation_checkpointing_recomputes_through_the_compiled_blocks(traced):
    config = Config(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32, gradient_checkpointing=True)
    plain = GPT(config)
    model = copy.deepcopy(plain)
    compile_blocks(model)
    idx = torch.randint(0, 64, (2, 16))
    expected, got = train_step(plain, idx), train_step(model, idx)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert traced() == 1


def test_a_copy_routes_through_its_own_blocks_and_eager_blocks_undoes_the_routing(traced):
    model = GPT(Config(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32))
    compile_blocks(model)
    twin = copy.deepcopy(model)
    assert all(block.forward.block is block for block in twin.layers)
    eager_blocks(model)
    assert all("forward" not in vars(block) for block in model.layers)
    train_step(model, torch.randint(0, 64, (2, 16)))
    assert traced() == 0


def shakespeare_char(value_residual: bool = False) -> Config:
    return Config(vocab_size=66, block_size=64, n_layer=4, n_head=4, n_embd=128, value_residual=value_residual)


def test_short_runs_stay_eager_and_long_ones_compile():
    cost = COMPILE_COSTS["bf16"]
    tokens = 12 * 64
    per_step = cost.saving_per_element * tokens * 128 * 4
    break_even = cost.graph_seconds / per_step
    short, reason = choose_compile(TrainingRun(shakespeare_char(), tokens, int(break_even * 0.9)), "bf16-mixed")
    assert not short and reason.startswith("compile off: ") and f"from about {int(break_even) + 1} steps" in reason
    long, reason = choose_compile(TrainingRun(shakespeare_char(), tokens, int(break_even * 1.1) + 1), "bf16-mixed")
    assert long and reason.startswith("compile on: ") and "compiling 1 block graph costs" in reason
    # value residuals make two kinds of block: twice the compilation, so the same length no longer repays it
    twice, reason = choose_compile(TrainingRun(shakespeare_char(True), tokens, int(break_even * 1.1) + 1), "bf16-mixed")
    assert not twice and "compiling 2 block graphs" in reason
    endless, reason = choose_compile(TrainingRun(shakespeare_char(), tokens, None), "32-true")
    assert endless and "no step limit" in reason


def test_the_float32_costs_apply_outside_bf16():
    run = TrainingRun(shakespeare_char(), 12 * 64, 1000)
    bf16, fp32 = COMPILE_COSTS["bf16"], COMPILE_COSTS["32"]
    saving = {name: 1000 * c.saving_per_element * 12 * 64 * 128 * 4 for name, c in (("bf16", bf16), ("32", fp32))}
    for precision, name in (("bf16-mixed", "bf16"), ("32-true", "32"), ("16-mixed", "32")):
        _, reason = choose_compile(run, precision)
        assert f"save about {saving[name]:.0f} s" in reason
