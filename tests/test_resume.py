"""Exact resumption, gradient accumulation, and refusing checkpoints that cannot be resumed from, through the real
Trainer on CPU in float32."""

import os
import random
import shutil
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader

from lit_gpt.cli import main
from lit_gpt.config import Config
from lit_gpt.train.module import LitGPT


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resumed_run_repeats_the_uninterrupted_one_bitwise(tiny, scalars, tmp_path, optimizer):
    """12 steps in one go == 6 steps, stop, resume for 6 (--ckpt_path last): the same train/loss at every step.

    Dropout is on, so this needs the RNG state in the checkpoint; the runs validate on different schedules, so it
    also shows that validation leaves the training random stream alone. With Muon, the checkpoint holds Muon's
    momentum buffers and AdamW's moments in one optimizer state (``MuonWithAdamW``).
    """

    def fit(name, max_steps, val_every, *extra):
        flags = [
            "--trainer.max_steps",
            max_steps,
            "--trainer.val_check_interval",
            val_every,
            "--trainer.log_every_n_steps",
            "1",
            "--model.config.dropout",
            "0.1",
            "--model.lr_decay_steps",
            "12",
            "--data.val_fraction",
            "0.01",
            "--data.cache_dir",
            tmp_path / "cache",
            "--samples.max_new_tokens",
            "0",
            "--model.optimizer",
            optimizer,
        ]
        main(tiny(tmp_path / name, *flags, *extra))
        runs = sorted((tmp_path / name / "runs" / "tiny").glob("version_*"))
        return dict(scalars(runs[-1])["train/loss"])

    whole = fit("whole", 12, 4)  # validates after steps 4, 8 and 12
    first = fit("parts", 6, 6)  # validates after step 6 only, and saves last.ckpt there
    second = fit("parts", 12, 6, "--ckpt_path", "last")  # validates after step 12 only
    assert torch.load(tmp_path / "parts" / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 12
    assert sorted(whole) == list(range(12))
    assert first == {step: whole[step] for step in range(6)}  # bitwise: TensorBoard stores the fp32 losses
    assert second == {step: whole[step] for step in range(6, 12)}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_compiled_training_resumes_bitwise_with_the_chosen_deterministic_kernels(tiny, scalars, tmp_path, precision):
    """20 + 20 resumed steps == 40 straight steps under torch.compile, with trainer.deterministic left to the machine
    (on: Inductor would otherwise sum the embedding gradient with atomic adds, in an order that varies by run)."""

    def fit(name, max_steps, *extra):
        flags = [
            "--trainer.max_steps",
            max_steps,
            "--trainer.val_check_interval",
            20,
            "--trainer.log_every_n_steps",
            1,
            "--model.lr_decay_steps",
            40,
            "--data.cache_dir",
            tmp_path / "cache",
            "--samples.max_new_tokens",
            0,
            "--model.compile",
            "true",
            "--trainer.precision",
            precision,
            "--trainer.deterministic",
            "null",
        ]
        main(tiny(tmp_path / name, *flags, *extra))
        losses = {}
        for run in sorted((tmp_path / name / "runs" / "tiny").glob("version_*")):
            losses.update(dict(scalars(run)["train/loss"]))
        return losses

    whole = fit("whole", 40)
    fit("parts", 20)
    parts = fit("parts", 40, "--ckpt_path", "last")
    assert sorted(whole) == list(range(40)) and parts == whole


class Gradients(Callback):
    """Records the gradients that reach the optimizer (summed over micro-batches and normalized by Lightning)."""

    def __init__(self):
        self.steps = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.steps.append({n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_accumulated_micro_batches_give_the_full_batch_update(shakespeare, optimizer):
    """accumulate_grad_batches=4 over micro-batches of 2 windows == one batch of the same 8 windows, per step.

    The data module draws micro-batch i of step s as batch s * 4 + i of its stream (different windows from one
    batch of 8), so the windows here are fixed. Lightning divides each micro-batch loss by 4: with equal-sized
    micro-batches and a mean cross-entropy over windows without ignored targets, the sum is the full-batch mean.
    """
    text = shakespeare.read_text()[:20_000]
    vocab = {c: i for i, c in enumerate(sorted(set(text)))}
    tokens = torch.tensor([vocab[c] for c in text])
    config = Config(vocab_size=len(vocab), block_size=32, n_layer=2, n_head=2, n_embd=32)
    steps = 2
    starts = torch.randint(0, len(tokens) - config.block_size - 1, (steps, 8))
    windows = tokens[starts[..., None] + torch.arange(config.block_size + 1)]  # (steps, 8, T + 1)

    def train(batches, accumulate):
        torch.manual_seed(0)
        model = LitGPT(config, warmup_steps=0, optimizer=optimizer)
        gradients = Gradients()
        trainer = Trainer(
            accelerator="cpu",
            max_steps=steps,
            accumulate_grad_batches=accumulate,
            gradient_clip_val=1.0,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[gradients],
        )
        loader = DataLoader([(w[:, :-1], w[:, 1:]) for w in batches], batch_size=None)
        trainer.fit(model, train_dataloaders=loader)
        return model, gradients.steps

    full, full_grads = train(list(windows), accumulate=1)
    accumulated, accumulated_grads = train(list(windows.reshape(steps * 4, 2, -1)), accumulate=4)
    assert len(full_grads) == len(accumulated_grads) == steps
    # Muon orthogonalises in bfloat16 where it is native: a float32 rounding difference between the two gradient sums
    # can flip a bfloat16 rounding (relative 2**-8) of the update, so after its first step the two agree to that
    # precision.
    loose = dict(rtol=1e-3, atol=1e-5) if optimizer == "muon" else dict(rtol=1e-5, atol=1e-6)
    for step, (ours, theirs) in enumerate(zip(accumulated_grads, full_grads)):
        assert ours.keys() == theirs.keys()
        for name in ours:
            tolerance = loose if step else dict(rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(ours[name], theirs[name], **tolerance, msg=name)
    for (name, ours), theirs in zip(accumulated.named_parameters(), full.parameters()):
        torch.testing.assert_close(ours, theirs, **loose, msg=name)


class Malicious:
    """Unpickling this runs a shell command: what a checkpoint from an untrusted source may hold."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def checkpoints(tiny, tmp_path_factory):
    """A configs/tiny.yaml run's checkpoint folder: last.ckpt and the best step's checkpoint (both at step 20)."""
    folder = tmp_path_factory.mktemp("run")
    main(tiny(folder, "--samples.max_new_tokens", "0"))
    return folder


@pytest.fixture
def broken_last(checkpoints, tmp_path):
    """A copy of the run whose last.ckpt the test then breaks; returns (copy of ckpt/, path of the best one)."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints / "ckpt", ckpt)
    (best,) = ckpt.glob("step*.ckpt")
    os.utime(ckpt / "last.ckpt", (time.time() + 10, time.time() + 10))  # last.ckpt stays the newest file
    return ckpt, best


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def scramble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100:2000] = bytes(random.Random(0).randrange(256) for _ in range(1900))
    path.write_bytes(bytes(data))


def foreign(path: Path) -> None:
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 3}, path)


def malicious(path: Path) -> None:
    torch.save({"lit_gpt": Malicious(str(path.parent / "pwned"))}, path)


@pytest.mark.parametrize(
    "break_it, why",
    [
        (truncate, "is not a readable lit_gpt checkpoint"),
        (scramble, "is not a readable lit_gpt checkpoint"),
        (foreign, "is not a lit_gpt training checkpoint"),
        (malicious, "is not a readable lit_gpt checkpoint"),
    ],
)
@pytest.mark.parametrize("ckpt_path", ["last", "path"])
def test_unreadable_checkpoint_is_one_error_line_naming_the_newest_readable(
    broken_last, tiny, capsys, errors, break_it, why, ckpt_path
):
    ckpt, best = broken_last
    last = ckpt / "last.ckpt"
    break_it(last)
    os.utime(last, (time.time() + 10, time.time() + 10))
    with pytest.raises(SystemExit) as exit_info:
        main(tiny(ckpt.parent, "--trainer.max_steps", "30", "--ckpt_path", last if ckpt_path == "path" else "last"))
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    (line,) = errors(captured.err)
    assert line.startswith(f"error: cannot resume: {last} {why}")
    assert line.endswith(f"the newest readable checkpoint in {ckpt} is {best}: resume with --ckpt_path {best}")
    assert not (ckpt / "pwned").exists()  # nothing from the file was executed
    assert not list(ckpt.parent.glob("runs/tiny/version_*"))  # refused before a run started


def test_a_folder_without_a_readable_checkpoint_says_so(checkpoints, tiny, tmp_path, capsys, errors):
    (tmp_path / "ckpt").mkdir()
    truncate_from = checkpoints / "ckpt" / "last.ckpt"
    (tmp_path / "ckpt" / "last.ckpt").write_bytes(truncate_from.read_bytes()[:1000])
    with pytest.raises(SystemExit):
        main(tiny(tmp_path, "--ckpt_path", "last"))
    (line,) = errors(capsys.readouterr().err)
    assert line.endswith(f"{tmp_path / 'ckpt'} holds no other readable checkpoint")


def test_a_missing_ckpt_path_is_one_error_line(tiny, tmp_path, capsys, errors):
    with pytest.raises(SystemExit) as exit_info:
        main(tiny(tmp_path, "--ckpt_path", tmp_path / "nowhere.ckpt"))
    assert exit_info.value.code == 2
    assert errors(capsys.readouterr().err) == [
        f"error: --ckpt_path {tmp_path / 'nowhere.ckpt'} does not exist; pass a .ckpt written by `lit-gpt fit` or last"
    ]


def test_resuming_with_another_optimizer_is_one_error_line(checkpoints, tiny, tmp_path, capsys, errors):
    shutil.copytree(checkpoints / "ckpt", tmp_path / "ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(tiny(tmp_path, "--trainer.max_steps", "30", "--ckpt_path", "last", "--model.optimizer", "muon"))
    assert exit_info.value.code == 2
    (line,) = errors(capsys.readouterr().err)
    assert line.startswith("error: cannot resume a run trained with model.optimizer adamw with model.optimizer muon")


def test_last_is_the_newest_last_file_and_the_fallback_the_newest_readable_one(checkpoints, tmp_path):
    from lit_gpt.train.resume import newest_last_checkpoint, newest_readable_checkpoint

    assert newest_last_checkpoint(None) is None and newest_last_checkpoint(tmp_path / "missing") is None
    readable = (checkpoints / "ckpt" / "last.ckpt").read_bytes()
    files = {"last.ckpt": readable, "last-v1.ckpt": readable, "lastly.ckpt": b"", "step10.ckpt": b"junk"}
    for age, (name, data) in enumerate(files.items()):  # each file newer than the one before
        (tmp_path / name).write_bytes(data)
        os.utime(tmp_path / name, (1000 + age, 1000 + age))
    assert newest_last_checkpoint(tmp_path) == tmp_path / "last-v1.ckpt"  # not lastly.ckpt, which is newer
    assert newest_readable_checkpoint(tmp_path) == tmp_path / "last-v1.ckpt"  # step10.ckpt is newer but unreadable
    assert newest_readable_checkpoint(tmp_path, exclude=tmp_path / "last-v1.ckpt") == tmp_path / "last.ckpt"
