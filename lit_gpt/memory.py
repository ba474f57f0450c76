"""Training memory per device, estimated from the config: weights, gradients, AdamW state and activations, for one
device and for the ways of spreading a model over several (standard library only).

The model state (P parameters, Rajbhandari et al. 2020, "ZeRO", section 3): float32 master weights (4P bytes) and
gradients (4P) and AdamW's two moments (8P) under ``32-true`` and the ``*-mixed`` precisions, 2-byte ones under
``bf16-true``/``16-true``. How each strategy divides it among N devices:

============  ========================  =========================  ===========================================
strategy      weights                   gradients                  optimizer state
============  ========================  =========================  ===========================================
single, ddp   whole                     whole (ddp: + a bucket      whole
                                        copy for the all-reduce)
zero1         whole                     whole                      / N
zero2         whole                     / N                        / N
fsdp, zero3   / N (+ the largest unit,   / N (+ the same unit)        / N
              a block or the root with
              the embeddings, whole
              while it runs)
tp            blocks / N, embeddings,   as weights                 as weights
              norms and head whole
============  ========================  =========================  ===========================================

Activations saved for the backward pass, per token and per block, counted on lit_gpt's model (``torch.autograd``'s
saved tensors, ``bench/memory_estimate.py``): about ``13 * n_embd + 5 * intermediate_size`` values (norm inputs and
outputs, q/k/v, attention output, the SwiGLU's gate, up, sigmoid and products), in float32 under ``32-true`` and
mostly 2 bytes under mixed precision; the output layer adds the float32 logits, their log-softmax (saved by the loss)
and, at the start of the backward pass, the two gradients of that size: ``4 * T * V * 4`` bytes per sequence (often
the largest term for a small model with a large vocabulary). The chunked loss (``lit_gpt.train.loss``, a chunk of
``loss_chunk_size`` tokens) keeps none of them: the four exist for one chunk at a time, while its backward pass
recomputes its logits (``4 * chunk * V * 4`` bytes). Gradient checkpointing keeps only each block's input
(``n_embd`` values per token) plus one block's activations while it is recomputed. Tensor parallelism divides the
attention and MLP parts by N; data parallelism divides the batch, which ``batch_size`` (per device) already is.

The estimate leaves out the framework's own memory (the process's libraries, the CUDA context), allocator caching
and fragmentation, and temporaries inside single kernels; ``bench/memory_estimate.py`` compares it with measured
peaks (docs/benchmarks.md, which also gives the size of what is left out).
"""

from __future__ import annotations

from dataclasses import dataclass

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError

STRATEGIES = ("single", "ddp", "zero1", "zero2", "zero3", "fsdp", "tp")
"""Strategy names ``estimate_memory`` knows: ``fsdp`` is FSDP's full sharding (= ZeRO-3), ``tp`` tensor parallelism."""


@dataclass
class MemoryEstimate:
    """Bytes per device of each part, and their ``total``."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def activation_bytes(
    config: Config,
    batch_size: int,
    block_size: int,
    precision: str = "32-true",
    gradient_checkpointing: bool = False,
    tensor_parallel: int = 1,
    loss_chunk_size: int | None = None,
) -> int:
    """Bytes of activations saved for the backward pass on one device (see the module docstring); with
    ``loss_chunk_size``, the output layer's for one chunk of that many tokens (of the batch's B x T)."""
    C, F, L = config.n_embd, config.intermediate_size, config.n_layer
    tokens = batch_size * block_size
    itemsize = 4 if precision in ("32-true", "32", "64-true") else 2
    per_block = tokens * (9 * C + (4 * C + 5 * F) / tensor_parallel) * itemsize
    if gradient_checkpointing:
        blocks = L * tokens * C * itemsize + per_block  # the kept inputs, one block recomputed
    else:
        blocks = L * per_block
    # the float32 logits, their log-softmax (saved by the loss), and in the backward two gradients of that size: for
    # the whole batch, or for one chunk of the chunked loss
    logit_rows = tokens if loss_chunk_size is None else min(loss_chunk_size, tokens)
    logits = 4 * logit_rows * config.padded_vocab_size * 4
    return int(blocks + logits)


def estimate_memory(
    config: Config,
    strategy: str = "single",
    devices: int = 1,
    batch_size: int = 8,
    block_size: int | None = None,
    precision: str = "32-true",
    gradient_checkpointing: bool = False,
    loss_chunk_size: int | None = None,
) -> MemoryEstimate:
    """Estimated training memory per device of ``GPT(config)`` with AdamW (see the module docstring).

    Args:
        strategy: one of ``STRATEGIES``.
        devices: devices the strategy spreads the model (and, for data parallelism, the data) over.
        batch_size: sequences per device per micro-batch.
        block_size: tokens per sequence; default ``config.block_size``.
        precision: Lightning's precision name (``32-true``, ``bf16-mixed``, ``bf16-true`` ...).
        gradient_checkpointing: each block's activations recomputed in the backward pass (``Config``'s field).
        loss_chunk_size: the chunked loss's tokens per chunk (``model.loss_chunk_size``), or None.
    Raises:
        ConfigError: for an unknown strategy or fewer than one device.
    """
    if strategy not in STRATEGIES:
        choices = ", ".join(STRATEGIES)
        raise ConfigError(f"unknown strategy {strategy!r} for the memory estimate; choose one of {choices}")
    if devices < 1:
        raise ConfigError(f"devices must be >= 1, got {devices}")
    n = devices if strategy != "single" else 1
    P, block = config.num_params(), config.block_params()
    state_bytes = 2 if precision in ("bf16-true", "16-true") else 4
    weights = gradients = P * state_bytes
    optimizer = 2 * P * state_bytes
    if strategy == "ddp" and n > 1:
        gradients *= 2  # DDP's all-reduce buckets hold a second copy
    elif strategy == "zero1":
        optimizer //= n
    elif strategy == "zero2":
        gradients, optimizer = gradients // n, optimizer // n
    elif strategy in ("zero3", "fsdp"):
        # the largest unit's whole weights and gradients while it runs: a block, or the root (embeddings, head)
        gathered = max(block, P - config.n_layer * block) * state_bytes
        weights, gradients, optimizer = weights // n + gathered, gradients // n + gathered, optimizer // n
    elif strategy == "tp":
        shared = P - config.n_layer * block  # embeddings, final norm (and an untied head) stay whole
        weights = gradients = (shared + config.n_layer * block // n) * state_bytes
        optimizer = 2 * weights
    tensor_parallel = n if strategy == "tp" else 1
    block_size = block_size or config.block_size
    activations = activation_bytes(
        config, batch_size, block_size, precision, gradient_checkpointing, tensor_parallel, loss_chunk_size
    )
    return MemoryEstimate(weights, gradients, optimizer, activations)
