"""Training settings chosen from the machine: precision, ``torch.compile`` and deterministic kernels.

A setting the config or the command line leaves unset (``trainer.precision``, ``model.compile``,
``trainer.deterministic``: null) is chosen here, from what torch and Lightning report about the device, and written
back into the run's configuration (so ``config.yaml`` and the checkpoint's hyperparameters say what ran):

- precision: ``bf16-mixed`` where bfloat16 matrix multiplies are native: CUDA GPUs that report bfloat16
  (``torch.cuda.is_bf16_supported``; Ampere and newer), and CPUs with AVX-512 BF16 or AMX that ATen and oneDNN are
  allowed to use; ``16-mixed`` on older CUDA GPUs; ``32-true`` elsewhere. Without native support a bfloat16 matmul
  is emulated, many times slower than float32 (docs/benchmarks.md has the figures), so ``32-true`` there.
- compile (unset, or ``auto``): on CPUs with a C++ compiler (Inductor writes C++; compiled steps are faster in both
  float32 on an AVX2-class CPU and bfloat16 on an AVX-512 BF16 one, docs/benchmarks.md) when the run is long enough
  to repay the compilation (``lit_gpt.train.compile.choose_compile``, given the run's ``TrainingRun``), and on CUDA
  GPUs of compute capability 7.0 or newer (Triton's minimum). Off on Apple MPS and wherever no compiler is found.
- deterministic: on CPU, ``torch.use_deterministic_algorithms`` (Lightning's ``Trainer(deterministic=True)``), so
  that compiled training repeats bit for bit and a resumed run equals an uninterrupted one: otherwise Inductor sums
  the embedding gradient with atomic adds, whose order varies from run to run. On CPU it does not slow training.
  Left to Lightning's default on GPUs, where deterministic kernels are slower. (Without its NaN fill of new tensors:
  ``LitGPTCLI.instantiate_trainer``.)

A ``bf16-mixed`` pinned on a CPU without native bfloat16 is kept, with one warning saying what to use instead.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass, field

import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

from lit_gpt.errors import ConfigError
from lit_gpt.train.compile import TrainingRun, choose_compile

SLOW_BF16_WARNING = (
    "trainer.precision {precision}: this CPU has no native bfloat16 ({why}), so bfloat16 matrix multiplies are "
    "emulated and training will be about 10x slower than in float32; use --trainer.precision 32-true, or leave "
    "trainer.precision unset to choose from the machine"
)


def device_type(accelerator: str | None) -> str:
    """``cuda``, ``mps`` or ``cpu``: the device an ``accelerator`` setting resolves to here (``auto`` and ``gpu``
    as Lightning resolves them: MPS, then CUDA, then CPU)."""
    accelerator = (accelerator or "auto").lower()
    if accelerator in ("auto", "gpu"):
        if MPSAccelerator.is_available():
            return "mps"
        if CUDAAccelerator.is_available():
            return "cuda"
        return "cpu"
    return {"cuda": "cuda", "mps": "mps"}.get(accelerator, "cpu")


def cpu_class() -> str:
    """A label for this CPU's class as it matters for training speed: ``AVX512_BF16/AMX``, ``AVX512``, ``AVX2`` or
    what ATen reports (``torch.backends.cpu.get_cpu_capability``), e.g. for benchmark tables."""
    native, _ = cpu_has_native_bf16()
    return "AVX512_BF16/AMX" if native else torch.backends.cpu.get_cpu_capability()


def cpu_has_native_bf16() -> tuple[bool, str]:
    """Whether bfloat16 matrix multiplies run natively on this CPU, and why (for log lines).

    Native means: the hardware has AVX-512 BF16 or AMX-BF16 (``torch.cpu.get_capabilities``), ATen runs its AVX-512
    kernels (``torch.backends.cpu.get_cpu_capability``, lowered by ``ATEN_CPU_CAPABILITY``), and oneDNN, which runs
    the bfloat16 matmuls, may use them (lowered by ``ONEDNN_MAX_CPU_ISA``).
    """
    capability = torch.backends.cpu.get_cpu_capability()
    flags = torch.cpu.get_capabilities()
    hardware = [name.upper() for name in ("avx512_bf16", "amx_bf16") if flags.get(name)]
    if not hardware:
        return False, capability
    if not capability.startswith("AVX512"):
        return False, f"{capability}; the hardware has {' and '.join(hardware)} but ATen does not use it"
    onednn = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)  # the check torch's own bf16 paths use
    if onednn is not None and not onednn():
        return False, f"{capability}; oneDNN may not use {' or '.join(hardware)}"
    return True, f"{capability} with {' and '.join(hardware)}"


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix multiplies are native on ``device``: a CUDA GPU that reports bfloat16
    (``torch.cuda.is_bf16_supported``), or a CPU as ``cpu_has_native_bf16`` says; False elsewhere (MPS)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()[0]


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor would find (``$CXX``, or ``c++``/``g++``/``clang++`` on the PATH), or None."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return next((found for name in candidates if (found := shutil.which(name))), None)


@dataclass
class Choice:
    """The chosen settings and, for each one chosen here (not pinned), the reason."""

    precision: str
    compile: bool
    deterministic: bool | None
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


SHARDED_STRATEGIES = ("modelparallel", "model_parallel", "fsdp", "deepspeed")
"""Strategy names (lowercase, without underscores or the class suffix) under which compile stays off unless pinned."""


def strategy_name(strategy: object) -> str:
    """A lowercase name for a ``trainer.strategy`` value: a registered name (``ddp``, ``deepspeed_stage_2``), or the
    class name of a class path or instance (``modelparallelstrategy``)."""
    if isinstance(strategy, str):
        return strategy.rsplit(".", 1)[-1].lower()
    class_path = getattr(strategy, "class_path", None) or (
        strategy.get("class_path") if isinstance(strategy, dict) else None
    )
    return (class_path or type(strategy).__name__).rsplit(".", 1)[-1].lower()


GPU_ONLY_STRATEGIES = ("deepspeed", "fsdp")
"""Lightning strategies that run on CUDA GPUs only (``DeepSpeedStrategy``; ``FSDPStrategy``, FSDP1)."""


def check_strategy(accelerator: str | None, strategy: object) -> None:
    """Raise ConfigError for a GPU-only strategy (DeepSpeed, FSDP1) on a machine or accelerator without CUDA, with
    what runs instead; Lightning would otherwise stop with a traceback once training starts."""
    name = strategy_name(strategy)
    if not name.startswith(GPU_ONLY_STRATEGIES) or device_type(accelerator) == "cuda":
        return
    raise ConfigError(
        f"trainer.strategy {name} needs CUDA GPUs (Lightning runs DeepSpeed and FSDP on CUDA only); on this machine "
        'use ddp, or ModelParallelStrategy (FSDP2 and tensor parallelism; see README "Scaling")'
    )


def choose(
    accelerator: str | None,
    precision: str | None = None,
    compile: bool | str | None = None,
    deterministic: bool | None = None,
    strategy: object = "auto",
    run: TrainingRun | None = None,
) -> Choice:
    """Fill the settings left as None for this machine; keep the others (see the module docstring).

    Args:
        accelerator: ``trainer.accelerator`` (``auto``, ``cpu``, ``gpu``, ``cuda``, ``mps``).
        precision, compile, deterministic: the pinned values, or None to choose (``compile`` also ``auto``).
        strategy: ``trainer.strategy``; under sharded strategies (``ModelParallelStrategy``, FSDP, DeepSpeed)
            compile stays off unless pinned: lit_gpt has not verified compiled sharded training.
        run: the training run, whose length and size decide whether compiling repays itself on a CPU; None
            compiles wherever a compiler is found.
    Returns:
        The settings, with one reason per chosen one, and a warning for a pinned bfloat16 on a CPU without it.
    """
    device = device_type(accelerator)
    compile = None if compile == "auto" else compile
    choice = Choice(precision or "", bool(compile), deterministic)
    if device == "cuda":
        _choose_cuda(choice, precision, compile)
    elif device == "mps":
        if precision is None:
            choice.precision = "32-true"
            choice.reasons.append("precision 32-true: Apple MPS (mixed precision not measured here)")
        if compile is None:
            choice.compile = False
            choice.reasons.append("compile off: Inductor's MPS backend is experimental")
    else:
        _choose_cpu(choice, precision, compile, deterministic, run)
    name = strategy_name(strategy)
    if compile is None and any(name.replace("_", "").startswith(s.replace("_", "")) for s in SHARDED_STRATEGIES):
        choice.compile = False
        choice.reasons = [r for r in choice.reasons if not r.startswith("compile ")]
        choice.reasons.append(f"compile off: not verified here under the {name} strategy (pin --model.compile)")
    return choice


def _choose_cuda(choice: Choice, precision: str | None, compile: bool | None) -> None:
    name, (major, minor) = torch.cuda.get_device_name(), torch.cuda.get_device_capability()
    if precision is None:
        bf16 = torch.cuda.is_bf16_supported()
        choice.precision = "bf16-mixed" if bf16 else "16-mixed"
        choice.reasons.append(
            f"precision {choice.precision}: {name} (sm_{major}{minor}) {'has' if bf16 else 'lacks'} native bfloat16"
        )
    if compile is None:
        choice.compile = major >= 7
        choice.reasons.append(
            f"compile {'on' if choice.compile else 'off'}: {name} has compute capability "
            f"{major}.{minor} (Triton needs 7.0)"
        )


def _choose_cpu(
    choice: Choice, precision: str | None, compile: bool | None, deterministic: bool | None, run: TrainingRun | None
) -> None:
    native, why = cpu_has_native_bf16()
    if precision is None:
        choice.precision = "bf16-mixed" if native else "32-true"
        choice.reasons.append(
            f"precision {choice.precision}: this CPU {'has' if native else 'has no'} native bfloat16 ({why})"
        )
    elif str(precision).startswith("bf16") and not native:
        choice.warnings.append(SLOW_BF16_WARNING.format(precision=precision, why=why))
    if compile is None:
        compiler = cxx_compiler() if platform.system() in ("Linux", "Darwin") else None
        if compiler is None:
            choice.compile = False
            choice.reasons.append("compile off: no C++ compiler found for Inductor (install g++, or set CXX)")
        elif run is None:
            choice.compile = True
            choice.reasons.append(f"compile on: Inductor writes C++ kernels with {compiler}")
        else:
            choice.compile, reason = choose_compile(run, choice.precision)
            choice.reasons.append(reason)
    if deterministic is None:
        choice.deterministic = True
        choice.reasons.append("deterministic on: compiled CPU training repeats bit for bit, so resuming is exact")
