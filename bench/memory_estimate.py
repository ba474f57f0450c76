"""The memory estimate of ``lit_gpt.memory`` against the measured peak of real training steps on CPU.

    python bench/memory_estimate.py [--presets tiny small medium] [--batch_size 8]
        [--layouts single single+ckpt fsdp-2 tp-2]

Each measurement runs in fresh processes (``single``: one; ``fsdp-N`` / ``tp-N``: N ranks under torchrun on gloo,
sharded by ``lit_gpt.train.parallel.parallelize`` with FSDP2 or tensor parallelism): build the preset (GPT-2's
vocabulary), fused AdamW, and run 3 training steps of ``batch_size`` x ``block_size`` random tokens in float32 (loss,
backward, clipping, optimizer step: ``LitGPT``'s step without Lightning). Measured: the peak resident set
(``VmHWM`` of /proc/self/status, reset through /proc/self/clear_refs after the imports) minus the resident set just
before the model is built, i.e. what training added; per rank, the largest. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(preset: str, batch_size: int, checkpointing: bool, mode: str) -> dict:
    """Measure in this process (a torchrun rank when ``mode`` is fsdp or tp)."""
    import torch
    import torch.nn.functional as F

    from lit_gpt.config import Config
    from lit_gpt.model import GPT

    torch.ones(2) @ torch.ones(2)  # thread pools and allocator warm before the baseline
    mesh = None
    if mode != "single":
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        dist.init_process_group("gloo")
        world = dist.get_world_size()
        shape = (world, 1) if mode == "fsdp" else (1, world)
        mesh = init_device_mesh("cpu", shape, mesh_dim_names=("data_parallel", "tensor_parallel"))
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    baseline = _status("VmRSS")
    config = Config.from_name(preset, vocab_size=50257, gradient_checkpointing=checkpointing)
    model = GPT(config).train()
    if mesh is not None:
        from lit_gpt.train.parallel import clip_grads_with_norm_, parallelize, total_norm

        parallelize(model, mesh)
    params = list(model.parameters())
    sharded = [p for p in params if type(p).__name__ == "DTensor"]
    plain = [p for p in params if type(p).__name__ != "DTensor"]
    groups = [{"params": group} for group in (sharded, plain) if group]  # one fused kernel call per kind
    optimizer = torch.optim.AdamW(groups, lr=1e-4, fused=True)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randint(0, config.vocab_size, (batch_size, config.block_size), generator=generator)
        loss = F.cross_entropy(model(x).flatten(0, 1).float(), torch.roll(x, -1, 1).flatten())
        loss.backward()
        grads = [p.grad for p in params]
        if mesh is None:
            torch.nn.utils.clip_grads_with_norm_(params, 1.0, torch.nn.utils.get_total_norm(grads))
        else:
            clip_grads_with_norm_(grads, 1.0, total_norm(grads))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"peak_added": _status("VmHWM") - baseline}


def measure(preset: str, batch_size: int, layout: str) -> int:
    """Peak bytes added by training, the largest over ranks, for a layout ``single``, ``single+ckpt``, ``fsdp-N``
    or ``tp-N``."""
    mode, _, n = layout.partition("-")
    checkpointing = mode.endswith("+ckpt")
    mode = mode.removesuffix("+ckpt")
    worker_args = ["--worker", preset, str(batch_size), str(int(checkpointing)), mode]
    if mode == "single":
        command = [sys.executable, __file__, *worker_args]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            n,
            __file__,
            *worker_args,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if mode != "single" else os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [json.loads(found) for found in re.findall(r"RESULT (\{[^}]*\})", done.stdout)]  # ranks may share a line
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{preset} {layout} failed:\n{done.stderr[-3000:]}")
    return max(r["peak_added"] for r in lines)


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        preset, batch_size, checkpointing, mode = sys.argv[2:6]
        print("RESULT " + json.dumps(worker(preset, int(batch_size), checkpointing == "1", mode)), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "medium"])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--layouts", nargs="+", default=["single", "single+ckpt", "fsdp-2", "tp-2"])
    args = parser.parse_args()

    from lit_gpt.config import Config
    from lit_gpt.memory import estimate_memory

    strategies = {"single": "single", "fsdp": "fsdp", "tp": "tp"}
    print(
        f"batch {args.batch_size} x block_size, float32, AdamW; bytes added by training, per device (max over ranks)\n"
    )
    print("| preset | layout | estimated | measured | estimate / measured |\n|---|---|---:|---:|---:|")
    for preset in args.presets:
        for layout in args.layouts:
            mode, _, n = layout.partition("-")
            config = Config.from_name(preset, vocab_size=50257)
            estimate = estimate_memory(
                config,
                strategies[mode.removesuffix("+ckpt")],
                int(n or 1),
                args.batch_size,
                gradient_checkpointing=mode.endswith("+ckpt"),
            ).total
            measured = measure(preset, args.batch_size, layout)
            print(
                f"| {preset} | {layout} | {estimate / 2**20:,.0f} MiB | {measured / 2**20:,.0f} MiB "
                f"| {estimate / measured:.2f} |"
            )


if __name__ == "__main__":
    main()
