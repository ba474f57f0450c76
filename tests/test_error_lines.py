"""Every bad input of the newer surfaces is one ``error:`` line through the real ``lit-gpt`` command: errors raised
while LightningCLI builds the model, the data module and their nested settings (LoRA, mixtures, streaming, batches),
parallel sizes checked before any process starts, resuming with another architecture, and the flags that were once
overridden without a word (``evaluate --stride 0``, ``export --merge`` without LoRA, a ``prepare`` that failed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lit_gpt.train.lightning_cli import devices_per_node  # imports Lightning, whose log handler keeps this stderr

STREAMING = "lit_gpt.train.streaming.StreamingTextDataModule"


def mixture(shakespeare: Path, *weights: float) -> str:
    return json.dumps([{"name": f"c{i}", "path": str(shakespeare), "weight": w} for i, w in enumerate(weights)])


CONSTRUCTOR_ERRORS = {
    "lora r 0": (["--model.lora.r", "0"], "model.lora.r must be a positive integer, got 0"),
    "lora unknown target": (
        ["--model.lora.target_modules", "[nonexistent]"],
        "model.lora.target_modules ['nonexistent']: choose among q_proj",
    ),
    "lora dropout 2": (["--model.lora.dropout", "2"], "model.lora.dropout must be in [0, 1), got 2.0"),
    "lora alpha 0": (["--model.lora.alpha", "0"], "model.lora.alpha must be positive, got 0"),
    "mixture negative weight": (
        ["--data.tokenizer", "gpt2", "--data.mixture", "{mixture:-1,1}"],
        "data.mixture weights must be positive numbers, got [-1.0, 1.0]",
    ),
    "mixture weights all zero": (
        ["--data.tokenizer", "gpt2", "--data.mixture", "{mixture:0,0}"],
        "data.mixture weights must be positive numbers, got [0.0, 0.0]",
    ),
    "char mixture": (
        ["--data.tokenizer", "char", "--data.mixture", "{mixture:1,1}"],
        "a 'char' vocabulary is built per corpus, so the corpora of data.mixture would not share one",
    ),
    "mixture corpus val_fraction": (
        ["--data.tokenizer", "gpt2", "--data.mixture", '[{"name": "a", "path": "x", "val_fraction": 2}]'],
        "val_fraction must be between 0 and 1 (exclusive), got 2.0",
    ),
    "batch_size 0": (["--data.batch_size", "0"], "data.batch_size and data.val_batch_size must be positive integers"),
    "val_batch_size 0": (["--data.val_batch_size", "0"], "must be positive integers, got 12 and 0"),
    "streaming without input_dir or mixture": (
        ["--data.class_path", STREAMING],
        "StreamingTextDataModule needs data.input_dir or data.mixture (one of them)",
    ),
    "streaming batch_size 0": (
        ["--data.class_path", STREAMING, "--data.input_dir", "{tmp}/export", "--data.batch_size", "0"],
        "data.batch_size and data.val_batch_size must be positive integers",
    ),
    "streaming mixture negative weight": (
        ["--data.class_path", STREAMING, "--data.mixture", '[{"name": "a", "input_dir": "x", "weight": -1}]'],
        "data.mixture weights must be positive numbers, got [-1.0]",
    ),
    "model config": (["--model.config.n_kv_head", "3"], "n_kv_head"),
    "model settings": (["--model.warmup_steps", "-1"], "model.warmup_steps must be >= 0, got -1"),
    "stability settings": (["--stability.spike_factor", "1"], "stability.spike_factor"),
}


def filled(flags: list[str], shakespeare: Path, tmp_path: Path) -> list[str]:
    """``flags`` with ``{tmp}`` and ``{mixture:W1,W2}`` (two Tiny Shakespeare corpora with those weights) filled in."""
    out = []
    for flag in flags:
        if flag.startswith("{mixture:"):
            flag = mixture(shakespeare, *map(float, flag[len("{mixture:") : -1].split(",")))
        out.append(flag.replace("{tmp}", str(tmp_path)))
    return out


CASES = [pytest.param("fit", case, id=f"fit-{case}") for case in CONSTRUCTOR_ERRORS] + [
    pytest.param(command, case, id=f"{command}-{case}")
    for command in ("validate", "lr-find")
    for case in ("lora r 0", "mixture negative weight", "streaming without input_dir or mixture")
]


@pytest.mark.parametrize("command, case", CASES)
def test_an_error_while_the_cli_builds_its_classes_is_one_line(
    run_main, errors, tiny, shakespeare, tmp_path, command, case
):
    """jsonargparse wraps the ConfigError of a class it builds (a data module, a nested dataclass, a list of them)
    in its own errors; the command prints the project's line and exits with status 2."""
    flags, message = CONSTRUCTOR_ERRORS[case]
    code, out, err = run_main(*tiny(tmp_path, *filled(flags, shakespeare, tmp_path), command=command))
    assert code == 2 and "Traceback" not in err + out
    assert len(errors(err)) == 1 and message in errors(err)[0], err[-2000:]
    assert not list(tmp_path.glob("**/version_*"))  # nothing ran


@pytest.mark.parametrize(
    "weights, message",
    [
        ((-1, 1), "data.mixture weights must be positive numbers, got [-1.0, 1.0]"),
        ((0, 0), "data.mixture weights must be positive numbers, got [0.0, 0.0]"),
        (None, "a 'char' vocabulary is built per corpus"),
    ],
)
def test_prepare_gives_the_same_mixture_errors(run_main, errors, repo, shakespeare, tmp_path, weights, message):
    tokenizer = "char" if weights is None else "gpt2"
    args = ["--data.tokenizer", tokenizer, "--data.mixture", mixture(shakespeare, *(weights or (1, 1)))]
    code, out, err = run_main("prepare", "--config", repo / "configs" / "tiny.yaml", *args)
    assert code == 2 and "Traceback" not in err
    assert len(errors(err)) == 1 and message in errors(err)[0]


PARALLEL = ["--trainer.strategy", "ModelParallelStrategy", "--model.config.n_head", "4"]
PARALLEL_ERRORS = {
    "data x tensor != devices": (
        ["--trainer.devices", "2", "--trainer.strategy.data_parallel_size", "2"],
        "data_parallel_size x tensor_parallel_size (2 x 2) must equal devices x num_nodes (2 x 1)",
    ),
    "tensor size does not divide n_head": (
        ["--trainer.devices", "3", "--trainer.strategy.data_parallel_size", "1"],
        "tensor_parallel_size 3 must divide model.config n_head (4)",
    ),
    "tensor size does not divide n_kv_head": (
        ["--trainer.devices", "4", "--model.config.n_kv_head", "2"],
        "tensor_parallel_size 4 must divide model.config n_kv_head (2)",
    ),
    "muon sharded": (
        ["--trainer.devices", "2", "--model.optimizer", "muon"],
        "model.optimizer muon needs whole weight matrices on every device (Newton-Schulz orthogonalises each "
        "matrix), but trainer.strategy ModelParallelStrategy shards them",
    ),
}


@pytest.mark.parametrize("case", PARALLEL_ERRORS)
def test_parallel_sizes_are_checked_once_before_any_process_starts(run_cli, errors, tiny, tmp_path, case):
    """A fresh `lit-gpt` process (the one that would start the others): one line, printed once, and no rank
    started (Lightning's launcher prints "Initializing distributed" from each rank it starts)."""
    flags, message = PARALLEL_ERRORS[case]
    result = run_cli(*tiny(tmp_path, *PARALLEL, *flags))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert errors(result.stderr) == [errors(result.stderr)[0]] and message in errors(result.stderr)[0]
    assert "Initializing distributed" not in result.stderr and not (tmp_path / "cache").exists()


def test_the_processes_per_node_are_read_as_lightning_reads_devices():
    assert [devices_per_node(d) for d in (4, "4", [0, 1], "0,1", "1,", "auto", -1, "-1")] == [
        4,
        4,
        2,
        2,
        1,
        None,
        None,
        None,
    ]


@pytest.fixture(scope="module")
def checkpoint(tiny, tmp_path_factory):
    """A configs/tiny.yaml run (1 layer); returns its folder."""
    from lit_gpt.cli import main

    folder = tmp_path_factory.mktemp("trained")
    main(tiny(folder, "--trainer.max_steps", "10", "--samples.max_new_tokens", "0"))
    return folder


@pytest.mark.parametrize("ckpt_path", ["last", "path"])
@pytest.mark.parametrize(
    "flags, fields",
    [
        (["--model.config.n_layer", "2"], ["n_layer: 1 there, 2 here"]),
        (
            ["--model.config.n_embd", "64", "--model.config.norm", "layernorm"],
            ["n_embd: 32 there, 64 here", "norm: 'rmsnorm' there, 'layernorm' here"],
        ),
    ],
)
def test_resuming_with_another_architecture_is_one_line_naming_the_fields(
    checkpoint, run_main, errors, tiny, tmp_path, flags, fields, ckpt_path
):
    shutil.copytree(checkpoint / "ckpt", tmp_path / "ckpt")
    last = tmp_path / "ckpt" / "last.ckpt"
    resume = ["--trainer.max_steps", "20", "--ckpt_path", "last" if ckpt_path == "last" else last]
    code, _, err = run_main(*tiny(tmp_path, *flags, *resume))
    assert code == 2 and "Traceback" not in err
    (line,) = errors(err)
    assert line.startswith(f"error: cannot resume from {last}: it was trained with another architecture (")
    assert all(field in line for field in fields), line
    assert line.endswith("); set model.config to match it (the run's config.yaml holds it)")
    assert not list(tmp_path.glob("**/version_*"))


def test_resuming_with_another_tokenizer_is_one_line(checkpoint, run_main, errors, tiny, tmp_path):
    shutil.copytree(checkpoint / "ckpt", tmp_path / "ckpt")
    code, _, err = run_main(*tiny(tmp_path, "--data.tokenizer", "gpt2", "--ckpt_path", "last"))
    assert code == 2 and "Traceback" not in err
    (line,) = errors(err)
    assert "the checkpoint's model has a vocabulary of 66 tokens, but this run's tokenizer has 50257" in line


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--stride", "0"], "--stride must be a positive integer, got 0"),
        (["--block_size", "0"], "--block_size must be a positive integer, got 0"),
        (["--batch_size", "0"], "--batch_size must be a positive integer, got 0"),
        (["--block_size", "16", "--stride", "17"], "1 <= stride <= block_size"),
    ],
)
def test_evaluate_refuses_a_zero_stride_or_block_size(checkpoint, run_main, errors, shakespeare, flags, message):
    ckpt = checkpoint / "ckpt" / "last.ckpt"
    code, out, err = run_main("evaluate", "--checkpoint", ckpt, "--data.path", shakespeare, *flags)
    assert code == 2 and out == "" and "Traceback" not in err
    (line,) = errors(err)
    assert message in line


def test_export_merge_without_lora_says_it_did_nothing(checkpoint, run_main, tmp_path):
    ckpt = checkpoint / "ckpt" / "last.ckpt"
    code, out, err = run_main("export", "--checkpoint", ckpt, "--out", tmp_path / "hf", "--merge")
    assert code == 0
    assert err.splitlines() == [
        f"warning: --merge did nothing: it has no LoRA adapters to merge; exporting {ckpt} as it is"
    ]
    assert out.startswith("wrote a Hugging Face") and (tmp_path / "hf" / "config.json").is_file()


@pytest.mark.parametrize("cache", ["new/deeper", "existing"])
def test_a_failed_prepare_removes_the_folder_it_created_and_keeps_one_that_existed(
    run_main, errors, repo, tmp_path, cache
):
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "notes.txt").write_text("mine")
    args = ["--data.path", tmp_path / "missing.txt", "--data.download_url", "null"]
    code, _, err = run_main(
        "prepare", "--config", repo / "configs" / "tiny.yaml", "--data.cache_dir", tmp_path / cache, *args
    )
    assert code == 2 and errors(err)[0].startswith("error: corpus not found")
    assert not (tmp_path / "new").exists()  # the folder it created, and the parent it created for it
    assert (tmp_path / "existing" / "notes.txt").read_text() == "mine"
