"""LossGuard through `lit-gpt fit` on real Tiny Shakespeare: non-finite and spiking losses stop or skip the step."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from lit_gpt.cli import main
from lit_gpt.errors import ConfigError
from lit_gpt.train.module import LitGPT
from lit_gpt.train.stability import LossGuard

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fit(tiny, scalars, tmp_path):
    """``fit(name, *extra)``: an 8-step run (validations after steps 4 and 8) logging every step under
    tmp_path/name (checkpoints in ckpt/); returns its TensorBoard scalars."""

    def run(name, *extra):
        flags = [
            "--trainer.max_steps",
            "8",
            "--trainer.val_check_interval",
            "4",
            "--trainer.log_every_n_steps",
            "1",
            "--data.val_fraction",
            "0.01",
            "--data.cache_dir",
            tmp_path / "cache",
            "--samples.max_new_tokens",
            "0",
        ]
        main(tiny(tmp_path / name, *flags, *extra))
        return scalars(sorted((tmp_path / name / "runs" / "tiny").glob("version_*"))[-1])

    return run


def inject(monkeypatch, steps, factor=math.nan):
    """Multiply LitGPT's training loss by ``factor`` at the optimizer ``steps``; returns the weights at each step."""
    weights = {}
    training_step = LitGPT.training_step

    def faulty_training_step(self, batch, batch_idx):
        weights[self.global_step] = {k: v.clone() for k, v in self.model.state_dict().items()}
        loss = training_step(self, batch, batch_idx)
        return loss * factor if self.global_step in steps else loss

    monkeypatch.setattr(LitGPT, "training_step", faulty_training_step)
    return weights


def model_weights(path):
    state = torch.load(path, weights_only=False)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def assert_equal_weights(ours, theirs):
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
        assert torch.isfinite(ours[name]).all(), name


def test_nonfinite_loss_stops_and_saves_the_state_before_the_step(fit, tmp_path, monkeypatch, capsys):
    weights = inject(monkeypatch, steps={5})
    with pytest.raises(SystemExit) as exit_info:
        fit("stopped")
    assert exit_info.value.code == 1
    stopped = tmp_path / "stopped" / "ckpt" / "stopped-step000005.ckpt"
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: training stopped at step 5: the loss is nan; the state before this step is saved in "
        f"{stopped}: resume from it with --ckpt_path {stopped} after fixing the cause (e.g. a lower "
        "model.learning_rate) or changing stability.on_nonfinite"
    ]
    assert "Traceback" not in err
    assert torch.load(stopped, weights_only=False)["global_step"] == 5
    assert_equal_weights(model_weights(stopped), weights[5])  # finite, and not touched by the bad batch
    last = torch.load(tmp_path / "stopped" / "ckpt" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 4  # the last checkpoint, from the validation after step 4, is kept as it was

    # resumed from that file (the fault gone), it trains exactly as a run that never met the fault
    monkeypatch.undo()
    resumed = fit("stopped", "--ckpt_path", stopped)["train/loss"]
    clean = fit("clean")["train/loss"]
    assert resumed == clean[5:]


def test_nonfinite_loss_is_skipped_and_counted(fit, tmp_path, monkeypatch):
    weights = inject(monkeypatch, steps={3})
    with pytest.warns(UserWarning, match=r"step 3: the loss is nan; skipped this step \(1 skipped so far\)"):
        logged = fit("skipped", "--stability.on_nonfinite", "skip")
    assert_equal_weights(weights[4], weights[3])  # the bad batch changed nothing
    checkpoint = torch.load(tmp_path / "skipped" / "ckpt" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 8  # the skipped step still counts
    assert all(torch.isfinite(v).all() for v in model_weights(tmp_path / "skipped" / "ckpt" / "last.ckpt").values())
    assert logged["train/skipped_steps"] == [(3, 1.0)]
    assert [step for step, _ in logged["train/loss"]] == list(range(8))
    assert checkpoint["callbacks"]["LossGuard"]["skipped"] == 1  # and survives a resume


def test_too_many_skips_in_a_row_stop(fit, tmp_path, monkeypatch, capsys):
    inject(monkeypatch, steps=set(range(2, 8)))
    with pytest.raises(SystemExit) as exit_info:
        fit("run", "--stability.on_nonfinite", "skip", "--stability.max_consecutive_skips", "2")
    assert exit_info.value.code == 1
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert error.startswith(
        "error: training stopped at step 4: 3 steps in a row would be skipped "
        "(stability.max_consecutive_skips 2), this one because the loss is nan;"
    )


def test_loss_spike_stops(fit, tmp_path, monkeypatch, capsys):
    inject(monkeypatch, steps={6}, factor=10.0)
    with pytest.raises(SystemExit) as exit_info:
        fit("run", "--stability.spike", "stop", "--stability.spike_window", "3")
    assert exit_info.value.code == 1
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "training stopped at step 6: the loss 4" in error  # ten times a loss of about 4.1
    assert "x the mean 4." in error and "of the last 3 steps (stability.spike_factor 2.0)" in error
    assert error.endswith("or changing stability.spike")


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="stability.spike_factor must be > 1"):
        LossGuard(spike_factor=1.0)
    with pytest.raises(ConfigError, match="stability.on_nonfinite must be 'stop' or 'skip'"):
        LossGuard(on_nonfinite="ignore")


class NaNGradient(Callback):
    """Test-only probe, given to the CLI by class path: one rank's gradients turn NaN after backward at one step;
    every rank saves its final weights to ``out``."""

    def __init__(self, step: int, rank: int, out: str) -> None:
        self.step, self.rank, self.out = step, rank, Path(out)

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            for p in pl_module.parameters():
                p.grad.fill_(math.nan)

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save(pl_module.model.state_dict(), self.out / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ddp_ranks_skip_together(fit_args, tmp_path):
    """A NaN gradient on rank 1 only (after DDP's all-reduce) makes both ranks skip, so their weights stay equal."""
    probe = '{"class_path": "tests.test_stability.NaNGradient", "init_args": {"step": 3, "rank": 1, "out": "%s"}}'
    args = fit_args(
        "--trainer.max_steps",
        "6",
        "--trainer.val_check_interval",
        "3",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.callbacks",
        probe % tmp_path,
        "--stability.on_nonfinite",
        "skip",
        "--samples.max_new_tokens",
        "0",
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])  # the probe's module, for both ranks
    result = subprocess.run(
        [sys.executable, "-m", "lit_gpt.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 3: the gradient norm is nan (loss " in result.stderr
    assert "skipped this step (1 skipped so far)" in result.stderr
    weights = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]) and torch.isfinite(value).all(), name
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 6 and checkpoint["callbacks"]["LossGuard"]["skipped"] == 1
