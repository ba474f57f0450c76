"""`lit-gpt lr-find`: Lightning's range test on a tiny config of real Tiny Shakespeare."""

import math
import re

import pytest
import torch

from lit_gpt.cli import main
from lit_gpt.train import lr_find
from lit_gpt.train.module import LitGPT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def lr_find_args(fit_args):
    """``lr_find_args(*extra)``: configs/tiny.yaml for `lr-find`, with no validation during the search (Lightning
    would run it)."""
    return lambda *extra: fit_args("--trainer.val_check_interval", "1000", *extra, command="lr-find")


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_lr_find_sweeps_the_learning_rate_and_prints_a_suggestion(
    lr_find_args, tmp_path, monkeypatch, capsys, optimizer
):
    monkeypatch.chdir(tmp_path)  # Lightning's temporary checkpoint goes to the working directory
    seen = []  # (the module, its hparams.learning_rate, each parameter group's lr) at every optimizer step
    names = set()  # the parameter groups' names
    optimizer_step = LitGPT.optimizer_step

    def recording_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        seen.append((self, self.hparams.learning_rate, [group["lr"] for group in optimizer.param_groups]))
        names.update(group["name"] for group in optimizer.param_groups)
        return optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure)

    monkeypatch.setattr(LitGPT, "optimizer_step", recording_step)
    plotted, save_plot = [], lr_find.save_plot
    monkeypatch.setattr(lr_find, "save_plot", lambda test, *a: (plotted.append(test), save_plot(test, *a)))
    # a warmup longer than the search: if LitGPT's schedule were still active it would scale every rate down
    flags = [
        "--model.warmup_steps",
        "1000",
        "--lr_find.min_lr",
        "1e-5",
        "--lr_find.max_lr",
        "0.1",
        "--lr_find.num_training",
        "20",
        "--lr_find.early_stop_threshold",
        "0",
        "--model.optimizer",
        optimizer,
    ]
    main(lr_find_args(*flags))
    out = capsys.readouterr().out

    match = re.search(r"^suggested learning rate: (\S+) .*--model\.learning_rate (\S+)$", out, re.MULTILINE)
    assert match, out
    suggestion = float(match.group(2))
    assert float(match.group(1)) == suggestion and 1e-5 < suggestion < 0.1

    # Lightning's exponential schedule drove every group (decay, no-decay, and Muon's) from min_lr to max_lr
    assert len(seen) == 20
    rates = [groups for _, _, groups in seen]
    assert names == ({"muon", "no_decay"} if optimizer == "muon" else {"decay", "no_decay"})  # a tied head
    assert all(len(set(groups)) == 1 for groups in rates)  # every group alike
    rates = [groups[0] for groups in rates]
    assert rates[0] == pytest.approx(1e-5) and rates[-1] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(rates, rates[1:]))
    assert {hp for _, hp, _ in seen} == {1e-3}  # the configured rate stays as it was
    assert len({id(module) for module, _, _ in seen}) == 1

    # the curve starts at the loss of the initial model, about ln(65) for 65 characters, not half of it
    (test,) = plotted
    assert test.lrs == pytest.approx(rates)
    assert abs(test.losses[0] - math.log(65)) < 0.3

    # the plot in the logger's folder, with nothing else written: no run, no checkpoint, no config
    plot = tmp_path / "runs" / "tiny" / "lr_find.png"
    assert f"plot: {plot}" in out
    assert plot.read_bytes().startswith(PNG_MAGIC)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if "cache" not in p.parts)
    assert written == ["runs", "runs/tiny", "runs/tiny/lr_find.png"]


def test_lr_find_writes_the_plot_where_asked(lr_find_args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    plot = tmp_path / "plots" / "sweep.png"
    main(lr_find_args("--lr_find.num_training", "15", "--lr_find.plot", plot))
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert "--model.learning_rate " in capsys.readouterr().out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--lr_find.num_training", "8", "--lr_find.early_stop_threshold", "0"],
            "no learning-rate suggestion from 8 steps: it needs at least 13 finite losses; "
            "raise --lr_find.num_training (e.g. 100)",
        ),
        (["--lr_find.min_lr", "0"], "need 0 < --lr_find.min_lr < --lr_find.max_lr, got 0.0 and 1.0"),
        (["--lr_find.num_training", "many"], "argument --lr_find.num_training: invalid int value: 'many'"),
        (["--lr_find.max", "2"], "unrecognized arguments: --lr_find.max 2"),
        (["--model.config.n_layr", "2"], "unrecognized arguments: --model.config.n_layr"),
    ],
)
def test_bad_lr_find_input_is_one_error_line(lr_find_args, tmp_path, monkeypatch, capsys, errors, flags, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(lr_find_args(*flags))
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not list(tmp_path.glob(".lr_find*.ckpt"))  # Lightning removed its temporary checkpoint


def test_lr_find_help(capsys):
    main(["lr-find", "--help"])
    out = capsys.readouterr().out
    assert "--lr_find.num_training" in out and "--lr_find.plot" in out and "lit-gpt fit --help" in out


def test_unbias_divides_by_the_adam_correction_of_k_losses():
    beta = lr_find.BETA
    biased = [3.0 * (1 - beta ** (k + 1)) / (1 - beta ** (k + 2)) for k in range(30)]  # Lightning 2.6's curve
    assert lr_find.unbias(biased) == pytest.approx([3.0] * 30)


def test_steepest_descent_is_measured_per_factor_of_learning_rate():
    """A flat curve with a little noise at tiny rates, then the real descent around 1e-2 (as on real runs)."""
    lrs = torch.logspace(-6, 0, 60, dtype=torch.float64).tolist()
    losses = [4.2 - 0.4 / (1 + math.exp(-3 * (math.log10(lr) + 2))) + 0.002 * (-1) ** i for i, lr in enumerate(lrs)]
    best = lr_find.steepest(lrs, losses)
    assert 3e-3 < lrs[best] < 3e-2  # per unit of lr itself, the noise between the closest rates (1e-5) would win
    assert lr_find.steepest(lrs[:12], losses[:12]) is None  # 10 left out at the start, 1 at the end: one point
