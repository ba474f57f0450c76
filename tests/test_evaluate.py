"""lit_gpt.evaluate and `lit-gpt evaluate`: sliding windows, the scores against plain per-token computations and
training's validation, bits per byte, every checkpoint form, the loss per position, passkey retrieval
(lit_gpt.passkey) and the context overrides (--model.config.block_size, --model.config.rope_scaling)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_gpt.checkpoint import save_folder
from lit_gpt.config import Config, ConfigError
from lit_gpt.data.windows import IGNORE_INDEX, ValidationWindows
from lit_gpt.evaluate import (
    document_tokens,
    evaluate_documents,
    loss_by_position,
    negative_log_likelihood,
    position_buckets,
    sliding_windows,
)
from lit_gpt.model import GPT
from lit_gpt.passkey import FILLER, QUESTION, TASK, passkey_prompt, passkey_retrieval
from lit_gpt.tokenizer import Tokenizer

UNICODE = ["naïve café — 日本語 🙂\n", "second document, plain ASCII", "ünïcödé again"]


@pytest.fixture(
    params=[{}, {"logit_softcap": 2.0, "qk_norm": True, "value_residual": True, "mlp": "relu2"}],
    ids=["plain", "switches"],
)
def model(request) -> GPT:  # "switches": the scores must come from the model's own head (softcap) and forward
    return GPT(Config(vocab_size=99, block_size=16, n_layer=2, n_head=2, n_embd=32, **request.param)).eval()


@pytest.mark.parametrize(
    "n, block_size, stride", [(1, 4, 4), (3, 4, 2), (10, 4, 4), (11, 4, 3), (17, 8, 1), (16, 8, 8), (40, 8, 5)]
)
def test_sliding_windows_score_every_target_once_with_context(n, block_size, stride):
    T = min(block_size, n)
    scored = []
    for start, count in sliding_windows(n, block_size, stride):
        assert 0 <= start and start + T <= n and 1 <= count <= T
        for target in range(start + T - count, start + T):
            scored.append(target)
            context = target - start + 1  # inputs start .. target predict target + 1
            assert context >= min(target + 1, T - stride + 1)
    assert scored == list(range(n))


def test_stride_one_scores_each_token_with_its_longest_context(model):
    tokens = torch.randint(0, 99, (40,))
    reference = 0.0
    with torch.no_grad():
        for t in range(39):  # predict tokens[t + 1] from the (at most 16) tokens up to t
            context = tokens[max(0, t + 1 - 16) : t + 1]
            reference += F.cross_entropy(model(context[None])[0, -1], tokens[t + 1]).item()
    result = negative_log_likelihood(model, tokens, stride=1, batch_size=5)
    assert result.tokens == 39
    assert result.nll == pytest.approx(reference, rel=1e-5)


def test_disjoint_windows_equal_trainings_validation_windows(model):
    tokens = torch.randint(0, 99, (75,))
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in ValidationWindows(tokens.numpy(), 16):
            total += F.cross_entropy(model(x[None])[0], y, ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((y != IGNORE_INDEX).sum())
    result = negative_log_likelihood(model, tokens, block_size=16, stride=16, batch_size=3)
    assert result.tokens == count == 74
    assert result.loss == pytest.approx(total / count, rel=1e-5)


def test_bits_per_byte_counts_utf8_bytes_and_end_of_text(model):
    tokenizer = Tokenizer.char(UNICODE)
    model = GPT(model.config.replace(vocab_size=tokenizer.vocab_size)).eval()
    tokens, n_bytes, n_documents = document_tokens(tokenizer, UNICODE)
    eot = tokenizer.eot_id
    expected = [
        eot,
        *tokenizer.encode(UNICODE[0]),
        eot,
        *tokenizer.encode(UNICODE[1]),
        eot,
        *tokenizer.encode(UNICODE[2]),
    ]
    assert tokens.tolist() == expected and n_documents == 3
    assert n_bytes == sum(len(d.encode("utf-8")) for d in UNICODE) > sum(map(len, UNICODE))
    result = evaluate_documents(model, tokenizer, UNICODE, stride=8)
    assert result.tokens == len(expected) - 1 and result.bytes == n_bytes  # two end-of-text targets, no bytes
    assert result.bits_per_byte == pytest.approx(result.loss * result.tokens / n_bytes / math.log(2), rel=1e-12)
    assert result.perplexity == pytest.approx(math.exp(result.loss))


def test_bad_settings(model):
    tokens = torch.randint(0, 99, (40,))
    with pytest.raises(ConfigError, match="block_size <= 16"):
        negative_log_likelihood(model, tokens, block_size=32)
    with pytest.raises(ConfigError, match="stride <= block_size"):
        negative_log_likelihood(model, tokens, block_size=8, stride=9)
    with pytest.raises(ConfigError, match="fewer than 2 tokens"):
        negative_log_likelihood(model, tokens[:1])


def test_evaluate_command_prints_and_writes_json(run_main, tmp_path):
    tokenizer = Tokenizer.char(UNICODE)
    model = GPT(Config(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32)).eval()
    save_folder(model, tokenizer, tmp_path / "model")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in UNICODE), encoding="utf-8")
    code, out, err = run_main(
        "evaluate",
        "--checkpoint",
        tmp_path / "model",
        "--data.path",
        tmp_path / "docs.jsonl",
        "--stride",
        "4",
        "--out",
        tmp_path / "result" / "eval.json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result == json.loads((tmp_path / "result" / "eval.json").read_text())
    expected = evaluate_documents(model, tokenizer, UNICODE, stride=4).to_dict()
    assert {k: result[k] for k in expected} == pytest.approx(expected, rel=1e-9)
    assert result["documents"] == 3 and result["block_size"] == 16 and result["stride"] == 4
    code, _, err = run_main("evaluate", "--checkpoint", tmp_path / "model")
    assert code == 2 and "pass --data.path" in err


# ---------------------------------------------------------------------------------------------------------------
# Long context: loss per position, passkey retrieval, context overrides


def test_position_buckets_are_powers_of_two():
    assert position_buckets(16) == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16)]
    assert position_buckets(12) == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 12)]
    assert position_buckets(1) == [(0, 1)]


def test_loss_by_position_averages_per_token_losses(model):
    tokens = torch.randint(0, 99, (16 * 4 + 1 + 5,))  # four windows; the 5-token tail is left out
    per_position = torch.zeros(16, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, 64, 16):
            x, y = tokens[start : start + 16], tokens[start + 1 : start + 17]
            per_position += F.cross_entropy(model(x[None])[0], y, reduction="none").double()
    records = loss_by_position(model, tokens, batch_size=3)
    assert [r["positions"] for r in records] == [[0, 0], [1, 1], [2, 3], [4, 7], [8, 15]]
    for record, (start, end) in zip(records, position_buckets(16)):
        assert record["tokens"] == 4 * (end - start)
        assert record["loss"] == pytest.approx(per_position[start:end].sum().item() / record["tokens"], rel=1e-5)
        assert record["perplexity"] == pytest.approx(math.exp(record["loss"]))
    assert loss_by_position(model, tokens, block_size=8)[-1]["positions"] == [4, 7]
    with pytest.raises(ConfigError, match="fewer than one window"):
        loss_by_position(model, tokens[:16])
    with pytest.raises(ConfigError, match="block_size <= 16"):
        loss_by_position(model, tokens, block_size=32)


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.from_name("gpt2")


@pytest.mark.parametrize("length", [100, 256, 1000])
def test_passkey_prompts_hide_the_key_at_its_depth(gpt2, length):
    filler = gpt2.encode(FILLER)
    for depth in (0.0, 0.5, 1.0):
        prompt, answer = passkey_prompt(gpt2, length, depth, key=31415)
        assert answer == gpt2.encode(" 31415")
        assert length - len(filler) < len(prompt) + len(answer) + 1 <= length  # as much filler as fits
        text = gpt2.decode(prompt)
        assert text.startswith(TASK) and text.endswith(QUESTION)
        before, after = text[len(TASK) :].split("\nThe pass key is 31415. Remember it. 31415 is the pass key.")
        fillers = before.count("The grass") + after.count("The grass")
        assert before.count("The grass") == round(depth * fillers)
    with pytest.raises(ConfigError, match="needs at least"):
        passkey_prompt(gpt2, 40, 0.5, key=1)
    with pytest.raises(ConfigError, match="depth must be in"):
        passkey_prompt(gpt2, 256, 1.5, key=1)


def test_passkey_retrieval_scores_greedy_answers(gpt2, monkeypatch):
    model = GPT(Config(vocab_size=gpt2.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=32)).eval()

    def answering(offset):  # stands in for greedy decoding: answers with the key in the prompt, plus offset
        def fake_generate(model, idx, max_new_tokens, temperature):
            assert temperature == 0.0 and idx.size(1) + max_new_tokens <= 256
            key = int(re.search(r"The pass key is (\d+)", gpt2.decode(idx[0].tolist())).group(1))
            new = gpt2.encode(f" {key + offset}. The")[:max_new_tokens]
            return torch.cat([idx, torch.tensor([new])], dim=1)

        return fake_generate

    monkeypatch.setattr("lit_gpt.passkey.generate", answering(0))
    records = passkey_retrieval(model, gpt2, [128, 256], [0.0, 1.0], trials=3, seed=1)
    assert [(r["length"], r["depth"]) for r in records] == [(128, 0.0), (128, 1.0), (256, 0.0), (256, 1.0)]
    assert all(r["trials"] == 3 and r["correct"] == 3 and r["accuracy"] == 1.0 for r in records)
    monkeypatch.setattr("lit_gpt.passkey.generate", answering(1))
    assert all(r["accuracy"] == 0.0 for r in passkey_retrieval(model, gpt2, [128], [0.5], trials=3))
    with pytest.raises(ConfigError, match="exceeds the model's block_size 256"):
        passkey_retrieval(model, gpt2, [512], [0.5], trials=1)


def test_evaluate_command_long_context_modes(gpt2, run_main, errors, tmp_path):
    config = Config(vocab_size=gpt2.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32, padding_multiple=64)
    model = GPT(config).eval()
    save_folder(model, gpt2, tmp_path / "model")
    text = "The grass is green. The sky is blue. " * 40
    (tmp_path / "text.txt").write_text(text)
    args = ["evaluate", "--checkpoint", tmp_path / "model", "--data.path", tmp_path / "text.txt"]
    code, out, err = run_main(*args, "--by_position")
    assert code == 0, err
    tokens = document_tokens(gpt2, [text])[0]
    assert json.loads(out)["by_position"] == pytest.approx(loss_by_position(model, tokens), rel=1e-6)

    scaling = "{type: linear, factor: 2, original_block_size: 16}"
    code, out, err = run_main(*args, "--model.config.block_size", "32", "--model.config.rope_scaling", scaling)
    assert code == 0, err
    extended = GPT(config.replace(block_size=32, rope_scaling=dict(type="linear", factor=2, original_block_size=16)))
    extended.load_state_dict(model.state_dict())
    expected = evaluate_documents(extended.eval(), gpt2, [text], stride=16)
    assert json.loads(out)["block_size"] == 32 and json.loads(out)["loss"] == pytest.approx(expected.loss, rel=1e-6)

    passkey = ["--passkey", "--passkey.lengths", "64", "--passkey.depths", "0,1", "--passkey.trials", "2"]
    code, out, err = run_main(*args[:3], "--model.config.block_size", "64", *passkey)
    assert code == 0, err
    model.config = config.replace(block_size=64)
    model.reset_rope_cache()
    assert json.loads(out)["passkey"] == passkey_retrieval(model, gpt2, [64], [0.0, 1.0], trials=2)

    yarn = "{type: yarn, factor: 2, original_block_size: 16}"
    bad = [
        (["--model.config.rope_scaling", "{type: linear, factor: 0.5, original_block_size: 16}"], "factor must be"),
        (["--model.config.block_size", "64", "--model.config.rope_scaling", yarn], "exceeds what yarn scaling"),
        (["--model.config.rope_scaling", "[yarn]"], "must be a mapping or None"),
        (["--model.config.rope_scaling", "{type: [yarn"], "is not YAML"),
    ]
    for flags, message in bad:
        code, _, err = run_main(*args, *flags)
        assert code == 2 and len(errors(err)) == 1 and message in errors(err)[0], (flags, err)
    code, _, err = run_main(*args[:3], "--by_position", "--passkey")
    assert code == 2 and "--by_position scores a text" in err


# ---------------------------------------------------------------------------------------------------------------
# A real run: configs/tiny.yaml (character-level Tiny Shakespeare)


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
    """A finished configs/tiny.yaml run: its folder and last checkpoint."""
    from lit_gpt.cli import main

    folder = tmp_path_factory.mktemp("tiny")
    main(tiny(folder))
    return folder, folder / "ckpt" / "last.ckpt"


def validation_loss(checkpoint, tokens: np.ndarray, batch_size: int = 12) -> float:
    """Lightning's validation (LitGPT.validation_step, Trainer.validate) over ``tokens`` in training's windows."""
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    from lit_gpt.train.module import LitGPT

    saved = torch.load(checkpoint, weights_only=True)
    module = LitGPT(Config(**saved["lit_gpt"]["config"]), tokenizer=saved["lit_gpt"]["tokenizer"])
    module.load_state_dict(saved["state_dict"])
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    loader = DataLoader(ValidationWindows(tokens, module.config.block_size), batch_size=batch_size)
    return trainer.validate(module, dataloaders=loader, verbose=False)[0]["val/loss"]


@pytest.mark.slow
def test_bits_per_byte_of_the_char_model_on_its_val_split(tiny_run, run_main, scalars, tmp_path):
    from lit_gpt.checkpoint import load_tokenizer
    from lit_gpt.data.prepare import load_split, read_meta

    folder, checkpoint = tiny_run
    cache = folder / "cache"
    (val,) = load_split(cache, "val", read_meta(cache))
    tokenizer = load_tokenizer(checkpoint)
    text = tokenizer.decode(val.tolist())  # the validation split's text (Tiny Shakespeare: ASCII, no end-of-text)
    (tmp_path / "val.txt").write_text(text, encoding="utf-8")
    code, out, err = run_main(
        "evaluate", "--checkpoint", checkpoint, "--data.path", tmp_path / "val.txt", "--stride", "64"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["tokens"] == len(val) and result["bytes"] == len(text.encode("utf-8"))
    # the same tokens through Lightning's validation: the text after one end-of-text token, as evaluate scores it
    val_loss = validation_loss(checkpoint, np.concatenate([[tokenizer.eot_id], val]).astype(np.int64))
    assert result["loss"] == pytest.approx(val_loss, rel=1e-5)
    expected = val_loss * result["tokens"] / result["bytes"] / math.log(2)
    assert result["bits_per_byte"] == pytest.approx(expected, rel=1e-5)
    logged = scalars(next((folder / "runs" / "tiny").glob("version_*")))["val/loss"][-1][1]  # step 20's
    assert result["loss"] == pytest.approx(logged, rel=1e-3)  # one more target, windows shifted by one token


@pytest.mark.slow
def test_every_checkpoint_form_evaluates(tiny_run, run_main, tmp_path):
    pytest.importorskip("torchao", reason="the quantized forms need torchao: pip install -e '.[quant]'")
    _, checkpoint = tiny_run
    (tmp_path / "text.txt").write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 20)
    commands = {
        "hf": ["export", "--format", "hf"],
        "ours": ["export", "--format", "lit_gpt"],
        "int8": ["quantize", "--mode", "int8"],
        "int4": ["quantize", "--mode", "int4", "--group_size", "32"],
    }
    losses = {}
    for name, command in {"ckpt": None, **commands}.items():
        path = checkpoint if command is None else tmp_path / name
        if command is not None:
            assert run_main(command[0], "--checkpoint", checkpoint, "--out", path, *command[1:])[0] == 0
        code, out, err = run_main("evaluate", "--checkpoint", path, "--data.path", tmp_path / "text.txt")
        assert code == 0, err
        losses[name] = json.loads(out)["loss"]
    assert losses["hf"] == losses["ours"] == losses["ckpt"]
    assert losses["int8"] == pytest.approx(losses["ckpt"], rel=0.01)
    assert losses["int4"] == pytest.approx(losses["ckpt"], rel=0.05)
