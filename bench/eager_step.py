"""The eager training step of the bare model against nanoGPT's, interleaved in one process.

    python bench/eager_step.py --nanogpt PATH/TO/nanoGPT [--steps 300] [--warmup 20]

At the ``shakespeare-char`` shape (4 layers, 4 heads, n_embd 128, block 64, batch 12, 65 characters), one step is
forward, cross-entropy, backward, gradient clipping at 1.0 and AdamW, without Lightning, data loading or
compilation. Contenders: lit_gpt's default model (QK-norm, zero-initialised projections) in float32 and, where
bfloat16 is native (``bf16-mixed`` is chosen there), under bfloat16 autocast, and nanoGPT's ``model.GPT`` (from a
karpathy/nanoGPT checkout, imported, never copied) in float32, its CPU recipe's precision. Single steps alternate
A, B, C, A, B, C ... so that the machine's drift hits all alike; prints each one's median milliseconds and the
ratio to nanoGPT.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.train.hardware import cpu_class, cpu_has_native_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nanogpt", required=True, help="a karpathy/nanoGPT checkout")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, args.nanogpt)
    from model import GPT as NanoGPT  # nanoGPT's model.py
    from model import GPTConfig

    torch.manual_seed(1337)
    torch.use_deterministic_algorithms(True)  # as lit-gpt fit runs on CPU, without the NaN fill of new tensors
    torch.utils.deterministic.fill_uninitialized_memory = False
    x = torch.randint(0, 65, (12, 64))
    ours = GPT(Config(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, qk_norm=True, zero_init_proj=True))
    nano = NanoGPT(GPTConfig(block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False))

    def stepper(model: torch.nn.Module, loss_of, bf16: bool):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step() -> float:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                loss = loss_of(model)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        return step

    def lit_loss(model):
        return F.cross_entropy(model(x).float().view(-1, 65), x.view(-1))

    contenders = {"lit_gpt, float32": stepper(ours, lit_loss, bf16=False)}
    if cpu_has_native_bf16()[0]:  # elsewhere bf16-mixed is never chosen, and emulated bfloat16 is ~10x slower
        contenders["lit_gpt, bf16 autocast"] = stepper(ours, lit_loss, bf16=True)
    contenders["nanoGPT, float32"] = stepper(nano, lambda model: model(x, x)[1], bf16=False)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(args.warmup + args.steps):
        for name, step in contenders.items():
            seconds = step()
            if i >= args.warmup:
                times[name].append(seconds)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"CPU {cpu_class()}, {torch.get_num_threads()} threads; median of {args.steps} interleaved steps\n")
    print("| contender | ms per step | vs nanoGPT |\n|---|---:|---:|")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.1f} | {medians['nanoGPT, float32'] / ms:.2f}x |")


if __name__ == "__main__":
    main()
