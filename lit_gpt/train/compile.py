"""``torch.compile`` for training, by region: each transformer block compiled once per kind and reused by every layer.

Regional compilation (PyTorch's recipe "Reducing torch.compile cold start compilation time with regional
compilation"): ``compile_blocks`` routes each block's training forward through one ``torch.compile`` of
``Block.forward``. Dynamo keeps its compiled graphs on the function's code object and guards them on what the graph
read (the block's module structure, training mode, grad mode, input shapes and dtypes), not on which layer called
it, so every layer of the same kind reuses one graph: one Inductor graph (forward and backward) per kind of block
instead of one for the whole model. With value residuals the first layer is a kind of its own (it has no mixing
weight and no first-layer values to mix in): two graphs. The rest of the model (embedding, final norm, head) and the
loss run eagerly; they are a few small kernels per step.

The compiled forward runs only in training mode with gradients on. Evaluation, text samples and generation run the
plain forward: their eval mode, inference tensors and changing shapes (a partial last validation batch, a growing
KV cache) would each compile more graphs. Checkpoints are unchanged: the routing is a ``forward`` attribute of each
block (``TrainingForward``), not a wrapper module, so no ``_orig_mod.`` names and no second copy of the weights.
Activation checkpointing recomputes through the same compiled forward.

``choose_compile`` decides whether a run should compile at all (``model.compile: auto``): it weighs the
compilation's expected seconds (per block graph, on this device class, with an empty Inductor cache) against the
run's expected saving (per step, proportional to the blocks' activations, times the run's optimizer steps), and
stays eager for runs too short to repay it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lit_gpt.config import Config
from lit_gpt.model import GPT, Block


class TrainingForward:
    """A block's ``forward``: ``compiled(block, ...)`` in training mode with gradients on, ``Block.forward``
    otherwise. An ordinary object (not a closure), so ``copy.deepcopy`` of the model copies it with its block."""

    def __init__(self, block: nn.Module, compiled: Callable) -> None:
        self.block, self.compiled = block, compiled

    def __call__(self, *args, **kwargs):
        if self.block.training and torch.is_grad_enabled():
            return self.compiled(self.block, *args, **kwargs)
        return type(self.block).forward(self.block, *args, **kwargs)


def compile_blocks(model: GPT, mode: str | None = None) -> Callable:
    """Route the training forward of every block of ``model`` through one ``torch.compile(Block.forward)``
    (static shapes, Inductor ``mode``); returns that compiled function. Compilation happens at the first training
    forward; calling this again replaces the routing."""
    compiled = torch.compile(Block.forward, dynamic=False, mode=mode)
    for block in model.layers:
        block.forward = TrainingForward(block, compiled)
    return compiled


def eager_blocks(model: GPT) -> None:
    """Undo ``compile_blocks``: every block runs its plain ``Block.forward`` again."""
    for block in model.layers:
        block.__dict__.pop("forward", None)


def block_kinds(config: Config) -> int:
    """The number of distinct compiled graphs of ``GPT(config)``'s blocks: 2 with value residuals (the first layer
    differs from the others) and more than one layer, else 1."""
    return 2 if config.value_residual and config.n_layer > 1 else 1


@dataclass(frozen=True)
class CompileCost:
    """What compiling costs and saves on one device class (``COMPILE_COSTS``; docs/benchmarks.md has the runs).

    graph_seconds: seconds to compile one block graph (forward and backward) with an empty Inductor cache.
    saving_per_element: seconds saved per step per element of the blocks' activations (tokens x n_embd x
        n_layer per optimizer step): Inductor's gain is fusing elementwise work (norms, RoPE, SwiGLU, residuals),
        which scales with the activations, not with the matmul FLOPs.
    """

    graph_seconds: float
    saving_per_element: float


COMPILE_COSTS = {
    "bf16": CompileCost(graph_seconds=24.0, saving_per_element=2.1e-8),
    "32": CompileCost(graph_seconds=23.0, saving_per_element=2.6e-8),
}
"""``CompileCost`` on a 2-core CPU training in ``bf16-mixed`` (native bfloat16) and in ``32-true`` (an AVX2-class
CPU), both from ``bench/compile_cost.py``'s whole processes (docs/benchmarks.md, "What compiling costs"): the
saving that whole runs realize, which is less than the steady state of ``bench/train_throughput.py`` (a compiled
run's step time varies from run to run there). A cold compilation includes Inductor's one-time probe of the CPU's
vector instruction sets (test programs built with the C++ compiler) besides the block graph's kernels. A faster CPU
compiles and trains faster alike, so the break-even step count moves less than either figure."""


@dataclass(frozen=True)
class TrainingRun:
    """What ``choose_compile`` weighs.

    config: the model's ``Config``, or any object with its ``n_layer``, ``n_embd`` and ``value_residual`` (the
        parsed ``model.config`` section).
    tokens_per_batch: tokens in one forward and backward pass on one device (batch size x block size).
    batches: the forward and backward passes the run makes (optimizer steps x gradient accumulation); None for a run
        without a step limit.
    """

    config: object
    tokens_per_batch: int
    batches: int | None


def choose_compile(run: TrainingRun, precision: str) -> tuple[bool, str]:
    """Whether a CPU training ``run`` in ``precision`` repays compiling its blocks, and why (a clause for the choice
    line).

    Compiles when the expected saving, ``batches x saving_per_element x tokens_per_batch x n_embd x n_layer``,
    exceeds the expected cost, ``block_kinds(config) x graph_seconds``, with ``COMPILE_COSTS["bf16"]`` for a
    ``bf16...`` precision and ``COMPILE_COSTS["32"]`` otherwise. The cost assumes an empty Inductor cache (a warm one
    costs less), so runs near the break-even stay eager. A run without a step limit compiles.
    """
    if run.batches is None:
        return True, "compile on: the run has no step limit, so compiling its blocks repays itself"
    cost = COMPILE_COSTS["bf16" if str(precision).startswith("bf16") else "32"]
    kinds = block_kinds(run.config)
    spend = kinds * cost.graph_seconds
    per_batch = cost.saving_per_element * run.tokens_per_batch * run.config.n_embd * run.config.n_layer
    save = run.batches * per_batch
    what = f"compiling {kinds} block graph{'s' if kinds > 1 else ''} costs about {spend:.0f} s"
    if save > spend:
        return True, f"compile on: {run.batches} steps save about {save:.0f} s, {what}"
    return False, (
        f"compile off: {run.batches} steps would save about {save:.0f} s and {what} (it repays itself from about "
        f"{math.ceil(spend / per_batch)} steps; set model.compile true to compile anyway)"
    )
