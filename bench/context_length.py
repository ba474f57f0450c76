"""Training memory and speed against context length: a 124M model (the ``llama-124m`` preset, GPT-2's vocabulary) at
batch 1 and T = 512 ... 8192, plain / with gradient checkpointing / with checkpointing and the chunked loss, beside
nanoGPT's GPT of the same size (12 layers, 12 heads, n_embd 768, no bias) at the same T.

    git --git-dir=PATH/TO/nanoGPT/.git archive HEAD | tar -x -C /tmp/nanoGPT   # any checkout of karpathy/nanoGPT
    python bench/context_length.py --nanogpt /tmp/nanoGPT [--lengths 512 1024 2048 4096 8192] [--steps 2]
        [--max_gb 20] [--loss_chunk_size 1024] [--plot docs/context_length.png] [--contenders ...]

Each measurement runs in a fresh process (this script with ``--child``), so its peak resident set is its own: ``peak
RSS`` is the process's (``ru_maxrss``: weights, AdamW state, activations, PyTorch itself). A step is a forward pass,
the loss, the backward pass and an AdamW step (fused) on random tokens, in float32 on the CPU. The lit_gpt contenders
with checkpointing pin glibc's mmap threshold first, as ``lit-gpt fit`` does on a CPU for a run with checkpointing or
a chunked loss (``lit_gpt.train.host_memory``); all lit_gpt contenders compute the loss with
``lit_gpt.train.loss.batch_loss`` (LitGPT's); nanoGPT runs its own ``forward(idx, targets)`` with glibc's defaults
(set ``MALLOC_MMAP_THRESHOLD_`` to run every contender with one fixed threshold). The first step is not timed (AdamW
creates its state there); tokens/s is T x ``--steps`` over the time of the next ``--steps``. The parent watches each
child's resident set and stops it past ``--max_gb`` (the table then says it did not fit), and a contender stops at the
first T that did not fit. ``estimate`` is ``lit_gpt.memory.estimate_memory``'s total for the same setting (``lit-gpt
presets --memory``), which leaves PyTorch's own memory out.

Prints the machine (CPU class, threads), one markdown row per (contender, T), the longest T that fitted per contender,
and writes a PNG of peak RSS and tokens/s against T for every contender.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CONTENDERS = ("plain", "checkpointing", "checkpointing+chunked", "nanogpt")
GIB = 2**30


def build(contender: str, T: int, nanogpt: str | None, chunk: int):
    """(model, step loss function of a (1, T) batch) for one contender."""

    if contender == "nanogpt":
        spec = importlib.util.spec_from_file_location("nanogpt_model", Path(nanogpt) / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.GPTConfig(block_size=T, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, bias=False)
        model = module.GPT(config)
        return model, lambda x, y: model(x, y)[1]
    from lit_gpt.config import Config
    from lit_gpt.model import GPT
    from lit_gpt.train.host_memory import pin_mmap_threshold
    from lit_gpt.train.loss import batch_loss

    checkpointing = contender != "plain"
    if checkpointing:
        pin_mmap_threshold()  # what `lit-gpt fit` does on a CPU for a run that trades speed for memory
    config = Config.from_name("llama-124m", vocab_size=50257, block_size=T, gradient_checkpointing=checkpointing)
    model = GPT(config)
    chunk_size = chunk if contender == "checkpointing+chunked" else None
    return model, lambda x, y: batch_loss(model, (x, y), chunk_size)


def child(contender: str, T: int, steps: int, nanogpt: str | None, chunk: int) -> dict:
    """Train ``steps + 1`` steps in this process; tokens/s of the last ``steps`` and the peak resident set."""
    import torch

    torch.manual_seed(0)
    model, step_loss = build(contender, T, nanogpt, chunk)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, 50257, (1, T), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 50257, (1, T), generator=torch.Generator().manual_seed(2))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        step_loss(x, y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {"tokens_per_s": T * steps / sum(times[1:]), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(contender: str, T: int, args: argparse.Namespace) -> dict | None:
    """One measurement in a fresh process; None when it passed ``--max_gb`` (or failed for lack of memory)."""
    command = [sys.executable, __file__, "--child", contender, str(T), "--steps", str(args.steps)]
    command += ["--loss_chunk_size", str(args.loss_chunk_size)] + (["--nanogpt", args.nanogpt] if args.nanogpt else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    over = False
    while process.poll() is None:
        if rss_bytes(process.pid) > args.max_gb * GIB:
            process.kill()
            over = True
        time.sleep(0.05)
    out, err = process.communicate()
    if over or process.returncode in (-9, 137):
        return None
    if process.returncode != 0:
        raise RuntimeError(f"{contender} at T={T} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] *= 1024  # ru_maxrss is in KiB on Linux
    return result


def estimate(contender: str, T: int, chunk: int) -> float | None:
    """``lit_gpt.memory``'s estimate (GiB) for a lit_gpt contender, else None."""
    if contender == "nanogpt":
        return None
    from lit_gpt.config import Config
    from lit_gpt.memory import estimate_memory

    config = Config.from_name("llama-124m", vocab_size=50257, block_size=T)
    checkpointing, chunk_size = contender != "plain", chunk if contender == "checkpointing+chunked" else None
    memory = estimate_memory(
        config, batch_size=1, block_size=T, gradient_checkpointing=checkpointing, loss_chunk_size=chunk_size
    )
    return memory.total / GIB


def plot(rows: list[dict], path: str, title: str) -> None:
    """Peak RSS (GiB) and tokens/s against T, one line per contender (log-2 T axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory, speed) = plt.subplots(1, 2, figsize=(11, 4.2))
    for contender in dict.fromkeys(r["contender"] for r in rows):
        fitted = [r for r in rows if r["contender"] == contender and r["peak_rss"] is not None]
        lengths = [r["T"] for r in fitted]
        memory.plot(lengths, [r["peak_rss"] / GIB for r in fitted], marker="o", label=contender)
        speed.plot(lengths, [r["tokens_per_s"] for r in fitted], marker="o", label=contender)
    for axis, label in ((memory, "peak RSS (GiB)"), (speed, "training tokens/s")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("context length T (batch 1)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    memory.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> None:
    import torch

    from lit_gpt.train.hardware import cpu_class

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    machine = f"{model} {cpu_class()}, {torch.get_num_threads()} threads, torch {torch.__version__}, float32".strip()
    print(f"{machine}; batch 1; chunked loss: {args.loss_chunk_size} tokens per chunk; limit {args.max_gb} GB\n")
    print("| contender | T | peak RSS | estimate | tokens/s |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for contender in args.contenders:
        for T in args.lengths:
            result = measure(contender, T, args)
            guess = estimate(contender, T, args.loss_chunk_size)
            row = {"contender": contender, "T": T, "peak_rss": None, "tokens_per_s": None, **(result or {})}
            rows.append(row)
            memory = f"{row['peak_rss'] / GIB:.2f} GiB" if result else f"> {args.max_gb} GB"
            speed = f"{row['tokens_per_s']:,.0f}" if result else "-"
            print(f"| {contender} | {T} | {memory} | {f'{guess:.2f} GiB' if guess else '-'} | {speed} |", flush=True)
            if result is None:
                break  # longer sequences need more
    print()
    for contender in args.contenders:
        fitted = [r["T"] for r in rows if r["contender"] == contender and r["peak_rss"] is not None]
        print(f"longest T within {args.max_gb} GB, {contender}: {max(fitted) if fitted else 'none'}")
    if args.plot:
        plot(rows, args.plot, f"124M model, batch 1: {machine}")
        print(f"plot: {args.plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--nanogpt", help="a checkout of karpathy/nanoGPT (its model.py); needed for nanogpt")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement, after one untimed")
    parser.add_argument("--max_gb", type=float, default=20.0, help="stop a process whose resident set passes this")
    parser.add_argument("--loss_chunk_size", type=int, default=1024, help="tokens per chunk of the chunked loss")
    parser.add_argument("--plot", default="context_length.png", help="the PNG to write ('' for none)")
    parser.add_argument("--child", nargs=2, metavar=("CONTENDER", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        contender, T = args.child
        print(json.dumps(child(contender, int(T), args.steps, args.nanogpt, args.loss_chunk_size)))
        return
    if "nanogpt" in args.contenders and not (args.nanogpt and (Path(args.nanogpt) / "model.py").is_file()):
        raise SystemExit("error: the nanogpt contender needs --nanogpt, a checkout of karpathy/nanoGPT")
    run(args)


if __name__ == "__main__":
    main()
