"""The `lit-gpt` command end to end on real Tiny Shakespeare: configs, fit, TensorBoard, resume, generate, errors."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_gpt.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def run_cli(*args, cwd=REPO, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "lit_gpt.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def tiny_fit_args(shakespeare, tmp_path, *extra):
    """Flags that shrink configs/shakespeare-char.yaml to seconds (float32, not compiled) and keep every file under
    tmp_path."""
    return [
        "fit", "--config", REPO / "configs" / "shakespeare-char.yaml",
        "--data.path", shakespeare, "--data.cache_dir", tmp_path / "cache",
        "--model.config.n_layer", "1", "--model.config.n_embd", "32", "--model.config.n_head", "2",
        "--trainer.max_steps", "20", "--trainer.val_check_interval", "10", "--model.warmup_steps", "5",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.logger.init_args.save_dir", tmp_path / "runs", "--checkpoint.dirpath", tmp_path / "ckpt",
        "--trainer.precision", "32-true", "--model.compile", "false",  # exact float32, no compile time
        *extra,
    ]  # fmt: skip


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses(config, capsys):
    assert CONFIGS, "no configs found"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed and "checkpoint:" in printed


def test_fit_writes_checkpoints_tensorboard_and_config_then_resumes(shakespeare, tmp_path, capsys):
    main([str(a) for a in tiny_fit_args(shakespeare, tmp_path)])
    ckpt_dir = tmp_path / "ckpt"
    assert (ckpt_dir / "last.ckpt").is_file()
    assert len(list(ckpt_dir.glob("step*-val_loss*.ckpt"))) == 1  # the best val/loss
    run = tmp_path / "runs" / "shakespeare-char" / "version_0"
    assert (run / "config.yaml").is_file()
    logged = scalars(run)
    assert {"train/loss", "val/loss", "val/ppl", "lr-AdamW/pg1"} <= set(logged)
    assert [step for step, _ in logged["val/loss"]] == [9, 19]
    assert logged["val/loss"][-1][1] < logged["val/loss"][0][1]
    checkpoint = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 20
    assert checkpoint["lit_gpt"]["tokenizer"]["kind"] == "char"

    # resume from the last checkpoint and train 10 more steps
    main([str(a) for a in tiny_fit_args(shakespeare, tmp_path, "--trainer.max_steps", "30", "--ckpt_path", "last")])
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=False)["global_step"] == 30
    resumed = scalars(tmp_path / "runs" / "shakespeare-char" / "version_1")
    assert min(step for step, _ in resumed["train/loss"]) >= 20
    assert [step for step, _ in resumed["val/loss"]] == [29]

    # evaluate it: `validate` and `test` both read the whole validation split
    for subcommand, metric in (("validate", "val/loss"), ("test", "test/loss")):
        args = [str(a) for a in tiny_fit_args(shakespeare, tmp_path, "--ckpt_path", ckpt_dir / "last.ckpt")]
        main([subcommand, *args[1:]])
        assert metric in capsys.readouterr().out

    # sample from it: deterministic under a seed, and starting with the prompt
    gen = ["generate", "--checkpoint", ckpt_dir / "last.ckpt", "--prompt", "ROMEO:", "--max_new_tokens", "40"]
    first, second = run_cli(*gen, "--seed", "7"), run_cli(*gen, "--seed", "7")
    other = run_cli(*gen, "--seed", "8", "--top_k", "5", "--top_p", "0.9")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("ROMEO:")
    assert len(first.stdout.rstrip("\n")) == len("ROMEO:") + 40  # character-level: one token per character
    assert other.returncode == 0 and other.stdout != first.stdout

    # a stop string ends the sample before it; repeated prompts are decoded as one left-padded batch
    stop = first.stdout[20:22]  # two characters from the middle of the sample
    stopped = run_cli(*gen, "--seed", "7", "--stop", stop)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == first.stdout[: first.stdout.index(stop, len("ROMEO:"))] + "\n"
    batch = run_cli(*gen, "--seed", "7", "--temperature", "0", "--prompt", "JULIET:\nO Romeo")
    greedy = run_cli(*gen, "--seed", "7", "--temperature", "0")
    assert batch.returncode == 0, batch.stderr
    assert batch.stdout.startswith(greedy.stdout.rstrip("\n"))  # row 1 of the batch equals the prompt alone
    assert "JULIET:\nO Romeo" in batch.stdout

    # export to Hugging Face and to our format: sampling from either folder gives the same text
    for fmt in ("hf", "lit_gpt"):
        main(["export", "--checkpoint", str(ckpt_dir / "last.ckpt"), "--out", str(tmp_path / fmt), "--format", fmt])
        exported = run_cli("generate", "--checkpoint", tmp_path / fmt, *gen[3:], "--seed", "7")
        assert exported.returncode == 0, exported.stderr
        assert exported.stdout == first.stdout


def test_killed_run_resumes_from_the_step_it_reached(shakespeare, tmp_path):
    args = tiny_fit_args(shakespeare, tmp_path, "--trainer.max_steps", "100000", "--trainer.val_check_interval", "5")
    process = subprocess.Popen([sys.executable, "-m", "lit_gpt.cli", *map(str, args)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    last = tmp_path / "ckpt" / "last.ckpt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if last.exists() and len(list(last.parent.glob("*.ckpt"))) >= 2:
            time.sleep(1.5)  # let it train past the checkpoint, then kill it without warning
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    reached = torch.load(last, weights_only=False)["global_step"]
    assert reached >= 5 and reached % 5 == 0

    main([str(a) for a in tiny_fit_args(shakespeare, tmp_path, "--trainer.max_steps", str(reached + 10),
                                        "--trainer.val_check_interval", "5", "--ckpt_path", "last")])  # fmt: skip
    assert torch.load(last, weights_only=False)["global_step"] == reached + 10  # ten steps: train/loss is logged
    versions = sorted((tmp_path / "runs" / "shakespeare-char").glob("version_*"))
    resumed = scalars(versions[-1])
    assert min(step for step, _ in resumed["train/loss"]) >= reached


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--data.path", "{tmp}/missing.txt", "--data.download_url", "null"], "corpus not found"),
        (["--data.path", "{tmp}/empty.txt"], "the corpus has no text"),
        (["--data.path", "{tmp}/short.txt"], "fewer than one window of block_size"),
        (["--data.tokenizer", "gpt-7"], "unknown tokenizer 'gpt-7'"),
        (["--model.config.n_layr", "2"], "unrecognized arguments: --model.config.n_layr"),
        (["--model.config.n_head", "3"], "must be divisible by Config.n_head"),
        (["--data.path", "{tmp}/bad.jsonl"], "bad.jsonl:2 is not JSON"),
        (["--data.path", "{tmp}/utf16.txt"], "is UTF-16 or UTF-32 text"),
        (["--data.path", "{tmp}/nothing-here"], "has no .txt or .jsonl files"),
    ],
)
def test_bad_training_input_is_one_error_line(shakespeare, tmp_path, capsys, flags, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("Too short to hold one window of 65 characters.")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (tmp_path / "utf16.txt").write_bytes("hello".encode("utf-16"))
    (tmp_path / "nothing-here").mkdir()
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in tiny_fit_args(shakespeare, tmp_path)] + flags)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]


def test_unknown_key_in_yaml(tmp_path, capsys):
    config = (REPO / "configs" / "shakespeare-char.yaml").read_text().replace("n_layer: 4", "n_layers: 4")
    (tmp_path / "bad.yaml").write_text(config)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(tmp_path / "bad.yaml")])
    assert exit_info.value.code == 2
    assert "model.config.n_layers" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--top_p", "1.5"], "--top_p must be in (0, 1]"),
        (["--top_p", "0"], "--top_p must be in (0, 1]"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--checkpoint", "pyproject.toml"], "is not a lit_gpt checkpoint"),
        (["--checkpoint", "nowhere.ckpt"], "checkpoint not found"),
    ],
)
def test_bad_generation_input_exits_with_one_line(flags, message):
    result = run_cli("generate", "--checkpoint", "nowhere.ckpt", "--prompt", "hi", *flags)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert message in result.stderr and "Traceback" not in result.stderr


def test_long_prompt_is_cropped_with_a_warning(shakespeare, tmp_path):
    main([str(a) for a in tiny_fit_args(shakespeare, tmp_path, "--trainer.max_steps", "2")])
    prompt = shakespeare.read_text()[:500]
    result = run_cli("generate", "--checkpoint", tmp_path / "ckpt" / "last.ckpt", "--prompt", prompt,
                     "--max_new_tokens", "5", "--seed", "0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "warning: the prompt has 500 tokens, more than block_size 64; keeping the last 64" in result.stderr
    assert result.stdout.startswith(prompt) and len(result.stdout.rstrip("\n")) == 500 + 5  # the whole prompt echoed


def test_console_script_reports_bad_input_without_traceback(tmp_path):
    result = run_cli("fit", "--config", REPO / "configs" / "shakespeare-char.yaml",
                     "--data.path", tmp_path / "none.txt", "--data.download_url", "null",
                     "--checkpoint.dirpath", tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: corpus not found")


def test_prepare_ahead_of_training(shakespeare, tmp_path, capsys):
    main(["prepare", "--config", str(REPO / "configs" / "shakespeare-char.yaml"), "--data.path", str(shakespeare),
          "--data.cache_dir", str(tmp_path / "cache")])  # fmt: skip
    out = capsys.readouterr().out
    assert f"in {tmp_path / 'cache'}" in out
    assert "train: 1,003,855 tokens, 1 documents, 1 shard(s)" in out  # 90% of the 1,115,394 characters
    assert (tmp_path / "cache" / "meta.json").is_file()


def test_presets_listing(capsys):
    main(["presets"])
    out = capsys.readouterr().out
    assert "124,439,808" in out and "40,541,952" in out
