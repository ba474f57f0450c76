"""Forward + backward time of causal ``scaled_dot_product_attention`` on CPU, by dtype: why lit_gpt attends in float32
on CPU even under bf16 autocast (``lit_gpt.attention.attend``).

    python bench/attention_cpu.py [--batch 12 --heads 4 --seq 64 --head_size 32 --iters 200]

Rows: float32; bfloat16 (PyTorch's CPU flash-attention kernel in bf16); bfloat16 inputs upcast to float32 for
attention and the output cast back (what the model does on CPU). Prints microseconds per forward + backward.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def time_attention(shape: tuple[int, int, int, int], dtype: torch.dtype, upcast: bool, iters: int) -> float:
    """Mean seconds of one causal SDPA forward + backward on (B, nh, T, hs) inputs of ``dtype``."""
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(shape, dtype=dtype)

    def step() -> None:
        if upcast:
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True).to(dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y.backward(grad)

    for _ in range(10):
        step()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--head_size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()
    shape = (args.batch, args.heads, args.seq, args.head_size)
    print(f"causal SDPA forward + backward, (B, nh, T, hs) = {shape}, {torch.get_num_threads()} threads")
    for name, dtype, upcast in (
        ("float32", torch.float32, False),
        ("bfloat16", torch.bfloat16, False),
        ("bfloat16, attention in float32", torch.bfloat16, True),
    ):
        print(f"  {name:<32} {time_attention(shape, dtype, upcast, args.iters) * 1e6:8.0f} us")


if __name__ == "__main__":
    main()
