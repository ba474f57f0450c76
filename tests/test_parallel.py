"""Sharded training on CPU processes (gloo): FSDP2, tensor parallelism and both, through Lightning's
ModelParallelStrategy and `lit-gpt fit`, against one process; sharded checkpoints resume and export.

Every run trains configs/tiny.yaml (4 heads, so 2 and 4 tensor-parallel ranks divide them) on the same global batch
of 8 windows per step: the data module draws global batch b from rng((seed, b)) and splits it between the data-parallel
replicas, and tensor-parallel ranks share theirs, so every layout sees exactly what one process sees.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lit_gpt.train.parallel import check_tensor_parallel

REPO = Path(__file__).resolve().parents[1]
COMMON = [
    "--trainer.max_steps",
    "20",
    "--trainer.val_check_interval",
    "10",
    "--trainer.limit_val_batches",
    "4",
    "--trainer.log_every_n_steps",
    "1",
    "--model.config.n_head",
    "4",
    "--samples.max_new_tokens",
    "0",
    "--model.lr_decay_steps",
    "20",
]


def model_parallel(devices: int, data: int, tensor: int) -> list[str]:
    return [
        "--trainer.devices",
        str(devices),
        "--trainer.strategy",
        "ModelParallelStrategy",
        "--trainer.strategy.data_parallel_size",
        str(data),
        "--trainer.strategy.tensor_parallel_size",
        str(tensor),
        "--data.batch_size",
        str(8 // data),
    ]


LAYOUTS = {
    "ddp-2": ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.batch_size", "4"],
    "fsdp2-2": model_parallel(2, data=2, tensor=1),
    "fsdp2-4": model_parallel(4, data=4, tensor=1),
    "tp-2": model_parallel(2, data=1, tensor=2),
    "tp-4": model_parallel(4, data=1, tensor=4),
    "fsdp2+tp-4": model_parallel(4, data=2, tensor=2),
}


def launch(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m lit_gpt.cli ARGS`` with the environment of a fresh launch (Lightning starts the other ranks)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"  # 4 processes on a 2-core machine
    result = subprocess.run(
        [sys.executable, "-m", "lit_gpt.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(scalars, folder: Path) -> dict[int, float]:
    found = {}
    for run in sorted((folder / "runs" / "tiny").glob("version_*")):
        found.update(dict(scalars(run)["train/loss"]))
    return found


@pytest.fixture(scope="module")
def one_process(tiny, tmp_path_factory):
    """The reference: one process, batch 8."""
    folder = tmp_path_factory.mktemp("one")
    launch(tiny(folder, *COMMON, "--data.batch_size", "8"))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_trains_like_one_process(one_process, tiny, scalars, tmp_path, layout):
    launch(tiny(tmp_path, *COMMON, *LAYOUTS[layout]))
    ours, reference = losses(scalars, tmp_path), losses(scalars, one_process)
    assert sorted(ours) == sorted(reference) == list(range(20))
    assert max(abs(ours[step] - reference[step]) for step in ours) < 1e-4, layout  # the mean over all ranks


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["fsdp2+tp-4", "one-device"])
def test_a_sharded_checkpoint_resumes_exactly_and_exports_like_one_process(
    one_process, tiny, scalars, tmp_path, layout
):
    """Also ModelParallelStrategy on one device (data and tensor sizes 1): its checkpoint is a folder of shards too."""
    layout = model_parallel(1, data=1, tensor=1) if layout == "one-device" else LAYOUTS[layout]
    launch(tiny(tmp_path / "whole", *COMMON, *layout))
    parts = tmp_path / "parts"
    launch(tiny(parts, *COMMON, *layout, "--trainer.max_steps", "10"))
    assert (parts / "ckpt" / "last.ckpt" / "meta.pt").is_file()  # a folder of shards
    launch(tiny(parts, *COMMON, *layout, "--ckpt_path", "last"))
    assert losses(scalars, parts) == losses(scalars, tmp_path / "whole")  # bitwise

    launch(["export", "--checkpoint", parts / "ckpt" / "last.ckpt", "--out", tmp_path / "sharded-hf"])
    launch(["export", "--checkpoint", one_process / "ckpt" / "last.ckpt", "--out", tmp_path / "one-hf"])
    assert (tmp_path / "sharded-hf" / "config.json").read_text() == (tmp_path / "one-hf" / "config.json").read_text()
    ours, reference = (
        load_file(tmp_path / "sharded-hf" / "model.safetensors"),
        load_file(tmp_path / "one-hf" / "model.safetensors"),
    )
    assert ours.keys() == reference.keys()
    for name in ours:  # the same training up to the order of float sums in the collectives
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_tensor_parallel_size_must_divide_the_heads(tiny_config):
    from lit_gpt.errors import ConfigError
    from lit_gpt.model import GPT

    model = GPT(tiny_config)  # 4 heads, MLP width 128
    check_tensor_parallel(model, 2)
    with pytest.raises(ConfigError, match=r"tensor_parallel_size 3 must divide model.config n_head \(4\), n_kv_head"):
        check_tensor_parallel(model, 3)


@pytest.mark.slow
def test_per_head_switches_train_under_tensor_parallelism_like_one_process(tiny, scalars, tmp_path):
    """QK-norm and value residuals act on each rank's heads after the column split: their replicated weights must
    learn from every rank's heads (``replicate_per_head``), so tensor-parallel training equals one process."""
    switches = [
        "--model.config.n_layer",
        "2",
        "--model.config.qk_norm",
        "true",
        "--model.config.value_residual",
        "true",
    ]
    launch(tiny(tmp_path / "one", *COMMON, *switches, "--data.batch_size", "8"))
    launch(tiny(tmp_path / "tp", *COMMON, *switches, *LAYOUTS["fsdp2+tp-4"]))
    ours, reference = losses(scalars, tmp_path / "tp"), losses(scalars, tmp_path / "one")
    assert sorted(ours) == sorted(reference) == list(range(20))
    assert max(abs(ours[step] - reference[step]) for step in ours) < 1e-4
