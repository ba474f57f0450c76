import json
import os

import numpy as np
import pytest

from lit_gpt.config import ConfigError
from lit_gpt.data import IGNORE_INDEX, RandomWindowBatches, TextDataModule, TrainWindows, ValidationWindows
from lit_gpt.prepare import load_tokens, prepare, read_meta
from lit_gpt.tokenizer import Tokenizer


def test_shakespeare_gpt2_token_counts(shakespeare, tmp_path):
    meta = prepare(shakespeare, "gpt2", tmp_path)
    # shared/data/README.md: Tiny Shakespeare is 338,025 GPT-2 tokens
    assert meta["tokens"]["train"] + meta["tokens"]["val"] == 338_025
    assert meta["tokens"]["val"] == round(338_025 * 0.1)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 50257
    train, val = load_tokens(tmp_path, "train", meta), load_tokens(tmp_path, "val", meta)
    tok = Tokenizer.from_name("gpt2")
    text = shakespeare.read_text()
    assert train[:50].tolist() == tok.encode(text[:200])[:50]
    assert tok.decode(val[-20:].tolist()) == tok.decode(tok.encode(text)[-20:])


def test_char_split_is_the_last_tenth(shakespeare, tmp_path):
    meta = prepare(shakespeare, "char", tmp_path)
    text = shakespeare.read_text()
    tok = Tokenizer.from_spec(meta["tokenizer"])
    val = load_tokens(tmp_path, "val", meta)
    assert len(val) == round(len(text) * 0.1)
    assert tok.decode(val.tolist()) == text[-len(val) :]


def test_large_vocabulary_uses_uint32(tmp_path):
    (tmp_path / "a.txt").write_text("Hello there, general Kenobi. " * 20)
    meta = prepare(tmp_path / "a.txt", "cl100k_base", tmp_path / "out")
    assert meta["dtype"] == "uint32"
    assert load_tokens(tmp_path / "out", "train", meta).dtype == np.uint32


def test_files_are_documents_joined_by_end_of_text(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("aaaa")
    (corpus / "sub" / "b.txt").write_text("bbbbbb")
    (corpus / "notes.md").write_text("ignored: not a .txt file")
    meta = prepare(corpus, "char", tmp_path / "out", val_fraction=0.2)
    tokens = np.concatenate([load_tokens(tmp_path / "out", s, meta) for s in ("train", "val")])
    tok = Tokenizer.from_spec(meta["tokenizer"])
    assert tok.decode(tokens.tolist()) == "aaaa<|endoftext|>bbbbbb"
    assert [os.path.basename(s["path"]) for s in meta["sources"]] == ["a.txt", "b.txt"]
    # the same two files through a glob
    globbed = prepare(str(corpus / "**" / "*.txt"), "char", tmp_path / "glob", val_fraction=0.2)
    assert globbed["tokens"] == meta["tokens"]


def test_cache_is_reused_and_rebuilt_when_inputs_change(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("hello world " * 50)
    out = tmp_path / "out"
    first = prepare(src, "char", out)
    stamp = (out / "train.bin").stat().st_mtime_ns
    assert prepare(src, "char", out) == first
    assert (out / "train.bin").stat().st_mtime_ns == stamp  # reused, not rewritten

    os.utime(src, ns=(1, 1))  # touched but same content: still reused
    assert prepare(src, "char", out)["tokens"] == first["tokens"]
    assert (out / "train.bin").stat().st_mtime_ns == stamp

    src.write_text("hello there " * 60)  # new content
    assert prepare(src, "char", out)["tokens"]["train"] != first["tokens"]["train"]
    assert prepare(src, "gpt2", out)["tokenizer"] == {"kind": "tiktoken", "name": "gpt2"}  # new tokenizer
    assert prepare(src, "gpt2", out, val_fraction=0.5)["val_fraction"] == 0.5  # new split
    assert read_meta(out)["val_fraction"] == 0.5


def test_truncated_token_file_is_refused(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("some text " * 100)
    meta = prepare(src, "char", tmp_path / "out")
    with open(tmp_path / "out" / "train.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(ConfigError, match="delete .* to rebuild"):
        load_tokens(tmp_path / "out", "train", meta)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.txt", "corpus not found"),
        (lambda d: (d / "empty.txt").write_text("") and None or d / "empty.txt", "is empty"),
        (lambda d: (d / "bin.txt").write_bytes(b"ok\xff\xfe\x00") and None or d / "bin.txt", "not UTF-8"),
        (lambda d: str(d / "*.nothing"), "no files match"),
        (lambda d: d, "has no .txt files"),
    ],
)
def test_bad_corpus_errors(tmp_path, make, message):
    with pytest.raises(ConfigError, match=message):
        prepare(make(tmp_path), "char", tmp_path / "out")
    assert not (tmp_path / "out" / "meta.json").exists()


def test_unwritable_cache_dir(tmp_path):
    (tmp_path / "a.txt").write_text("abc " * 100)
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match="cannot write the token cache"):
        prepare(tmp_path / "a.txt", "char", tmp_path / "file" / "out")


def test_train_windows_targets_are_inputs_shifted():
    tokens = np.arange(1000, dtype=np.uint16)
    dataset = TrainWindows(tokens, block_size=8)
    starts = np.array([0, 5, dataset.num_windows - 1])
    x, y = dataset[starts]
    assert x.shape == y.shape == (3, 8) and x.dtype == y.dtype
    assert (y[:, :-1] == x[:, 1:]).all()
    assert x[2, 0].item() == 991 and y[2, -1].item() == 999  # the last window ends at the last token


def test_random_batches_are_deterministic_per_rank_and_resumable():
    stream = iter(RandomWindowBatches(num_windows=10_000, batch_size=4, seed=1, rank=0))
    batches = [next(stream) for _ in range(5)]
    again = iter(RandomWindowBatches(num_windows=10_000, batch_size=4, seed=1, rank=0))
    assert all((a == next(again)).all() for a in batches)
    resumed = iter(RandomWindowBatches(num_windows=10_000, batch_size=4, seed=1, rank=0, start_batch=3))
    assert (next(resumed) == batches[3]).all()
    other_rank = iter(RandomWindowBatches(num_windows=10_000, batch_size=4, seed=1, rank=1))
    assert not (next(other_rank) == batches[0]).all()
    assert all(((b >= 0) & (b < 10_000)).all() for b in batches)


@pytest.mark.parametrize("n_tokens", [17, 33, 40, 100])
def test_validation_windows_cover_every_target_once(n_tokens):
    tokens = np.arange(n_tokens, dtype=np.uint16)
    block_size = 8
    counts = np.zeros(n_tokens, dtype=int)
    for world_size in (1, 3):
        counts[:] = 0
        for rank in range(world_size):
            dataset = ValidationWindows(tokens, block_size, rank, world_size)
            for i in range(len(dataset)):
                x, y = dataset[i]
                assert x.shape == y.shape == (block_size,)
                kept = y[y != IGNORE_INDEX]
                counts[kept.numpy()] += 1
                assert (x[1:][y[:-1] != IGNORE_INDEX] == y[:-1][y[:-1] != IGNORE_INDEX]).all()
        assert counts[0] == 0 and (counts[1:] == 1).all()


def test_datamodule_serves_windows(shakespeare, tmp_path):
    dm = TextDataModule(str(shakespeare), tokenizer="char", block_size=32, batch_size=5, cache_dir=str(tmp_path))
    assert dm.vocab_size == 66
    assert dm.tokenizer_spec["kind"] == "char"
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (5, 32)
    assert (x[:, 1:] == y[:, :-1]).all()
    xv, yv = next(iter(dm.val_dataloader()))
    assert xv.shape == (5, 32)
    assert json.loads((tmp_path / "meta.json").read_text())["tokens"]["val"] == len(dm.val_tokens)


def test_corpus_shorter_than_a_window(tmp_path):
    (tmp_path / "short.txt").write_text("To be, or not to be: that is the question.")
    dm = TextDataModule(str(tmp_path / "short.txt"), tokenizer="char", block_size=64, cache_dir=str(tmp_path / "c"))
    dm.prepare_data()
    with pytest.raises(ConfigError, match="fewer than one window of block_size"):
        dm.setup("fit")


def test_download_failure_says_where_to_put_the_file(tmp_path):
    target = tmp_path / "data" / "input.txt"
    dm = TextDataModule(str(target), tokenizer="char", download_url=(tmp_path / "nowhere.txt").as_uri())
    with pytest.raises(ConfigError, match="download it by hand and save it there"):
        dm.prepare_data()
    assert not target.exists()
