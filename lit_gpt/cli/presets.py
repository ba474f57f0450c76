"""``lit-gpt presets [--vocab_size N] [--memory --devices N --strategy S --batch_size B ...]``: each model preset's
shape and exact parameter count (``lit_gpt.config``), and with ``--memory`` the estimated training memory per device
(``lit_gpt.memory``). Standard library only: it imports neither torch nor Lightning."""

from __future__ import annotations

from lit_gpt.cli.args import ArgumentParser
from lit_gpt.config import PRESETS, Config
from lit_gpt.errors import ConfigError
from lit_gpt.memory import STRATEGIES, estimate_memory


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lit-gpt presets", description=__doc__.split("\n")[0])
    parser.add_argument("--vocab_size", type=int, default=50257, help="vocabulary size (default: GPT-2's 50257)")
    memory = parser.add_argument_group("memory estimate (--memory)")
    memory.add_argument("--memory", action="store_true", help="print the estimated training memory per device")
    memory.add_argument("--devices", type=int, default=1, help="devices the strategy uses (default 1)")
    memory.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="single",
        help="single, ddp, zero1, zero2, zero3, fsdp (= zero3) or tp (default single)",
    )
    memory.add_argument("--batch_size", type=int, default=8, help="sequences per device per step (default 8)")
    memory.add_argument("--block_size", type=int, default=None, help="tokens per sequence (default: the preset's)")
    memory.add_argument("--precision", default="bf16-mixed", help="Lightning precision (default bf16-mixed)")
    memory.add_argument("--gradient_checkpointing", action="store_true", help="recompute each block's activations")
    memory.add_argument(
        "--loss_chunk_size",
        type=int,
        default=None,
        help="tokens per chunk of the chunked loss (model.loss_chunk_size; default: the whole logits at once)",
    )
    return parser


def main(args: list[str]) -> None:
    """Print the preset table for ``args`` (``["presets", flags...]``).

    Raises:
        ConfigError: for a bad flag, vocabulary size, device count or strategy.
    """
    opts = _parser().parse_args(args[1:])
    if opts.loss_chunk_size is not None and opts.loss_chunk_size < 1:
        raise ConfigError(f"--loss_chunk_size must be >= 1, got {opts.loss_chunk_size}")
    header = f"{'preset':<12}{'n_embd':>8}{'n_head':>8}{'n_kv':>6}{'n_layer':>8}{'block':>7}  {'parameters':>15}  style"
    if opts.memory:
        header += f"  {'weights':>10}{'grads':>10}{'AdamW':>10}{'activ.':>10}{'total':>11}"
        print(
            f"memory per device: {opts.strategy} on {opts.devices} device(s), batch {opts.batch_size}, "
            f"{opts.precision}{', gradient checkpointing' if opts.gradient_checkpointing else ''}"
            f"{f', loss in chunks of {opts.loss_chunk_size} tokens' if opts.loss_chunk_size else ''}, AdamW; "
            "framework memory (libraries, CUDA context) not included (lit_gpt/memory.py)"
        )
    print(header)
    for name in PRESETS:
        config = Config.from_name(name, vocab_size=opts.vocab_size)
        style = "gpt-2" if config.position_embedding == "learned" else "llama"
        line = (
            f"{name:<12}{config.n_embd:>8}{config.n_head:>8}{config.n_kv_head:>6}{config.n_layer:>8}"
            f"{config.block_size:>7}  {config.num_params():>15,}  {style:<5}"
        )
        if opts.memory:
            estimate = estimate_memory(
                config,
                opts.strategy,
                opts.devices,
                opts.batch_size,
                opts.block_size,
                opts.precision,
                opts.gradient_checkpointing,
                opts.loss_chunk_size,
            )
            parts = (estimate.weights, estimate.gradients, estimate.optimizer, estimate.activations)
            line += "  " + "".join(_gib(v, 10) for v in parts) + _gib(estimate.total, 11)
        print(line)


def _gib(n_bytes: int, width: int) -> str:
    return f"{n_bytes / 2**30:>{width - 4}.2f} GiB"  # right-aligned in ``width`` characters
