"""Mixtures of corpora on memory-mapped shards: configuration, the weighted draw, the realised shares, resuming, and
per-corpus validation in TensorBoard."""

from __future__ import annotations

import numpy as np
import pytest

from lit_gpt.data.mixture import mixture_weights
from lit_gpt.data.settings import Corpus
from lit_gpt.data.windows import MixtureWindowBatches
from lit_gpt.errors import ConfigError
from lit_gpt.train.datamodule import TextDataModule


@pytest.fixture(scope="module")
def two_corpora(shared_data, tmp_path_factory):
    """100 KB of Tiny Shakespeare and of TinyStories (validation file) as two small corpora, and a folder for their
    caches."""
    folder = tmp_path_factory.mktemp("two")
    (folder / "shakespeare.txt").write_bytes((shared_data / "tinyshakespeare" / "input.txt").read_bytes()[:100_000])
    (folder / "stories.txt").write_bytes((shared_data / "tinystories" / "valid.txt").read_bytes()[:100_000])
    return folder


def mixture(folder, weights=(0.7, 0.3)) -> list[Corpus]:
    return [
        Corpus(name="stories", path=str(folder / "stories.txt"), weight=weights[0], cache_dir=str(folder / "c1")),
        Corpus(
            name="shakespeare", path=str(folder / "shakespeare.txt"), weight=weights[1], cache_dir=str(folder / "c2")
        ),
    ]


def test_weights_are_normalised_and_checked():
    corpora = [Corpus(name="a", path="x", weight=7), Corpus(name="b", path="y", weight=3)]
    assert mixture_weights(corpora).tolist() == [0.7, 0.3]
    for bad, message in [
        ([Corpus(name="a", path="x", weight=0)], "positive numbers"),
        ([Corpus(name="a", path="x"), Corpus(name="a", path="y")], "must differ"),
        ([Corpus(name="a/b", path="x")], "letters, digits"),
        ([], "is empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            mixture_weights(bad)


@pytest.mark.parametrize("weights", [(0.7, 0.3), (0.5, 0.25, 0.25)])
def test_realised_shares_over_1000_batches_are_within_2_percent_of_the_weights(weights):
    sizes = [100_000, 3_000, 50_000][: len(weights)]  # a corpus's share does not depend on its size
    sampler = MixtureWindowBatches(sizes, np.array(weights), batch_size=12, seed=1337)
    stream = iter(sampler)
    ids = np.concatenate([next(stream) for _ in range(1000)])
    corpus = np.searchsorted(sampler.first, ids, side="right") - 1
    shares = np.bincount(corpus, minlength=len(weights)) / len(ids)
    assert np.abs(shares - np.array(weights)).max() < 0.02, shares
    assert all(((ids[corpus == k] - sampler.first[k]) < sizes[k]).all() for k in range(len(weights)))


def test_mixture_batches_are_resumable_and_split_between_replicas():
    one = MixtureWindowBatches([1000, 50], np.array([0.5, 0.5]), batch_size=8, seed=1)
    batches = [b for _, b in zip(range(5), iter(one))]
    resumed = iter(MixtureWindowBatches([1000, 50], np.array([0.5, 0.5]), batch_size=8, seed=1, start_batch=3))
    assert (next(resumed) == batches[3]).all()
    halves = [
        iter(MixtureWindowBatches([1000, 50], np.array([0.5, 0.5]), 4, 1, rank=r, num_replicas=2)) for r in (0, 1)
    ]
    assert all((np.concatenate([next(h) for h in halves]) == b).all() for b in batches)


def test_the_data_module_prepares_each_corpus_and_serves_one_validation_loader_each(two_corpora):
    dm = TextDataModule(tokenizer="gpt2", block_size=32, batch_size=6, mixture=mixture(two_corpora))
    dm.setup("fit")
    assert dm.val_corpora == [("stories", 0.7), ("shakespeare", 0.3)]
    assert len(dm.val_dataloader()) == 2 and len(dm.val_tokens) == 2
    assert [meta["options"]["val_fraction"] for meta in dm.metas()] == [0.1, 0.1]
    assert (two_corpora / "c1" / "meta.json").is_file() and (two_corpora / "c2" / "meta.json").is_file()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (6, 32)


def test_corpora_tokenized_differently_are_refused(two_corpora):
    with pytest.raises(ConfigError, match="a 'char' vocabulary is built per corpus"):
        TextDataModule(tokenizer="char", block_size=32, mixture=mixture(two_corpora))
    dm = TextDataModule(tokenizer="gpt2", block_size=32, mixture=mixture(two_corpora))
    dm._metas = [
        {**meta, "tokenizer_name": name, "tokenizer": {"kind": name}}
        for meta, name in zip(dm.metas(), ("gpt2", "r50k_base"))
    ]
    with pytest.raises(ConfigError, match="must share one tokenizer, got stories: gpt2, shakespeare: r50k_base"):
        dm.vocab_size


@pytest.mark.slow
def test_validation_logs_each_corpus_and_their_weighted_sum(two_corpora, tiny, scalars, tmp_path):
    from lit_gpt.cli import main

    mix = '[{"name": "stories", "path": "%s", "weight": 0.7}, {"name": "shakespeare", "path": "%s", "weight": 0.3}]' % (
        two_corpora / "stories.txt",
        two_corpora / "shakespeare.txt",
    )
    main(
        tiny(
            tmp_path,
            "--data.tokenizer",
            "gpt2",
            "--data.mixture",
            mix,
            "--samples.max_new_tokens",
            "0",
            "--trainer.max_steps",
            "10",
        )
    )
    logged = scalars(tmp_path / "runs" / "tiny" / "version_0")
    assert {"val/loss/stories", "val/loss/shakespeare", "val/loss", "val/ppl"} <= set(logged)
    (_, stories), (_, plays), (_, total) = (logged[f"val/loss{k}"][-1] for k in ("/stories", "/shakespeare", ""))
    assert total == pytest.approx(0.7 * stories + 0.3 * plays, rel=1e-6)
    assert not [tag for tag in logged if "dataloader_idx" in tag]
