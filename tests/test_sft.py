"""Supervised fine-tuning on instruction and chat records (``lit_gpt.data.sft``, ``lit_gpt.train.sft``): the two
record formats, the loss on assistant turns only (turn by turn), truncation and skips with their counts, bad input as
one error, the resumable order, and ``lit-gpt fit`` with full fine-tuning and LoRA, exactly resumed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_gpt.chat import ChatTemplate
from lit_gpt.config import Config
from lit_gpt.data.sft import (
    ExampleBatches,
    PaddedRows,
    SFTData,
    encode_examples,
    held_out,
    read_records,
    validation_batches,
)
from lit_gpt.data.windows import IGNORE_INDEX
from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import Tokenizer

CHAT = {
    "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 12 + 30?"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": "Reverse: cat dog"},
        {"role": "assistant", "content": "dog cat"},
    ]
}
ALPACA = {"instruction": "Add the numbers.", "input": "5 + 7", "output": "12"}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def trained_text(tokenizer: Tokenizer, ids: np.ndarray, trained: np.ndarray) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs, current = [], []
    for token, on in zip(ids.tolist(), trained.tolist()):
        if on:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.from_name("gpt2")


def test_both_formats_become_conversations(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [CHAT, "", ALPACA, {"instruction": "Say hi.", "output": "hi"}])
    records = read_records(path)
    assert [line for line, _ in records] == [1, 3, 4]  # the empty line 2 is left out
    assert records[0][1] == CHAT["messages"]
    assert records[1][1] == [
        {"role": "user", "content": "Add the numbers.\n\n5 + 7"},
        {"role": "assistant", "content": "12"},
    ]
    assert records[2][1] == [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]


def test_the_loss_covers_each_assistant_turn_and_its_end(gpt2, tmp_path):
    records = read_records(write_jsonl(tmp_path / "r.jsonl", [CHAT, ALPACA]))
    template = ChatTemplate(gpt2)
    examples = encode_examples(records, template, SFTData(block_size=256), "r.jsonl")
    assert len(examples) == 2 and examples.truncated == 0 and not examples.skipped
    ids, trained = examples.example(0)
    assert ids.tolist() == template.encode(CHAT["messages"])
    assert trained_text(gpt2, ids, trained) == ["42<|im_end|>\n", "dog cat<|im_end|>\n"]
    ids, trained = examples.example(1)
    assert trained_text(gpt2, ids, trained) == ["12<|im_end|>\n"]
    everything = encode_examples(records, template, SFTData(block_size=256, mask_prompt=False), "r.jsonl")
    assert everything.trained.all() and np.array_equal(everything.ids, examples.ids)


def test_a_hugging_face_template_trains_on_its_assistant_tokens(hf_folder, tmp_path):
    tokenizer = Tokenizer.from_name(str(hf_folder("qwen2")))
    template = ChatTemplate(tokenizer)
    examples = encode_examples([(1, CHAT["messages"])], template, SFTData(block_size=256), "r.jsonl")
    ids, trained = examples.example(0)
    assert ids.tolist() == template.encode(CHAT["messages"])
    assert trained_text(tokenizer, ids, trained) == ["42<|im_end|>\n", "dog cat<|im_end|>\n"]
    assert tokenizer.encode("<|im_end|>", allow_special=True)[0] in ids[trained].tolist()  # one special token


def test_rows_pad_to_the_longest_and_ignore_the_prompt(gpt2):
    template = ChatTemplate(gpt2)
    records = [(1, CHAT["messages"]), (2, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])]
    examples = encode_examples(records, template, SFTData(block_size=256), "r.jsonl")
    x, y = PaddedRows(examples, gpt2.eot_id, pad_multiple=16, block_size=256)[np.array([1, 0])]
    longest = len(examples.example(0)[0]) - 1
    assert x.shape == y.shape == (2, -(-longest // 16) * 16) and x.dtype == y.dtype == torch.int64
    for row, i in enumerate([1, 0]):
        ids, trained = examples.example(i)
        n = len(ids) - 1
        assert x[row, :n].tolist() == ids[:-1].tolist() and (x[row, n:] == gpt2.eot_id).all()
        assert y[row, :n].tolist() == [t if on else IGNORE_INDEX for t, on in zip(ids[1:], trained[1:])]
        assert (y[row, n:] == IGNORE_INDEX).all()
    x, _ = PaddedRows(examples, gpt2.eot_id, pad_multiple=64, block_size=40)[np.array([1])]
    assert x.shape[1] == 40  # never wider than block_size


def test_overlong_examples_are_truncated_or_skipped_and_counted(gpt2):
    template = ChatTemplate(gpt2)  # CHAT is 104 tokens in ChatML on GPT-2's BPE
    long_answer = [{"role": "user", "content": "Count."}, {"role": "assistant", "content": " one" * 80}]
    long_question = [{"role": "user", "content": " word" * 100}, {"role": "assistant", "content": "ok"}]
    no_answer = [{"role": "user", "content": "Hello?"}]
    records = [(1, CHAT["messages"]), (2, long_answer), (3, long_question), (4, no_answer)]
    truncated = encode_examples(records, template, SFTData(block_size=104), "r.jsonl")
    assert len(truncated) == 2 and truncated.truncated == 1
    assert len(truncated.example(0)[0]) == 104 and len(truncated.example(1)[0]) == 105
    assert truncated.example(1)[1][1:].any()  # the start of the answer is kept, and trained
    assert truncated.skipped == {
        "with no assistant token within block_size + 1 tokens": 1,
        "without an assistant turn": 1,
    }
    assert truncated.summary().startswith("2 examples (1 truncated")
    skipped = encode_examples(records, template, SFTData(block_size=104, overlong="skip"), "r.jsonl")
    assert len(skipped) == 1 and skipped.truncated == 0
    assert skipped.skipped["longer than block_size + 1 tokens"] == 2
    with pytest.raises(ConfigError, match="r.jsonl has no example to train on"):
        encode_examples([(4, no_answer)], template, SFTData(block_size=32), "r.jsonl")


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"messages": [{"role": "user", "content": "hi"}', "r.jsonl:2: not a JSON object"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}', "r.jsonl:2: unknown role 'robot'; a role is one of"),
        ('{"messages": [{"role": "user"}]}', 'r.jsonl:2: each message needs a string "role" and "content"'),
        ('{"messages": "hi"}', 'r.jsonl:2: "messages" must be a list'),
        ('{"text": "plain text"}', r'r.jsonl:2: a record is \{"messages": \[...\]\} or'),
        ("[1, 2]", "r.jsonl:2: a record is"),
    ],
)
def test_bad_records_name_the_file_and_line(line, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        read_records(write_jsonl(tmp_path / "r.jsonl", [CHAT, line]))


def test_a_template_that_fails_names_the_record(gpt2):
    strict = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    strict += "{{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError, match="r.jsonl:7: the chat template .* failed to render .*no system role"):
        encode_examples([(7, CHAT["messages"])], ChatTemplate(gpt2, strict), SFTData(), "r.jsonl")


def test_bad_settings():
    with pytest.raises(ConfigError, match="data.overlong must be 'truncate' or 'skip'"):
        SFTData(overlong="cut")
    with pytest.raises(ConfigError, match="data.val_fraction"):
        SFTData(val_fraction=1.0)
    with pytest.raises(ConfigError, match="data.pad_multiple"):
        SFTData(pad_multiple=0)


def test_the_order_is_epochs_of_permutations_that_resume_and_split_exactly():
    def batches(n, **kwargs):
        it = iter(ExampleBatches(10, seed=3, **kwargs))
        return [next(it) for _ in range(n)]

    whole = np.concatenate(batches(5, batch_size=4))  # 20 indices: two epochs
    assert sorted(whole[:10]) == sorted(whole[10:]) == list(range(10)) and not np.array_equal(whole[:10], whole[10:])
    assert np.array_equal(np.concatenate(batches(3, batch_size=4, start_batch=2)), whole[8:])  # resumed at batch 2
    halves = [batches(5, batch_size=2, rank=r, num_replicas=2) for r in (0, 1)]
    assert np.array_equal(np.concatenate([np.concatenate(pair) for pair in zip(*halves)]), whole)


def test_validation_takes_every_example_once_and_held_out_is_seeded():
    parts = [validation_batches(11, 3, rank, 2) for rank in (0, 1)]
    assert sorted(np.concatenate([b for p in parts for b in p]).tolist()) == list(range(11))
    train, val = held_out(100, 0.1, seed=5)
    assert len(val) == 10 and sorted([*train, *val]) == list(range(100))
    assert np.array_equal(held_out(100, 0.1, seed=5)[1], val) and not np.array_equal(held_out(100, 0.1, 6)[1], val)
    with pytest.raises(ConfigError, match="leaves none to train on"):
        held_out(1, 0.5, seed=0)


# ---------------------------------------------------------------------------------------------------------------
# lit-gpt fit with SFTDataModule

SUMS = [(a, b) for a in range(10, 45) for b in range(5, 9)]


def sums(pairs) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}]}
        for a, b in pairs
    ]


@pytest.fixture
def sft_run(tmp_path, byte_encoding):
    """``sft_run(folder, *extra)``: ``lit-gpt fit`` arguments for SFT of a 1-layer base (saved with a byte-level
    BPE) on 120 chat records of sums, validated on 20 held-out ones; every file under ``folder``."""
    from lit_gpt.checkpoint import save_folder
    from lit_gpt.model import GPT

    torch.manual_seed(0)
    config = Config(vocab_size=257, block_size=96, n_layer=1, n_head=2, n_embd=32)
    save_folder(GPT(config), Tokenizer(encoding=byte_encoding, bpe=True), tmp_path / "base")
    train = write_jsonl(tmp_path / "train.jsonl", sums(SUMS[:120]))
    val = write_jsonl(tmp_path / "val.jsonl", [*sums(SUMS[120:]), {"instruction": "1+1=", "output": "2"}])

    def args(folder: Path, *extra) -> list[str]:
        return [
            "fit",
            *("--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.max_steps", 6),
            *("--trainer.val_check_interval", 3, "--trainer.log_every_n_steps", 1),
            *("--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", folder / "runs"),
            *("--model.config.n_layer", 1, "--model.config.n_head", 2, "--model.config.n_embd", 32),
            *("--model.config.block_size", 96, "--model.init_weights", tmp_path / "base", "--model.compile", "false"),
            *("--model.warmup_steps", 2, "--model.learning_rate", 3e-3, "--model.lr_decay_steps", 6),
            *("--data.class_path", "lit_gpt.train.sft.SFTDataModule", "--data.init_args.path", train),
            *("--data.init_args.val_path", val, "--data.init_args.tokenizer", tmp_path / "base"),
            *("--data.init_args.batch_size", 8, "--checkpoint.dirpath", folder / "ckpt"),
            *map(str, extra),
        ]

    return args


def test_fit_fine_tunes_on_assistant_tokens_and_resumes_exactly(sft_run, run_main, scalars, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        code, _, err = run_main(*sft_run(tmp_path / "whole"))
    assert code == 0, err
    (line,) = [r.getMessage() for r in caplog.records if "SFT training data" in r.getMessage()]
    assert "120 examples (0 truncated" in line and "validation data" in line
    logged = scalars(next((tmp_path / "whole" / "runs").rglob("version_0")))
    assert [step for step, _ in logged["val/loss"]] == [2, 5]  # after steps 3 and 6
    assert logged["val/loss"][-1][1] < logged["val/loss"][0][1]
    assert run_main(*sft_run(tmp_path / "halves", "--trainer.max_steps", 3))[0] == 0
    assert run_main(*sft_run(tmp_path / "halves", "--ckpt_path", "last"))[0] == 0
    whole = torch.load(tmp_path / "whole" / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "halves" / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key  # the same batches, in the same order


def test_fit_trains_lora_adapters_on_the_records(sft_run, run_main, tmp_path):
    pytest.importorskip("peft", reason="LoRA needs peft: pip install -e '.[lora]'")
    code, _, err = run_main(*sft_run(tmp_path / "lora", "--model.lora.r", 4, "--model.lora.alpha", 8))
    assert code == 0, err
    state = torch.load(tmp_path / "lora" / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert state and all(".lora_" in key for key in state)  # the adapters, not the base


@pytest.mark.parametrize(
    "record, match",
    [
        ('{"messages": [{"role": "user", "content": "1+1="}', r"train.jsonl:2: not a JSON object"),
        ('{"messages": [{"role": "bot", "content": "2"}]}', r"train.jsonl:2: unknown role 'bot'"),
    ],
)
def test_bad_records_are_one_error_line(sft_run, run_main, errors, record, match, tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps(sums([(1, 1)])[0]) + "\n" + record + "\n")
    code, _, err = run_main(*sft_run(tmp_path / "bad"))
    assert code == 2 and len(errors(err)) == 1
    assert __import__("re").search(match, errors(err)[0])


def test_fit_fine_tunes_a_foreign_hugging_face_model_at_a_shorter_context(hf_folder, run_main, tmp_path):
    """A Qwen2-style folder without lit_gpt's record, with more embedding rows than token ids and a 128-token
    context, fine-tunes on its own template at block_size 96 with the data's tokenizer read from the folder."""
    from lit_gpt.checkpoint import load_checkpoint, save_hf
    from lit_gpt.model import GPT

    tokenizer = Tokenizer.from_name(str(hf_folder("qwen2")))
    config = Config(vocab_size=tokenizer.vocab_size + 40, block_size=128, n_layer=1, n_head=2, n_embd=32, qkv_bias=True)
    assert save_hf(GPT(config), tokenizer, tmp_path / "qwen") == "Qwen2ForCausalLM"
    meta = json.loads((tmp_path / "qwen" / "config.json").read_text())
    del meta["lit_gpt"]
    (tmp_path / "qwen" / "config.json").write_text(json.dumps(meta))
    train = write_jsonl(tmp_path / "train.jsonl", sums(SUMS[:40]))
    flags = ["fit", "--trainer.accelerator", "cpu", "--trainer.max_steps", 2, "--trainer.precision", "32-true"]
    flags += ["--trainer.logger.init_args.save_dir", tmp_path / "runs"]
    flags += ["--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", tmp_path / "ckpt"]
    flags += ["--model.config.n_layer", 1, "--model.config.n_head", 2, "--model.config.n_embd", 32]
    flags += ["--model.config.block_size", 96, "--model.config.qkv_bias", "true", "--model.compile", "false"]
    flags += ["--model.init_weights", tmp_path / "qwen", "--data.class_path", "lit_gpt.train.sft.SFTDataModule"]
    flags += ["--data.init_args.path", train, "--data.init_args.tokenizer", tmp_path / "qwen"]
    flags += ["--data.init_args.val_fraction", 0.25, "--data.init_args.batch_size", 4]
    code, _, err = run_main(*flags)
    assert code == 0, err
    model, trained_with = load_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert (model.config.vocab_size, model.config.block_size, model.config.qkv_bias) == (config.vocab_size, 96, True)
    assert trained_with.chat_template == tokenizer.chat_template and trained_with.vocab_size == tokenizer.vocab_size
    assert trained_with.encode("12+7=<|im_end|>", allow_special=True) == tokenizer.encode(
        "12+7=<|im_end|>", allow_special=True
    )
