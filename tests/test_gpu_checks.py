"""bench/gpu_checks.sh: what a GPU owner runs to check DDP over NCCL, FSDP, ZeRO-2/3 and FSDP2+TP, and MFU. No GPU
here, so its ``--dry-run`` runs on CPU, and each ``lit-gpt fit`` command it prints is parsed by the real CLI."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_checks.sh"


def gpu_checks(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def dry_run(*args: str) -> dict[str, list[str]]:
    """The checks a dry run prints, by name: each an argv."""
    result = gpu_checks("--dry-run", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = [line.removeprefix("# ") for line in lines[0::2]]
    assert all(line.startswith("# ") for line in lines[0::2]) and len(lines) == 2 * len(names)
    return dict(zip(names, (shlex.split(line) for line in lines[1::2])))


def test_a_dry_run_lists_every_check_on_one_and_n_gpus():
    checks = dry_run("--gpus", "4", "--steps", "30")
    per_device = [
        "ddp",
        "fsdp",
        "zero2",
        "zero3",
        "zero3-{}-export",
        "zero3-{}-hf",
        "fsdp2-tp",
        "fsdp2-tp-{}-resume",
        "fsdp2-tp-{}-hf",
    ]
    expected = ["prepare"] + [(n.format(d) if "{}" in n else f"{n}-{d}") for d in (1, 4) for n in per_device]
    expected += ["mfu", "docmask-off", "docmask-on"]
    assert list(checks) == expected
    assert checks["zero3-4"][checks["zero3-4"].index("--trainer.strategy") + 1] == "deepspeed_stage_3"
    mp = checks["fsdp2-tp-4"]
    assert mp[mp.index("--trainer.strategy.tensor_parallel_size") + 1] == "2"
    assert mp[mp.index("--trainer.strategy.data_parallel_size") + 1] == "2"
    resume = checks["fsdp2-tp-4-resume"]
    assert resume[resume.index("--ckpt_path") + 1].endswith("fsdp2-tp-4/checkpoints/last.ckpt")
    assert resume[resume.index("--trainer.max_steps") + 1] == "60"


def test_every_fit_command_of_a_dry_run_parses(run_main):
    """The printed commands are real: LightningCLI parses each (``--print_config`` stops before the Trainer, so the
    GPU-only strategies are not refused) and resolves the strategy and device count it asks for."""
    checks = dry_run("--gpus", "4")
    fits = {name: argv for name, argv in checks.items() if argv[:2] == ["lit-gpt", "fit"] and "-1" not in name}
    assert len(fits) == 9
    one_gpu = ("mfu", "docmask-off", "docmask-on")
    for name, argv in fits.items():
        code, out, err = run_main(*argv[1:], "--print_config")
        assert code == 0, f"{name}: {err}"
        config = yaml.safe_load(out)
        assert str(config["trainer"]["devices"]) == ("1" if name in one_gpu else "4"), name
        assert config["trainer"]["accelerator"] == "gpu", name
        strategy = config["trainer"]["strategy"]
        if name.startswith("fsdp2-tp"):
            assert strategy["class_path"] == "lightning.pytorch.strategies.ModelParallelStrategy"
            assert strategy["init_args"]["tensor_parallel_size"] == strategy["init_args"]["data_parallel_size"] == 2
        else:
            assert strategy == (argv[argv.index("--trainer.strategy") + 1] if name not in one_gpu else "auto"), name
        assert (config["ckpt_path"] is not None) == name.endswith("resume"), name
        assert config["data"]["init_args"]["document_mask"] == (name == "docmask-on"), name
        if name.startswith("docmask"):
            assert config["data"]["init_args"]["separator"] == "<|endoftext|>"


def test_without_a_gpu_or_with_a_bad_option_it_stops_with_one_error_line():
    if subprocess.run([sys.executable, "-c", "import torch; assert not torch.cuda.is_available()"]).returncode:
        return  # a GPU machine runs the checks for real
    result = gpu_checks("--out", "/nonexistent")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: no CUDA GPU is visible; run this on a GPU machine, or pass --dry-run to print the commands"
    ]
    result = gpu_checks("--dry-run", "--nodes", "2")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: unknown option --nodes; see bash bench/gpu_checks.sh --help"]


def test_help_is_the_scripts_header():
    result = gpu_checks("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("What CPU machines cannot run, checked on CUDA GPUs in one command")
    assert "--dry-run prints the commands" in result.stdout and "set -uo" not in result.stdout
