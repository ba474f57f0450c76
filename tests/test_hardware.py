"""Settings chosen from the machine: precision, compile and deterministic kernels, with the detection mocked both
ways, and how the choice reaches the run's config.yaml."""

import logging

import pytest
import torch
import yaml

from lit_gpt.cli import main
from lit_gpt.train import hardware


@pytest.fixture
def cpu(monkeypatch):
    """A CPU machine whose bfloat16 support and C++ compiler the test sets: ``cpu(native=..., compiler=...)``."""

    def make(native: bool, compiler: str | None = "/usr/bin/c++", why: str = "AVX2"):
        monkeypatch.setattr(hardware, "device_type", lambda accelerator: "cpu")
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: (native, why))
        monkeypatch.setattr(hardware, "cxx_compiler", lambda: compiler)
        monkeypatch.setattr(hardware.platform, "system", lambda: "Linux")

    return make


def test_cpu_without_native_bf16_trains_in_float32_compiled(cpu):
    cpu(native=False, why="AVX2")
    choice = hardware.choose("auto")
    assert (choice.precision, choice.compile, choice.deterministic) == ("32-true", True, True)
    assert choice.reasons[0] == "precision 32-true: this CPU has no native bfloat16 (AVX2)"
    assert not choice.warnings


def test_cpu_with_native_bf16_trains_in_bf16_mixed(cpu):
    cpu(native=True, why="AVX512 with AVX512_BF16 and AMX_BF16")
    choice = hardware.choose("cpu")
    assert (choice.precision, choice.compile) == ("bf16-mixed", True)
    assert choice.reasons[0] == (
        "precision bf16-mixed: this CPU has native bfloat16 (AVX512 with AVX512_BF16 and AMX_BF16)"
    )


def test_no_compiler_no_compile(cpu):
    cpu(native=False, compiler=None)
    choice = hardware.choose("auto")
    assert choice.compile is False
    assert "compile off: no C++ compiler found for Inductor" in choice.reasons[1]


def test_pinned_settings_are_kept_and_not_explained(cpu):
    cpu(native=True)
    choice = hardware.choose("auto", precision="32-true", compile=False, deterministic=False)
    assert (choice.precision, choice.compile, choice.deterministic) == ("32-true", False, False)
    assert choice.reasons == [] and choice.warnings == []


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_pinned_bf16_on_a_cpu_without_it_warns_once_and_is_kept(cpu, precision):
    cpu(native=False, why="AVX2")
    choice = hardware.choose("auto", precision=precision)
    assert choice.precision == precision
    assert choice.warnings == [hardware.SLOW_BF16_WARNING.format(precision=precision, why="AVX2")]
    assert "about 10x slower" in choice.warnings[0] and "--trainer.precision 32-true" in choice.warnings[0]


@pytest.mark.parametrize(
    "bf16, capability, expected",
    [
        (True, (8, 0), ("bf16-mixed", True)),
        (False, (7, 0), ("16-mixed", True)),
        (False, (6, 1), ("16-mixed", False)),
    ],
)
def test_cuda_choices(monkeypatch, bf16, capability, expected):
    monkeypatch.setattr(hardware, "device_type", lambda accelerator: "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "NVIDIA Test GPU")
    choice = hardware.choose("gpu")
    assert (choice.precision, choice.compile) == expected
    assert choice.deterministic is None  # Lightning's default on GPUs
    assert choice.reasons[0].startswith(f"precision {expected[0]}: NVIDIA Test GPU (sm_{capability[0]}{capability[1]})")


@pytest.mark.parametrize(
    "flags, aten, onednn, expected",
    [
        ({"avx512_bf16": True, "amx_bf16": True}, "AVX512", True, True),
        ({"avx512_bf16": True}, "AVX512", True, True),
        ({"avx512_bf16": False, "amx_bf16": False}, "AVX512", True, False),  # AVX-512 without BF16 (Skylake-X)
        ({"avx512_bf16": True, "amx_bf16": True}, "AVX2", True, False),  # ATEN_CPU_CAPABILITY=avx2
        ({"avx512_bf16": True, "amx_bf16": True}, "AVX512", False, False),  # ONEDNN_MAX_CPU_ISA=AVX2
        ({}, "AVX2", False, False),
    ],
)
def test_native_bf16_needs_the_hardware_aten_and_onednn(monkeypatch, flags, aten, onednn, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: aten)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    native, why = hardware.cpu_has_native_bf16()
    assert native is expected and why.startswith(aten)


def test_the_choice_is_logged_once_and_saved_in_config_yaml(cpu, fit_args, tmp_path, caplog):
    cpu(native=False, why="AVX2", compiler=None)  # no compiler: the run stays eager and quick
    with caplog.at_level(logging.INFO):
        main(
            fit_args(
                "--trainer.precision",
                "null",
                "--model.compile",
                "null",
                "--trainer.max_steps",
                "2",
                "--trainer.val_check_interval",
                "2",
                "--trainer.limit_val_batches",
                "2",
            )
        )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lit-gpt: ")]
    assert lines == [
        "lit-gpt: precision 32-true: this CPU has no native bfloat16 (AVX2); compile off: no C++ "
        "compiler found for Inductor (install g++, or set CXX); deterministic on: compiled CPU training "
        "repeats bit for bit, so resuming is exact"
    ]
    saved = yaml.safe_load((tmp_path / "runs" / "tiny" / "version_0" / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == "32-true" and saved["trainer"]["deterministic"] is True
    assert saved["model"]["compile"] is False


def test_pinned_bf16_on_a_cpu_without_it_is_one_warning_line(cpu, fit_args):
    cpu(native=False, why="AVX2", compiler=None)
    with pytest.warns(UserWarning) as record:
        main(
            fit_args(
                "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"
            )
        )
    ours = [str(w.message) for w in record if "has no native bfloat16" in str(w.message)]
    assert len(ours) == 1 and "\n" not in ours[0]
    assert ours[0].endswith("leave trainer.precision unset to choose from the machine")


def test_cpu_class_labels_the_machine():
    assert hardware.cpu_class() in ("AVX512_BF16/AMX", "AVX512", "AVX2", "DEFAULT", "ZVECTOR", "VSX", "SVE256", "SVE")


def test_compile_auto_stays_eager_for_a_run_too_short_to_repay_it(cpu, fit_args, tmp_path, caplog):
    cpu(native=False, why="AVX2")  # a compiler is found: the run's length decides
    with caplog.at_level(logging.INFO):
        main(fit_args("--model.compile", "auto", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0"))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lit-gpt: ")]
    assert "lit-gpt: compile off: 2 steps would save about 0 s and compiling 1 block graph costs about " in line
    assert "set model.compile true to compile anyway" in line
    saved = yaml.safe_load((tmp_path / "runs" / "tiny" / "version_0" / "config.yaml").read_text())
    assert saved["model"]["compile"] is False


def test_compile_auto_weighs_the_run_it_is_given(cpu):
    from lit_gpt.config import Config
    from lit_gpt.train.compile import TrainingRun

    cpu(native=True, why="AVX512 with AVX512_BF16")
    config = Config(vocab_size=66, block_size=64, n_layer=4, n_head=4, n_embd=128)
    short = hardware.choose("cpu", compile="auto", run=TrainingRun(config, 12 * 64, 10))
    long = hardware.choose("cpu", run=TrainingRun(config, 12 * 64, 100_000))
    assert (short.compile, long.compile) == (False, True)
    assert short.reasons[1].startswith("compile off: 10 steps") and long.reasons[1].startswith("compile on: 100000")


def test_deterministic_cpu_training_skips_the_nan_fill_of_new_tensors(fit_args, monkeypatch):
    """Deterministic mode fills every new tensor with NaN unless told not to; the CLI's Trainer tells it not to."""
    from lit_gpt.train.lightning_cli import build_cli

    deterministic = torch.are_deterministic_algorithms_enabled()
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    try:
        build_cli(fit_args()[1:], run=False)  # trainer.deterministic unset: chosen on for CPU
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    finally:
        torch.use_deterministic_algorithms(deterministic)
