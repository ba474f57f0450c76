import json
import os

import numpy as np
import pytest
import torch

from lit_gpt.data.corpus import Cleaning
from lit_gpt.data.prepare import load_split, prepare, read_meta
from lit_gpt.data.settings import Corpus
from lit_gpt.data.windows import IGNORE_INDEX, RandomWindowBatches, TrainWindows, ValidationWindows
from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.train.datamodule import TextDataModule


def load_tokens(out_dir, split, meta):
    """All tokens of a split, its shards concatenated."""
    return np.concatenate(load_split(out_dir, split, meta))


def test_shakespeare_gpt2_token_counts(shakespeare, tmp_path):
    meta = prepare(Corpus(shakespeare), "gpt2", tmp_path)
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
    meta = prepare(Corpus(shakespeare), "char", tmp_path)
    text = shakespeare.read_text()
    tok = Tokenizer.from_spec(meta["tokenizer"])
    val = load_tokens(tmp_path, "val", meta)
    assert len(val) == round(len(text) * 0.1)
    assert tok.decode(val.tolist()) == text[-len(val) :]


def test_large_vocabulary_uses_uint32(tmp_path):
    (tmp_path / "a.txt").write_text("Hello there, general Kenobi. " * 20)
    meta = prepare(Corpus(tmp_path / "a.txt"), "cl100k_base", tmp_path / "out")
    assert meta["dtype"] == "uint32"
    assert load_tokens(tmp_path / "out", "train", meta).dtype == np.uint32


def test_files_are_documents_joined_by_end_of_text(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("aaaa")
    (corpus / "sub" / "b.txt").write_text("bbbbbb")
    (corpus / "notes.md").write_text("ignored: not a .txt file")
    meta = prepare(Corpus(corpus, val_fraction=0.2, split_by="tail"), "char", tmp_path / "out")
    tokens = np.concatenate([load_tokens(tmp_path / "out", s, meta) for s in ("train", "val")])
    tok = Tokenizer.from_spec(meta["tokenizer"])
    assert tok.decode(tokens.tolist()) == "aaaa<|endoftext|>bbbbbb"
    assert [os.path.basename(s["path"]) for s in meta["sources"]] == ["a.txt", "b.txt"]
    # the same two files through a glob
    globbed = prepare(
        Corpus(str(corpus / "**" / "*.txt"), val_fraction=0.2, split_by="tail"), "char", tmp_path / "glob"
    )
    assert globbed["tokens"] == meta["tokens"]


def test_split_by_document_is_deterministic_and_keeps_documents_whole(tmp_path):
    stories = [f"Story number {i}: " + "once upon a time " * (1 + i % 7) for i in range(200)]
    (tmp_path / "stories.txt").write_text("<|endoftext|>".join(stories))
    meta = prepare(Corpus(tmp_path / "stories.txt", separator="<|endoftext|>"), "gpt2", tmp_path / "a", seed=3)
    assert meta["options"]["split_by"] == "document"  # auto: a corpus of many documents
    assert meta["documents"]["train"] + meta["documents"]["val"] == 200
    assert 5 <= meta["documents"]["val"] <= 40  # about 10% of 200
    tok = Tokenizer.from_name("gpt2")
    for split in ("train", "val"):
        texts = tok.decode(load_tokens(tmp_path / "a", split, meta).tolist()).split("<|endoftext|>")
        assert len(texts) == meta["documents"][split] and set(texts) <= set(stories)
    again = prepare(Corpus(tmp_path / "stories.txt", separator="<|endoftext|>"), "gpt2", tmp_path / "b", seed=3)
    assert again["documents"] == meta["documents"] and again["tokens"] == meta["tokens"]
    other = prepare(Corpus(tmp_path / "stories.txt", separator="<|endoftext|>"), "gpt2", tmp_path / "c", seed=4)
    assert other["tokens"] != meta["tokens"]


def test_training_windows_span_shards_but_never_cross_them(tmp_path):
    (tmp_path / "a.txt").write_text("The quick brown fox jumps over the lazy dog. " * 400)
    meta = prepare(Corpus(tmp_path / "a.txt"), "gpt2", tmp_path / "out", shard_tokens=1000)
    shards = load_split(tmp_path / "out", "train", meta)
    assert len(shards) == len(meta["shards"]["train"]) > 2 and all(len(s) <= 1000 for s in shards)
    assert len(load_split(tmp_path / "out", "val", meta)) == 1  # the validation split stays one file
    dataset = TrainWindows(shards, block_size=16)
    assert dataset.num_windows == sum(len(s) - 16 for s in shards)
    ids = np.arange(dataset.num_windows)
    x, y = dataset[ids]
    assert (x[:, 1:] == y[:, :-1]).all()
    whole = np.concatenate(shards)
    first = [0] + list(np.cumsum([len(s) for s in shards]))
    starts = [first[k] + j for k, s in enumerate(shards) for j in range(len(s) - 16)]
    assert (x[:, 0].numpy() == whole[starts]).all()


def test_cache_is_reused_and_rebuilt_when_inputs_change(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("hello world " * 50)
    out = tmp_path / "out"
    first = prepare(Corpus(src), "char", out)
    stamp = (out / "train-00000.bin").stat().st_mtime_ns
    assert prepare(Corpus(src), "char", out) == first
    assert (out / "train-00000.bin").stat().st_mtime_ns == stamp  # reused, not rewritten

    os.utime(src, ns=(1, 1))  # touched but same content: still reused
    assert prepare(Corpus(src), "char", out)["tokens"] == first["tokens"]
    assert (out / "train-00000.bin").stat().st_mtime_ns == stamp

    src.write_text("hello there " * 60)  # new content
    assert prepare(Corpus(src), "char", out)["tokens"]["train"] != first["tokens"]["train"]
    assert prepare(Corpus(src), "gpt2", out)["tokenizer"] == {"kind": "tiktoken", "name": "gpt2"}  # new tokenizer
    assert prepare(Corpus(src, val_fraction=0.5), "gpt2", out)["options"]["val_fraction"] == 0.5  # new split
    assert read_meta(out)["options"]["val_fraction"] == 0.5
    no_dedup = Cleaning(deduplicate=False)
    rebuilt = prepare(Corpus(src, val_fraction=0.5, cleaning=no_dedup), "gpt2", out)
    assert rebuilt["options"]["cleaning"]["deduplicate"] is False


def test_truncated_token_file_is_refused(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("some text " * 100)
    meta = prepare(Corpus(src), "char", tmp_path / "out")
    with open(tmp_path / "out" / "train-00000.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(ConfigError, match="delete .* to rebuild"):
        load_tokens(tmp_path / "out", "train", meta)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.txt", "corpus not found"),
        (lambda d: (d / "empty.txt").write_text("") and None or d / "empty.txt", "the corpus has no text: .*empty.txt"),
        (lambda d: (d / "bin.txt").write_bytes(b"ok\xff\xfe\x00") and None or d / "bin.txt", "looks binary"),
        (lambda d: str(d / "*.nothing"), "no files match"),
        (lambda d: d, "has no .txt or .jsonl files"),
    ],
)
def test_bad_corpus_errors(tmp_path, make, message):
    with pytest.raises(ConfigError, match=message):
        prepare(Corpus(make(tmp_path)), "char", tmp_path / "out")
    assert not (tmp_path / "out" / "meta.json").exists()


def test_unwritable_cache_dir(tmp_path):
    (tmp_path / "a.txt").write_text("abc " * 100)
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match="cannot write the token cache"):
        prepare(Corpus(tmp_path / "a.txt"), "char", tmp_path / "file" / "out")


def test_train_windows_targets_are_inputs_shifted():
    tokens = np.arange(1000, dtype=np.uint16)
    dataset = TrainWindows(tokens, block_size=8)
    starts = np.array([0, 5, dataset.num_windows - 1])
    x, y = dataset[starts]
    assert x.shape == y.shape == (3, 8) and x.dtype == y.dtype
    assert (y[:, :-1] == x[:, 1:]).all()
    assert x[2, 0].item() == 991 and y[2, -1].item() == 999  # the last window ends at the last token


def test_random_batches_are_deterministic_and_resumable():
    stream = iter(RandomWindowBatches(num_windows=10_000, batch_size=4, seed=1))
    batches = [next(stream) for _ in range(5)]
    again = iter(RandomWindowBatches(num_windows=10_000, batch_size=4, seed=1))
    assert all((a == next(again)).all() for a in batches)
    resumed = iter(RandomWindowBatches(num_windows=10_000, batch_size=4, seed=1, start_batch=3))
    assert (next(resumed) == batches[3]).all()
    assert all(((b >= 0) & (b < 10_000)).all() for b in batches)


def test_replicas_split_the_global_batch_that_one_device_would_see():
    one = iter(RandomWindowBatches(num_windows=10_000, batch_size=8, seed=1))
    halves = [
        iter(RandomWindowBatches(num_windows=10_000, batch_size=4, seed=1, rank=r, num_replicas=2)) for r in (0, 1)
    ]
    for _ in range(3):
        assert (next(one) == np.concatenate([next(h) for h in halves])).all()
    with pytest.raises(ValueError, match="rank 2 is not in"):
        RandomWindowBatches(num_windows=10, batch_size=1, seed=1, rank=2, num_replicas=2)


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
    dm = TextDataModule(path=str(shakespeare), tokenizer="char", block_size=32, batch_size=5, cache_dir=str(tmp_path))
    assert dm.vocab_size == 66
    assert dm.tokenizer_spec["kind"] == "char"
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (5, 32)
    assert (x[:, 1:] == y[:, :-1]).all()
    xv, yv = next(iter(dm.val_dataloader()))
    assert xv.shape == (5, 32)  # no val_batch_size: on a CPU, the training batch size
    assert json.loads((tmp_path / "meta.json").read_text())["tokens"]["val"] == len(dm.val_tokens[0])


@pytest.mark.parametrize(
    "device, vocab, expected",
    [
        ("cpu", 50257, 5),
        ("cpu", 66, 5),  # the training batch: larger ones were slower on a CPU
        ("cuda", 66, 40),
        ("cuda", 50257, 40),
        ("cuda", 200000, 10),
    ],
)
def test_validation_batches_are_sized_for_the_device(shakespeare, tmp_path, monkeypatch, device, vocab, expected):
    dm = TextDataModule(path=str(shakespeare), tokenizer="char", block_size=256, batch_size=5, cache_dir=str(tmp_path))
    monkeypatch.setattr(TextDataModule, "metas", lambda self: [{"vocab_size": vocab}])
    strategy = type("Strategy", (), {"root_device": torch.device(device)})()
    monkeypatch.setattr(dm, "trainer", type("Trainer", (), {"strategy": strategy})())
    # on a GPU: 2 GiB of float32 logits / (256 x vocab x 4 bytes) windows, within [5, 40]
    assert dm._val_batch_size_for_device() == expected


def test_a_given_val_batch_size_wins(shakespeare, tmp_path):
    dm = TextDataModule(
        path=str(shakespeare), tokenizer="char", block_size=256, batch_size=5, val_batch_size=7, cache_dir=str(tmp_path)
    )
    dm.val_tokens = [np.arange(3000) % 60]
    assert next(iter(dm.val_dataloader()))[0].shape == (7, 256)


def test_corpus_shorter_than_a_window(tmp_path):
    (tmp_path / "short.txt").write_text("To be, or not to be: that is the question.")
    dm = TextDataModule(
        path=str(tmp_path / "short.txt"), tokenizer="char", block_size=64, cache_dir=str(tmp_path / "c")
    )
    dm.prepare_data()
    with pytest.raises(ConfigError, match="fewer than one window of block_size"):
        dm.setup("fit")


def test_download_failure_says_where_to_put_the_file(tmp_path):
    target = tmp_path / "data" / "input.txt"
    dm = TextDataModule(path=str(target), tokenizer="char", download_url=(tmp_path / "nowhere.txt").as_uri())
    with pytest.raises(ConfigError, match="download it by hand and save it there"):
        dm.prepare_data()
    assert not target.exists()


def test_wikitext_token_counts_equal_tiktoken_on_the_whole_documents(shared_data, tmp_path):
    # shared/data/README.md: WikiText-2 train is 2,448,382 GPT-2 tokens and valid 258,659; each file is one
    # document, encoded here in ~256k-character pieces on 2 threads
    data = shared_data / "wikitext-2"
    meta = prepare(Corpus(data / "train.txt", val_path=data / "valid.txt"), "gpt2", tmp_path, num_threads=2)
    assert meta["tokens"] == {"train": 2_448_382, "val": 258_659}
    assert meta["documents"] == {"train": 1, "val": 1}


def test_jsonl_and_gzip_inputs_with_cleaning_counts(tmp_path):
    import gzip
    import json

    texts = ["Caf\u0065\u0301 au lait", "bell\x07 rings", "Caf\u00e9 au lait", "x"]
    records = [{"text": text} for text in texts]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    (tmp_path / "b.txt").write_bytes(b"broken \xff byte")
    cleaning = Cleaning(nfc=True, min_chars=2)
    meta = prepare(Corpus(tmp_path, cleaning=cleaning, split_by="tail", val_fraction=0.2), "gpt2", tmp_path / "out")
    corpus = meta["corpus"]
    assert corpus["documents_read"] == 5 and corpus["documents_kept"] == 3
    assert corpus["duplicates_removed"] == 1  # "Café au lait" twice once NFC-normalized
    assert corpus["short_removed"] == 1 and corpus["documents_nfc_changed"] == 1
    assert corpus["control_chars_removed"] == 1 and corpus["invalid_utf8_bytes_replaced"] == 1
    tok = Tokenizer.from_name("gpt2")
    text = tok.decode(np.concatenate([load_tokens(tmp_path / "out", s, meta) for s in ("train", "val")]).tolist())
    assert text == "Café au lait<|endoftext|>bell rings<|endoftext|>broken \ufffd byte"
    expected = sum(len(tok.encode(t)) for t in ("Café au lait", "bell rings", "broken \ufffd byte")) + 2
    assert meta["tokens"]["train"] + meta["tokens"]["val"] == expected


def test_corrupt_token_ids_are_refused(tmp_path):
    (tmp_path / "a.txt").write_text("some text " * 100)
    meta = prepare(Corpus(tmp_path / "a.txt"), "char", tmp_path / "out")
    shard = tmp_path / "out" / "train-00000.bin"
    tokens = np.fromfile(shard, dtype=np.uint16)
    tokens[5] = meta["vocab_size"] + 3
    tokens.tofile(shard)
    with pytest.raises(ConfigError, match=f"token id {meta['vocab_size'] + 3} >= vocab_size"):
        load_split(tmp_path / "out", "train", meta)


def test_interrupted_preparation_is_not_trusted(tmp_path, monkeypatch):
    import lit_gpt.data.prepare as prep

    (tmp_path / "a.txt").write_text("hello world " * 100)
    prepare(Corpus(tmp_path / "a.txt"), "char", tmp_path / "out")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    (tmp_path / "a.txt").write_text("hello there " * 100)  # stale: must rebuild
    monkeypatch.setattr(prep, "move_tail", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare(Corpus(tmp_path / "a.txt"), "char", tmp_path / "out")
    assert read_meta(tmp_path / "out") is None  # nothing a later run would trust
    assert not list((tmp_path / "out").glob("*.tmp"))  # and no temporary files left behind
    monkeypatch.undo()
    assert prepare(Corpus(tmp_path / "a.txt"), "char", tmp_path / "out")["tokens"]["train"] > 0


@pytest.mark.parametrize("encoding", ["gpt2", "cl100k_base"])
def test_pieces_are_cut_where_tokens_do_not_change(shared_data, monkeypatch, encoding):
    import lit_gpt.data.encode as encode

    monkeypatch.setattr(encode, "PIECE_CHARS", 64)  # cut at nearly every allowed newline
    tok = Tokenizer.from_name(encoding)
    for text, at_least in (
        ((shared_data / "wikitext-2" / "valid.txt").read_text()[:200_000], 300),
        ((shared_data / "tinyshakespeare" / "input.txt").read_text()[:200_000], 300),
        ((shared_data / "tinystories" / "valid.txt").read_text()[:200_000], 1),  # "\n\n" is never cut
    ):
        pieces = list(encode.pieces(text))
        assert len(pieces) >= at_least and "".join(pieces) == text
        assert [t for p in pieces for t in tok.encode(p)] == tok.encode(text)


def test_processes_preparing_one_folder_take_turns(shared_data, tmp_path):
    """Ranks of a multi-process run all call prepare(); the folder is built once and every rank can read it."""
    import subprocess
    import sys

    code = (
        "import sys, json; from lit_gpt.data.prepare import prepare, load_split; "
        "from lit_gpt.data.settings import Corpus; "
        "meta = prepare(Corpus(sys.argv[1], split_by='tail'), 'gpt2', sys.argv[2]); "
        "load_split(sys.argv[2], 'train', meta); print(json.dumps(meta['tokens']))"
    )
    corpus = shared_data / "wikitext-2" / "valid.txt"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(corpus), str(tmp_path / "out")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [rank.communicate(timeout=120) for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), [err for _, err in results]
    assert len({out for out, _ in results}) == 1 and '"val": 25866' in results[0][0]


# ---------------------------------------------------------------------------------------------- verification stamps


def swap_a_token(shard, keep_mtime: bool) -> None:
    """Change one token of ``shard`` to another valid id (only its checksum can tell), keeping its size and, with
    ``keep_mtime``, its modification time (a bad sector, or a tool that restores times)."""
    stat = shard.stat()
    tokens = np.fromfile(shard, dtype=np.uint16)
    tokens[5], tokens[6] = tokens[6], tokens[5] + (tokens[5] == tokens[6])
    tokens.tofile(shard)
    if keep_mtime:
        os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture
def stamped(tmp_path):
    """A prepared folder (characters) and its metadata."""
    (tmp_path / "a.txt").write_text("the quick brown fox jumps over the lazy dog " * 100)
    return tmp_path / "out", prepare(Corpus(tmp_path / "a.txt"), "char", tmp_path / "out")


@pytest.fixture
def reads(monkeypatch):
    """The shards that load_split reads in full, in order."""
    import lit_gpt.data.shards as shards

    read, check = [], shards._check
    monkeypatch.setattr(shards, "_check", lambda file, *args: read.append(file.name) or check(file, *args))
    return read


def test_preparation_stamps_every_shard_with_its_checksum(stamped):
    import hashlib

    out, meta = stamped
    assert set(meta["verified"]) == {"train-00000.bin", "val-00000.bin"}
    for name, stamp in meta["verified"].items():
        assert stamp["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
        assert stamp["bytes"] == (out / name).stat().st_size and stamp["mtime_ns"] == (out / name).stat().st_mtime_ns


def test_unchanged_shards_are_not_read_at_a_start(stamped, reads):
    out, _ = stamped
    before = np.fromfile(out / "train-00000.bin", dtype=np.uint16)
    swap_a_token(out / "train-00000.bin", keep_mtime=True)
    (train,) = load_split(out, "train", read_meta(out))  # trusted by its size and mtime: the swap goes unnoticed
    assert reads == [] and not np.array_equal(train, before)


def test_verify_reads_every_shard_and_finds_a_corruption_that_kept_size_and_mtime(stamped, reads):
    out, _ = stamped
    swap_a_token(out / "train-00000.bin", keep_mtime=True)
    with pytest.raises(ConfigError, match="SHA-256 differs from the one recorded"):
        load_split(out, "train", read_meta(out), verify=True)
    assert load_split(out, "val", read_meta(out), verify=True) and reads == ["train-00000.bin", "val-00000.bin"]


def test_a_shard_whose_mtime_changed_is_read_again(stamped, reads):
    out, _ = stamped
    swap_a_token(out / "train-00000.bin", keep_mtime=False)
    with pytest.raises(ConfigError, match=f"delete {out} to rebuild"):
        load_split(out, "train", read_meta(out))
    assert reads == ["train-00000.bin"]


def test_a_touched_but_intact_shard_is_read_once_and_stamped_again(stamped, reads):
    out, meta = stamped
    os.utime(out / "train-00000.bin", ns=(1, 1))  # e.g. the folder was copied to another machine
    load_split(out, "train", read_meta(out))
    assert read_meta(out)["verified"]["train-00000.bin"]["mtime_ns"] == 1
    load_split(out, "train", read_meta(out))
    assert reads == ["train-00000.bin"]  # the first start only


def test_data_verify_true_finds_what_a_start_does_not_read(tmp_path):
    (tmp_path / "a.txt").write_text("the quick brown fox jumps over the lazy dog " * 100)
    options = dict(path=str(tmp_path / "a.txt"), tokenizer="char", block_size=16, cache_dir=str(tmp_path / "out"))
    TextDataModule(**options).setup("fit")
    swap_a_token(tmp_path / "out" / "train-00000.bin", keep_mtime=True)
    TextDataModule(**options).setup("fit")  # size and mtime as stamped: trusted
    with pytest.raises(ConfigError, match="SHA-256 differs"):
        TextDataModule(**options, verify=True).setup("fit")
