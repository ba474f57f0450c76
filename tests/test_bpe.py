"""lit_gpt.bpe: a byte-level BPE trained on TinyStories, checked against tiktoken, tokenizers and lit_gpt's pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiktoken

from lit_gpt import tokenizer as bpe_files
from lit_gpt.cli.train_tokenizer import main as train_tokenizer
from lit_gpt.data import bpe
from lit_gpt.data.prepare import load_split, prepare
from lit_gpt.data.settings import Corpus
from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import Tokenizer

# as in conftest.py, which holds no TinyStories fixture
SHARED_DATA = Path(os.environ.get("LIT_GPT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TINYSTORIES = SHARED_DATA / "tinystories"
VOCAB_SIZE = 2000
UNICODE = "naïve café — ünïcödé ✓ 日本語 🙂\r\n\ttabs  and   spaces\u00a0nbsp 12345 it's THEY'LL"


@pytest.fixture(scope="module")
def train_text() -> str:
    return (TINYSTORIES / "train.txt").read_text(encoding="utf-8")  # 2.3 MB: trains in ~0.5 s on 2 cores


@pytest.fixture(scope="module")
def valid_text() -> str:
    return (TINYSTORIES / "valid.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hf_bpe(train_text):
    return bpe.train_hf_bpe([train_text], VOCAB_SIZE)


@pytest.fixture(scope="module")
def encoding(train_text) -> tiktoken.Encoding:
    return bpe.train_bpe([train_text], VOCAB_SIZE, name="tinystories-2k")


@pytest.fixture
def folder(encoding, tmp_path):
    return bpe_files.save_bpe(encoding, tmp_path / "bpe")


def test_trained_vocabulary(encoding):
    assert encoding.n_vocab == VOCAB_SIZE and encoding.eot_token == VOCAB_SIZE - 1
    assert encoding.name == "tinystories-2k"
    ranks = encoding._mergeable_ranks
    assert sorted(ranks.values()) == list(range(VOCAB_SIZE - 1))
    assert all(ranks[bytes([b])] < 256 for b in range(256))  # every byte is a token, before any merge
    assert max(len(token) for token in ranks) > 5  # merges built whole words (" happy", " friends", ...)


def test_round_trips_all_of_tinystories_valid(encoding, valid_text):
    ids = encoding.encode_ordinary(valid_text)
    assert encoding.decode(ids) == valid_text
    assert encoding.decode(encoding.encode_ordinary(UNICODE)) == UNICODE  # bytes never seen in training too


def test_tiktoken_gives_the_tokenizers_library_ids(encoding, hf_bpe, valid_text):
    # training is deterministic, and the conversion keeps the trainer's ids
    assert bpe.encoding_from_hf(hf_bpe)._mergeable_ranks == encoding._mergeable_ranks
    stories = valid_text.split("\n\n")
    sample = stories[::20] + [UNICODE, " leading space", "trailing space ", "\n\n\nOnce", "a  \n  b"]
    assert len(sample) > 100
    for text in sample:
        assert encoding.encode_ordinary(text) == hf_bpe.encode(text).ids, text
    assert hf_bpe.token_to_id("<|endoftext|>") == encoding.eot_token


def test_compression_beats_characters(encoding, valid_text):
    ours = bpe.bytes_per_token(encoding, valid_text)
    gpt2 = bpe.bytes_per_token(Tokenizer.from_name("gpt2").encoding, valid_text)
    # measured: 3.60 for this 2,000-token BPE, 4.06 for GPT-2's 50,257 tokens (a char tokenizer gives ~1.0)
    assert 3.0 < ours < gpt2 < 4.5
    with pytest.raises(ConfigError, match="empty"):
        bpe.bytes_per_token(encoding, "")


def test_saved_folder_loads_in_tiktoken_and_lit_gpt(encoding, folder, valid_text, monkeypatch):
    assert json.loads((folder / "tokenizer.json").read_text()) == {
        "format": "lit_gpt-bpe",
        "version": 1,
        "name": "tinystories-2k",
        "pat_str": bpe_files.GPT2_PAT_STR,
        "special_tokens": {"<|endoftext|>": VOCAB_SIZE - 1},
    }
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken would otherwise cache the file by its path
    assert tiktoken.load.load_tiktoken_bpe(str(folder / "tokenizer.tiktoken")) == encoding._mergeable_ranks
    tok = Tokenizer.from_name(str(folder))
    assert (tok.kind, tok.name, tok.vocab_size, tok.eot_id) == ("bpe", "tinystories-2k", VOCAB_SIZE, VOCAB_SIZE - 1)
    text = valid_text[:50_000]
    assert tok.encode(text) == encoding.encode_ordinary(text)
    assert tok.decode(tok.encode(text)) == text


def test_spec_rebuilds_without_the_folder(folder, valid_text):
    tok = Tokenizer.from_name(str(folder))
    spec = json.loads(json.dumps(tok.spec))  # as stored in meta.json and checkpoints
    assert spec["kind"] == "bpe" and spec["ranks"] == (folder / "tokenizer.tiktoken").read_text()
    shutil.rmtree(folder)
    rebuilt = Tokenizer.from_spec(spec)
    text = valid_text[:50_000] + UNICODE
    assert rebuilt.encode(text) == tok.encode(text)
    assert (rebuilt.kind, rebuilt.vocab_size, rebuilt.eot_id, rebuilt.spec) == ("bpe", 2000, 1999, tok.spec)


def test_prepare_with_a_bpe_folder(folder, valid_text, tmp_path):
    corpus = tmp_path / "stories.txt"
    text = valid_text[:100_000]
    corpus.write_text(text, encoding="utf-8")
    meta = prepare(Corpus(corpus), str(folder), tmp_path / "prepared")
    tok = Tokenizer.from_name(str(folder))
    ids = tok.encode(text)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == VOCAB_SIZE
    assert sum(meta["tokens"].values()) == len(ids)
    stored = np.concatenate([a for s in ("train", "val") for a in load_split(tmp_path / "prepared", s, meta)])
    assert stored.tolist() == ids
    assert Tokenizer.from_spec(meta["tokenizer"]).encode(text) == ids
    assert json.loads((tmp_path / "prepared" / "meta.json").read_text())["tokenizer"] == tok.spec


def test_smallest_vocabulary_is_bytes():
    encoding = bpe.train_bpe(["hello hello hello"], 257)
    assert encoding.n_vocab == 257 and encoding.eot_token == 256
    assert bpe.bytes_per_token(encoding, "hello") == 1.0


@pytest.mark.parametrize("vocab_size", [256, 0, -5, True, 2**21, 3000.0])
def test_bad_vocab_size(vocab_size):
    with pytest.raises(ConfigError, match="vocab_size must be an integer from 257"):
        bpe.train_bpe(["some text"], vocab_size)


def test_empty_corpus():
    with pytest.raises(ConfigError, match="corpus is empty"):
        bpe.train_bpe(["", ""], 300)


def test_folder_without_files(folder, tmp_path):
    with pytest.raises(ConfigError, match="not found; train one"):
        bpe_files.load_bpe(tmp_path / "missing")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="has no tokenizer.json.*train-tokenizer"):
        Tokenizer.from_name(str(folder))
    (folder / "tokenizer.tiktoken").unlink()
    with pytest.raises(ConfigError, match="has no tokenizer.tiktoken"):
        Tokenizer.from_name(str(folder))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda text: text.replace("IQ== 0", "!!notbase64 0"), "corrupt at line 1"),
        (lambda text: text + "garbage\n", "corrupt at line 2000"),
        (lambda text: text.replace("IQ== 0\n", ""), "ranks are not 0..1997"),
        (lambda text: text[: text.index("\n", len(text) // 2) + 1], "a truncated ranks file"),
        (lambda text: text.replace("IQ== 0\n", "aGVsbG8= 0\n"), "single bytes are missing"),
        (lambda text: text[: len(text) // 2 + 3], "is corrupt"),  # truncated: a bad line or a clipped rank
    ],
)
def test_corrupt_tiktoken_file(folder, corrupt, message):
    file = folder / "tokenizer.tiktoken"
    file.write_text(corrupt(file.read_text()))
    with pytest.raises(ConfigError, match=message):
        bpe_files.load_bpe(folder)


def test_corrupt_tokenizer_json(folder):
    meta_file = folder / "tokenizer.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        bpe_files.load_bpe(folder)
    meta_file.write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(ConfigError, match="not a lit_gpt-bpe version 1 file"):
        bpe_files.load_bpe(folder)
    meta_file.write_text(json.dumps({**meta, "special_tokens": {"<|endoftext|>": 5}}))
    with pytest.raises(ConfigError, match="special token ids must be 1999 onwards"):
        bpe_files.load_bpe(folder)


def test_corrupt_spec(folder):
    spec = Tokenizer.from_name(str(folder)).spec
    with pytest.raises(ConfigError, match="the tokenizer spec is corrupt"):
        Tokenizer.from_spec({**spec, "ranks": "nonsense"})
    with pytest.raises(ConfigError, match="the tokenizer spec is corrupt"):
        Tokenizer.from_spec({**spec, "pat_str": None})


def test_main_trains_saves_and_prints_compression(tmp_path, train_text, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(train_text[:200_000], encoding="utf-8")
    (corpus / "b.txt").write_bytes(train_text[200_000:300_000].encode("utf-8") + b"\xff bad byte\n")
    out = tmp_path / "tok"
    train_tokenizer(
        ["train-tokenizer", "--data.path", str(corpus), "--vocab_size", "500", "--out", str(out), "--name", "mine"]
    )
    printed = capsys.readouterr().out
    assert "trained a byte-level BPE of 500 tokens" in printed
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if "bytes/token" in line)
    ours, gpt2 = lines[header + 1].split(), lines[header + 2].split()
    assert ours[:2] == ["mine", "500"] and gpt2[:2] == ["gpt2", "50257"]
    assert 1.0 < float(ours[-1]) < float(gpt2[-1])
    tok = Tokenizer.from_name(str(out))
    assert tok.vocab_size == 500 and tok.name == "mine"
    assert tok.decode(tok.encode("Once upon a time \ufffd")) == "Once upon a time \ufffd"

    valid = TINYSTORIES / "valid.txt"
    train_tokenizer(
        [
            "train-tokenizer",
            "--data.path",
            str(corpus / "a.txt"),
            "--vocab_size",
            "300",
            "--out",
            str(out),
            "--val_path",
            str(valid),
        ]
    )
    assert "compression on 794,375 bytes" in capsys.readouterr().out
    assert Tokenizer.from_name(str(out)).vocab_size == 300  # retrained in place, and not served from a cache


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vocab_size", "500", "--out", "x"], "the following arguments are required: --data.path"),
        (["--data.path", "nowhere.txt", "--vocab_size", "500", "--out", "x"], "corpus not found"),
        (["--data.path", "a.txt", "--vocab_size", "100", "--out", "x"], "vocab_size must be"),
        (["--data.path", "a.txt", "--vocab_size", "500", "--out", "x", "--val_fraction", "1"], "--val_fraction"),
        (["--data.path", "a.txt", "--vocab_size", "many", "--out", "x"], "invalid int value"),
    ],
)
def test_main_bad_arguments(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("hello world\n")
    with pytest.raises(ConfigError, match=message):
        train_tokenizer(["train-tokenizer", *args])
    assert not (tmp_path / "x").exists()


def test_import_needs_neither_lightning_nor_tokenizers():
    code = "import sys, lit_gpt.data.bpe; print(sorted({'lightning', 'tokenizers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


@pytest.mark.slow
def test_a_model_trains_and_samples_with_a_trained_bpe(folder, shared_data, fit_args, run_cli, tmp_path):
    """The whole path: `lit-gpt fit` on TinyStories with the BPE folder, then `lit-gpt generate` without it."""
    from lit_gpt.cli import main

    bpe_dir = tmp_path / "bpe-copy"
    shutil.copytree(folder, bpe_dir)
    main(
        fit_args(
            "--data.path",
            shared_data / "tinystories" / "valid.txt",
            "--data.tokenizer",
            bpe_dir,
            "--trainer.max_steps",
            "10",
            "--trainer.limit_val_batches",
            "5",
        )
    )
    shutil.rmtree(bpe_dir)  # the checkpoint carries the whole vocabulary
    result = run_cli(
        "generate",
        "--checkpoint",
        tmp_path / "ckpt" / "last.ckpt",
        "--prompt",
        "Once upon a time",
        "--max_new_tokens",
        "20",
        "--seed",
        "0",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time") and len(result.stdout) > len("Once upon a time") + 5
