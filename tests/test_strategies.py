"""The GPU-only strategies (DeepSpeed ZeRO stages, FSDP1), built with their settings on a machine that pretends to
have CUDA GPUs (only the CUDA checks are mocked), and refused with one error line on a CPU."""

import importlib.util

import pytest
import torch

from lit_gpt.cli import main
from lit_gpt.train.lightning_cli import build_cli

HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


@pytest.fixture
def two_gpus(monkeypatch):
    """What Lightning and lit_gpt ask torch about CUDA, answered as for two Hopper GPUs; nothing runs on them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


def built(fit_args, *flags):
    """The LightningCLI of configs/tiny.yaml on 2 GPUs with ``flags``: its trainer is built, nothing is run."""
    args = fit_args("--trainer.accelerator", "gpu", "--trainer.devices", "2", *flags)
    return build_cli(args[1:], run=False)


@pytest.mark.parametrize("strategy", ["deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3", "fsdp"])
def test_gpu_only_strategies_are_one_error_line_on_a_cpu(fit_args, errors, capsys, strategy):
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args("--trainer.strategy", strategy))
    assert exit_info.value.code == 2
    (line,) = errors(capsys.readouterr().err)
    assert line.startswith(f"error: trainer.strategy {strategy} needs CUDA GPUs")
    assert "ModelParallelStrategy (FSDP2 and tensor parallelism" in line


@pytest.mark.skipif(not HAS_DEEPSPEED, reason='DeepSpeed is not installed: pip install -e ".[deepspeed]"')
@pytest.mark.parametrize("stage, offload", [(1, False), (2, False), (2, True), (3, False), (3, True)])
def test_deepspeed_zero_stages_are_built_with_their_settings(two_gpus, fit_args, stage, offload):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    name = f"deepspeed_stage_{stage}" + ("_offload" if offload else "")
    cli = built(fit_args, "--trainer.strategy", name, "--trainer.precision", "null", "--model.compile", "null")
    strategy = cli.trainer.strategy
    assert isinstance(strategy, DeepSpeedStrategy)
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) == offload
    assert cli.trainer.precision == "bf16-mixed" and cli.model.hparams.compile is False  # chosen for the GPU
    assert cli.trainer.num_devices == 2


def test_fsdp_is_built_with_full_sharding(two_gpus, fit_args):
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import ShardingStrategy

    strategy = built(fit_args, "--trainer.strategy", "fsdp").trainer.strategy
    assert isinstance(strategy, FSDPStrategy) and strategy.sharding_strategy == ShardingStrategy.FULL_SHARD


def test_model_parallel_strategy_is_built_from_flags_and_left_uncompiled(two_gpus, fit_args):
    from lightning.pytorch.strategies import ModelParallelStrategy

    cli = built(
        fit_args,
        "--trainer.strategy",
        "ModelParallelStrategy",
        "--trainer.strategy.tensor_parallel_size",
        "2",
        "--trainer.strategy.data_parallel_size",
        "1",
        "--model.compile",
        "null",
    )
    assert isinstance(cli.trainer.strategy, ModelParallelStrategy)
    assert cli.model.hparams.compile is False  # chosen: compiled sharded training is not verified here


@pytest.mark.skipif(HAS_DEEPSPEED, reason="DeepSpeed is installed")
def test_deepspeed_without_the_package_is_one_error_line(two_gpus, fit_args, errors, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            fit_args(
                "--trainer.accelerator", "gpu", "--trainer.devices", "2", "--trainer.strategy", "deepspeed_stage_2"
            )
        )
    assert exit_info.value.code == 2
    (line,) = errors(capsys.readouterr().err)
    assert "pip install -U deepspeed" in line
