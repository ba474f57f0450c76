"""The `lit-gpt` command end to end on real Tiny Shakespeare: configs, fit, TensorBoard, resume, generate, errors."""

import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lit_gpt.cli import main
from lit_gpt.data.settings import TextData

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """One configs/tiny.yaml run (20 steps, validations after 10 and 20) shared by the tests of this module; returns
    its folder (cache/, runs/tiny/version_0, ckpt/)."""
    folder = tmp_path_factory.mktemp("trained")
    main(tiny(folder))
    return folder


@pytest.fixture
def sample(trained, run_main):
    """A seeded 40-token sample from the trained checkpoint, and the arguments that made it."""
    args = ["generate", "--checkpoint", trained / "ckpt" / "last.ckpt", "--prompt", "ROMEO:", "--max_new_tokens", "40"]
    code, out, err = run_main(*args, "--seed", "7")
    assert code == 0, err
    return args, out


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(REPO / "configs")) for c in CONFIGS])
def test_every_config_parses(config, capsys):
    assert CONFIGS, "no configs found"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed and "checkpoint:" in printed


TEXT_CONFIGS = [c for c in CONFIGS if "class_path" not in yaml.safe_load(c.read_text())["data"]]
"""The configs that train on text (``lit-gpt prepare`` tokenizes their data; not those of another data module)."""


@pytest.mark.parametrize("config", TEXT_CONFIGS, ids=[str(c.relative_to(REPO / "configs")) for c in TEXT_CONFIGS])
def test_every_config_parses_for_prepare(config):
    from lit_gpt.cli.prepare import parse

    section = yaml.safe_load(config.read_text())["data"]
    data = parse(["--config", str(config), "--trainer.max_steps", "5"]).data
    assert isinstance(data, TextData)
    assert {key: getattr(data, key) for key in section} == section  # every key of the section, as written


def test_fit_help_documents_every_field_of_the_data_section(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.help", "lit_gpt.train.datamodule.TextDataModule"])
    assert exit_info.value.code == 0
    printed = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(TextData):
        assert f"--data.{field.name} " in printed
    assert "share of the corpus used for validation" in printed  # Corpus.val_fraction's documentation
    assert "training windows per batch (per device)" in printed  # Batching.batch_size's


def test_fit_writes_last_and_best_checkpoints(trained):
    assert (trained / "ckpt" / "last.ckpt").is_file()
    assert len(list((trained / "ckpt").glob("step*-val_loss*.ckpt"))) == 1  # the best val/loss
    checkpoint = torch.load(trained / "ckpt" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 20
    assert checkpoint["lit_gpt"]["tokenizer"]["kind"] == "char"


def test_fit_logs_losses_and_saves_its_config(trained, scalars):
    run = trained / "runs" / "tiny" / "version_0"
    assert (run / "config.yaml").is_file()
    logged = scalars(run)
    expected = {"train/loss", "train/grad_norm", "val/loss", "val/ppl", "train/lr/decay", "train/lr/no_decay"}
    assert expected <= set(logged)
    assert "epoch" not in logged  # always 0 for a run of steps: not a card above the losses
    assert [step for step, _ in logged["val/loss"]] == [9, 19]
    assert logged["val/loss"][-1][1] < logged["val/loss"][0][1]


def test_resume_continues_from_the_last_step(fit_args, scalars, tmp_path):
    main(fit_args())
    main(fit_args("--trainer.max_steps", "30", "--ckpt_path", "last"))
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 30
    resumed = scalars(tmp_path / "runs" / "tiny" / "version_1")
    assert min(step for step, _ in resumed["train/loss"]) >= 20
    assert [step for step, _ in resumed["val/loss"]] == [29]


@pytest.mark.parametrize("subcommand, metric", [("validate", "val/loss"), ("test", "test/loss")])
def test_validate_and_test_read_the_whole_validation_split(trained, tiny, subcommand, metric, capsys):
    main(tiny(trained, "--ckpt_path", trained / "ckpt" / "last.ckpt", command=subcommand))
    assert metric in capsys.readouterr().out


def test_generate_is_deterministic_under_a_seed(sample, run_main):
    args, text = sample
    again, other = run_main(*args, "--seed", "7"), run_main(*args, "--seed", "8", "--top_k", "5", "--top_p", "0.9")
    assert again[1] == text and text.startswith("ROMEO:")
    assert len(text.rstrip("\n")) == len("ROMEO:") + 40  # character-level: one token per character
    assert other[0] == 0 and other[1] != text


def test_generate_stops_before_a_stop_string(sample, run_main):
    args, text = sample
    stop = text[20:22]  # two characters from the middle of the sample
    code, out, err = run_main(*args, "--seed", "7", "--stop", stop)
    assert code == 0, err
    assert out == text[: text.index(stop, len("ROMEO:"))] + "\n"


def test_generate_streams_once_with_a_stop_string_longer_than_the_text_so_far(sample, run_main):
    args, text = sample
    stop = text[30:42]  # longer than the first tokens' text: nothing may be printed twice while it is held back
    code, out, err = run_main(*args, "--seed", "7", "--stop", stop)
    assert code == 0, err
    assert out == text[: text.index(stop, len("ROMEO:"))] + "\n"


def test_generate_batches_prompts_of_different_lengths(sample, run_main):
    args, _ = sample
    code, batch, err = run_main(*args, "--temperature", "0", "--prompt", "JULIET:\nO Romeo")
    greedy = run_main(*args, "--temperature", "0")[1]
    assert code == 0, err
    assert batch.startswith(greedy.rstrip("\n"))  # row 1 of the batch equals the prompt alone
    assert "JULIET:\nO Romeo" in batch


@pytest.mark.parametrize("fmt", ["hf", "lit_gpt"])
def test_sampling_an_exported_folder_gives_the_same_text(trained, sample, run_main, fmt, tmp_path):
    args, text = sample
    assert (
        run_main("export", "--checkpoint", trained / "ckpt" / "last.ckpt", "--out", tmp_path / fmt, "--format", fmt)[0]
        == 0
    )
    code, out, err = run_main("generate", "--checkpoint", tmp_path / fmt, *args[3:], "--seed", "7")
    assert code == 0, err
    assert out == text


def test_generation_past_block_size_rolls_or_prefills_again(trained, run_main, errors):
    """Past block_size (64) a RoPE model keeps a rolling cache by default; --kv_cache reprefill computes what the
    model computes without a cache."""
    args = ["generate", "--checkpoint", trained / "ckpt" / "last.ckpt", "--prompt", "ROMEO:", "--temperature", "0"]
    args += ["--max_new_tokens", "150"]  # greedy: never end-of-text, which the training text does not hold
    default, rolling = run_main(*args), run_main(*args, "--kv_cache", "rolling", "--sinks", "4")
    reprefill, no_cache = run_main(*args, "--kv_cache", "reprefill"), run_main(*args, "--no_cache")
    assert [r[0] for r in (default, rolling, reprefill, no_cache)] == [0, 0, 0, 0], default[2]
    assert default[1] == rolling[1] and len(default[1].rstrip("\n")) == len("ROMEO:") + 150
    assert reprefill[1] == no_cache[1]
    code, _, err = run_main(*args, "--sinks", "64")
    assert code == 2 and errors(err) == ["error: --sinks must be in [0, block_size = 64), got 64"]


def test_generate_in_a_fresh_process_prints_the_same_sample(sample, run_cli):
    """The console path: the `python -m lit_gpt.cli` process prints what lit_gpt.cli.main printed in-process."""
    args, text = sample
    result = run_cli(*args, "--seed", "7")
    assert result.returncode == 0, result.stderr
    assert result.stdout == text


def test_long_prompt_is_cropped_with_a_warning(trained, shakespeare, run_main):
    prompt = shakespeare.read_text()[:500]
    code, out, err = run_main(
        "generate",
        "--checkpoint",
        trained / "ckpt" / "last.ckpt",
        "--prompt",
        prompt,
        "--max_new_tokens",
        "5",
        "--seed",
        "0",
    )
    assert code == 0, err
    assert "warning: the prompt has 500 tokens, more than block_size 64; keeping the last 64" in err
    assert out.startswith(prompt) and len(out.rstrip("\n")) == 500 + 5  # the whole prompt echoed


@pytest.mark.slow
def test_killed_run_resumes_from_the_step_it_reached(fit_args, scalars, tmp_path):
    args = fit_args("--trainer.max_steps", "100000", "--trainer.val_check_interval", "5")
    process = subprocess.Popen(
        [sys.executable, "-m", "lit_gpt.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "ckpt" / "last.ckpt"
    deadline = time.monotonic() + 240
    # kill it without warning once it has written a second checkpoint (read it: the write is complete)
    while time.monotonic() < deadline and process.poll() is None:
        if last.exists() and len(list(last.parent.glob("*.ckpt"))) >= 2:
            try:
                if torch.load(last, weights_only=False)["global_step"] >= 10:
                    break
            except Exception:  # caught in the middle of a rename
                pass
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    reached = torch.load(last, weights_only=False)["global_step"]
    assert reached >= 10 and reached % 5 == 0

    main(fit_args("--trainer.max_steps", str(reached + 10), "--trainer.val_check_interval", "5", "--ckpt_path", "last"))
    assert torch.load(last, weights_only=False)["global_step"] == reached + 10  # ten steps: train/loss is logged
    versions = sorted((tmp_path / "runs" / "tiny").glob("version_*"))
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
        (["--data.val_fraction", "1.5"], "val_fraction must be between 0 and 1"),
        (["--data.split_by", "lines"], "split_by must be 'auto', 'document' or 'tail'"),
        (["--data.batch_size", "0"], "data.batch_size and data.val_batch_size must be positive integers"),
        (["--data.document_mask", "true"], "data.document_mask needs documents separated by end-of-text tokens"),
        (["--data.reset_positions", "true"], "data.reset_positions restarts positions at document boundaries"),
        (["--model.loss_chunk_size", "0"], "model.loss_chunk_size must be >= 1 token"),
    ],
)
def test_bad_training_input_is_one_error_line(fit_args, errors, tmp_path, capsys, flags, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("Too short to hold one window of 65 characters.")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (tmp_path / "utf16.txt").write_bytes("hello".encode("utf-16"))
    (tmp_path / "nothing-here").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(*[f.replace("{tmp}", str(tmp_path)) for f in flags]))
    assert exit_info.value.code == 2
    lines = errors(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0]


def test_unknown_key_in_yaml(tmp_path, capsys):
    config = (REPO / "configs" / "shakespeare-char.yaml").read_text().replace("n_layer: 4", "n_layers: 4")
    (tmp_path / "bad.yaml").write_text(config)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(tmp_path / "bad.yaml")])
    assert exit_info.value.code == 2
    assert "model.config.n_layers" in capsys.readouterr().err


def test_unknown_command_is_one_error_line(capsys, errors):
    with pytest.raises(SystemExit) as exit_info:
        main(["fitt", "--config", "x.yaml"])
    assert exit_info.value.code == 2
    assert errors(capsys.readouterr().err) == [
        "error: unknown command 'fitt'; choose one of fit, validate, test, prepare, lr-find, generate, chat, export, "
        "quantize, evaluate, serve, presets, train-tokenizer (see `lit-gpt --help`)"
    ]


def test_console_script_reports_bad_input_without_traceback(run_cli, tmp_path):
    result = run_cli(
        "fit",
        "--config",
        REPO / "configs" / "shakespeare-char.yaml",
        "--data.path",
        tmp_path / "none.txt",
        "--data.download_url",
        "null",
        "--checkpoint.dirpath",
        tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: corpus not found")


def test_prepare_ahead_of_training(shakespeare, tmp_path, capsys):
    main(
        [
            "prepare",
            "--config",
            str(REPO / "configs" / "shakespeare-char.yaml"),
            "--data.path",
            str(shakespeare),
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--trainer.max_steps",
            "5",
            "--data.batch_size",
            "4",
            "--data.verify",
            "true",
        ]
    )
    out = capsys.readouterr().out
    assert f"in {tmp_path / 'cache'}" in out
    assert "train: 1,003,855 tokens, 1 documents, 1 shard(s)" in out  # 90% of the 1,115,394 characters
    assert "verified: every token id < 66 and every shard's SHA-256 as stamped" in out
    assert (tmp_path / "cache" / "meta.json").is_file()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--data.pth", "x"], "unrecognized arguments: --data.pth x"),
        (["--data.val_fraction", "two"], "data.val_fraction"),
        (["--data.split_by", "lines"], "split_by must be 'auto', 'document' or 'tail'"),
        (["--data.path", "{tmp}/missing.txt", "--data.download_url", "null"], "corpus not found"),
        (["--config", "{tmp}/nowhere.yaml"], "cannot read --config"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_bad_prepare_input_is_one_error_line(shakespeare, tmp_path, capsys, errors, flags, message):
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "prepare",
                "--config",
                str(REPO / "configs" / "shakespeare-char.yaml"),
                "--data.path",
                str(shakespeare),
                "--data.cache_dir",
                str(tmp_path / "cache"),
                *flags,
            ]
        )
    assert exit_info.value.code == 2
    lines = errors(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0], lines


def test_presets_listing(capsys):
    main(["presets"])
    out = capsys.readouterr().out
    assert "124,439,808" in out and "40,541,952" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["presets", "--vocab_size", "many"], "argument --vocab_size: invalid int value: 'many'"),
        (["presets", "--vocab_size", "0"], "Config.vocab_size must be a positive integer"),
        (["presets", "--memory", "--loss_chunk_size", "0"], "--loss_chunk_size must be >= 1"),
        (["export", "--checkpoint", "x.ckpt"], "the following arguments are required: --out"),
        (["export", "--checkpoint", "nowhere.ckpt", "--out", "{tmp}/out"], "checkpoint not found"),
        (
            ["train-tokenizer", "--data.path", "{shakespeare}", "--vocab_size", "100", "--out", "{tmp}/t"],
            "vocab_size must be an integer from 257",
        ),
        (["lr-find", "--lr_find.min_lr", "2", "--lr_find.max_lr", "1"], "need 0 < --lr_find.min_lr"),
    ],
)
def test_every_command_reports_bad_input_as_one_error_line(shakespeare, tmp_path, capsys, errors, args, message):
    args = [a.replace("{tmp}", str(tmp_path)).replace("{shakespeare}", str(shakespeare)) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = errors(captured.err)
    assert len(lines) == 1 and message in lines[0], captured.err
    assert "usage:" not in captured.err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--top_p", "1.5"], "--top_p must be in (0, 1]"),
        (["--top_p", "0"], "--top_p must be in (0, 1]"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--checkpoint", "pyproject.toml"], "is not a readable lit_gpt checkpoint"),
        (["--checkpoint", "nowhere.ckpt"], "checkpoint not found"),
        (["--max_new_tokens", "many"], "argument --max_new_tokens: invalid int value"),
    ],
)
def test_bad_generation_input_exits_with_one_line(run_main, monkeypatch, flags, message):
    monkeypatch.chdir(REPO)
    code, _, err = run_main("generate", "--checkpoint", "nowhere.ckpt", "--prompt", "hi", *flags)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert message in err and "Traceback" not in err


def test_bad_generation_input_in_a_fresh_process_is_one_line(run_cli):
    result = run_cli("generate", "--checkpoint", "pyproject.toml", "--prompt", "hi")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "is not a readable lit_gpt checkpoint" in result.stderr


def test_presets_memory_estimate(capsys):
    main(["presets", "--memory", "--devices", "4", "--strategy", "fsdp", "--batch_size", "2", "--precision", "32-true"])
    out = capsys.readouterr().out
    assert out.startswith("memory per device: fsdp on 4 device(s), batch 2, 32-true")
    row = next(line for line in out.splitlines() if line.startswith("llama-1b"))
    assert row.split()[6] == "1,175,021,568" and row.endswith("GiB")


def test_presets_memory_counts_checkpointing_and_the_chunked_loss(capsys):
    def total(*flags) -> float:
        main(["presets", "--memory", "--batch_size", "1", "--block_size", "8192", "--precision", "32-true", *flags])
        out = capsys.readouterr().out
        row = next(line for line in out.splitlines() if line.startswith("llama-124m"))
        return float(row.split()[-2])  # total GiB

    plain = total()
    both = total("--gradient_checkpointing", "--loss_chunk_size", "1024")
    assert total("--gradient_checkpointing") < plain and both < total("--gradient_checkpointing")
    assert both < plain / 3
    main(["presets", "--memory", "--loss_chunk_size", "256"])
    assert "loss in chunks of 256 tokens" in capsys.readouterr().out.splitlines()[0]
