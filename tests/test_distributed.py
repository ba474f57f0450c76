"""Multiple devices by a flag: a real two-process DDP run on CPU (gloo), and the other strategy names."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from lit_gpt.checkpoint import load_model
from lit_gpt.cli import main
from lit_gpt.data.windows import IGNORE_INDEX, RandomWindowBatches, TrainWindows, ValidationWindows
from lit_gpt.train.datamodule import TextDataModule

REPO = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).parent / "lit-gpt"


class RecordBatches(Callback):
    """Test-only probe, given to the CLI by class path: each rank saves the inputs it trained on to ``out``."""

    def __init__(self, out: str) -> None:
        self.out, self.inputs = Path(out), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.inputs.append(batch[0].clone())

    def on_train_end(self, trainer, pl_module) -> None:
        record = {"world_size": trainer.world_size, "pid": os.getpid(), "inputs": torch.stack(self.inputs)}
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


def token_mean_loss(model, windows) -> float:
    """Cross-entropy over every target of ``windows`` (the exact val/loss of lit_gpt.train.module.LitGPT)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in DataLoader(windows, batch_size=64):
            logits = model(x).flatten(0, 1).float()
            total += F.cross_entropy(logits, y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((y != IGNORE_INDEX).sum())
    return total / count


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["python -m lit_gpt.cli", "lit-gpt"])
def test_ddp_on_cpu_trains_two_ranks_on_different_batches(shakespeare, fit_args, scalars, tmp_path, launcher):
    if launcher == "lit-gpt" and not CONSOLE_SCRIPT.is_file():
        pytest.skip(f"no console script at {CONSOLE_SCRIPT}")
    command = [sys.executable, "-m", "lit_gpt.cli"] if launcher != "lit-gpt" else [str(CONSOLE_SCRIPT)]
    probe = '{"class_path": "tests.test_distributed.RecordBatches", "init_args": {"out": "%s"}}' % tmp_path
    args = fit_args(
        "--trainer.max_steps",
        "6",
        "--trainer.val_check_interval",
        "3",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.callbacks",
        probe,
    )
    # Lightning starts rank 1 by running this same command line again (its subprocess launcher).
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])  # the probe's module, for both ranks
    result = subprocess.run([*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]  # 134 when a gloo process group outlives the interpreter
    assert "distributed_backend=gloo" in result.stderr and "Starting with 2 processes" in result.stderr

    # two processes on different windows: rank r takes its half of global batch b, drawn from rng((seed, b))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    data = TextDataModule(path=str(shakespeare), tokenizer="char", block_size=64, cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    windows = TrainWindows(data.train_shards, block_size=64)
    for rank, record in enumerate(ranks):
        offsets = iter(
            RandomWindowBatches(windows.num_windows, batch_size=12, seed=data.settings.seed, rank=rank, num_replicas=2)
        )
        expected = torch.stack([windows[next(offsets)][0] for _ in range(6)])
        assert torch.equal(record["inputs"], expected)
    assert not torch.equal(ranks[0]["inputs"], ranks[1]["inputs"])

    # one optimizer step per batch pair; val/loss is the mean over the whole split, reduced across the two ranks
    checkpoint = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 6
    logged = scalars(tmp_path / "runs" / "tiny" / "version_0")
    assert [step for step, _ in logged["val/loss"]] == [2, 5]
    model = load_model(checkpoint)
    full = token_mean_loss(model, ValidationWindows(data.val_tokens[0], 64))
    half = token_mean_loss(model, ValidationWindows(data.val_tokens[0], 64, rank=0, world_size=2))
    assert logged["val/loss"][-1][1] == pytest.approx(full, rel=1e-6)  # float32 rounding, ~1e-7
    assert logged["val/loss"][-1][1] != pytest.approx(half, rel=1e-6)  # what rank 0 alone would log (~2e-5 off)


def test_fsdp_and_deepspeed_are_strategy_names(capsys):
    for strategy in ("fsdp", "deepspeed", "ddp"):
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "fit",
                    "--config",
                    str(REPO / "configs" / "shakespeare-char.yaml"),
                    "--trainer.devices",
                    "2",
                    "--trainer.strategy",
                    strategy,
                    "--print_config",
                ]
            )
        assert exit_info.value.code == 0
        assert f"strategy: {strategy}\n" in capsys.readouterr().out
