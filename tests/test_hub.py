"""Hugging Face hub ids (``lit_gpt.hub``) for ``--data.tokenizer``, ``--checkpoint`` and ``--model.init_weights``,
resolved in a cache laid out as ``huggingface_hub`` lays it out (``models--org--name/refs/main`` naming
``snapshots/<revision>/``). No test reaches the network: the hub endpoint is a closed local port, as on a machine
without one, or ``HF_HUB_OFFLINE`` is set."""

from __future__ import annotations

import shutil

import pytest
import torch

from lit_gpt import hub
from lit_gpt.checkpoint import load_checkpoint
from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.formats.hf_folder import save_hf
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.train.module import load_pretrained

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, hf_folder):
    """A cache holding ``org/tiny``: a 1-layer Llama with the Llama 3-format tokenizer; the hub unreachable."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny"
    snapshot = repo / "snapshots" / REVISION
    shutil.copytree(hf_folder("llama3"), snapshot)
    tok = Tokenizer.from_name(str(snapshot))
    save_hf(GPT(Config(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)), tok, snapshot)
    (snapshot / "config.json").write_text((snapshot / "config.json").read_text().replace('"lit_gpt"', '"other"'))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # connection refused
    return snapshot


def test_hub_ids_resolve_from_the_cache(hub_cache):
    tok = Tokenizer.from_name("org/tiny")
    assert tok.kind == "hf" and tok.name == "org/tiny"
    assert tok.encode("To be, or not") == Tokenizer.from_name(str(hub_cache)).encode("To be, or not")
    model, theirs = load_checkpoint("org/tiny")  # a foreign folder: its tokenizer read from its files
    assert theirs.spec == tok.spec and model.config.vocab_size == tok.vocab_size
    config = model.config
    trained, _ = load_pretrained("org/tiny", config, tok.spec, None)  # --model.init_weights org/tiny
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), model.state_dict().values()))
    assert hub.display_name(hub_cache) == "org/tiny"


def test_offline_mode_resolves_from_the_cache(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert Tokenizer.from_name("org/tiny").name == "org/tiny"
    with pytest.raises(ConfigError, match="'org/missing' is not a local path.*not in the cache.*HF_HUB_OFFLINE is set"):
        Tokenizer.from_name("org/missing")


@pytest.mark.parametrize(
    "command",
    [
        ["prepare", "--data.path", "{text}", "--data.tokenizer", "org/missing", "--data.cache_dir", "{tmp}/c"],
        ["generate", "--checkpoint", "org/missing", "--max_new_tokens", "1"],
        ["export", "--checkpoint", "org/missing", "--out", "{tmp}/out"],
    ],
)
def test_without_network_an_uncached_id_is_one_error_line(hub_cache, tmp_path, run_main, errors, command):
    (tmp_path / "a.txt").write_text("some text\n" * 20)
    code, _, err = run_main(
        *(a.replace("{text}", str(tmp_path / "a.txt")).replace("{tmp}", str(tmp_path)) for a in command)
    )
    lines = errors(err)
    assert code == 2 and len(lines) == 1, err
    assert "'org/missing'" in lines[0] and "the hub cannot be reached (no network)" in lines[0]


def test_an_existing_relative_path_is_never_a_hub_id(hub_cache, tmp_path, monkeypatch):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("an existing path must not reach huggingface_hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(hub_cache, tmp_path / "data" / "foo")
    assert not hub.is_hub_id("data/foo") and hub.is_hub_id("data/bar")
    assert Tokenizer.from_name("data/foo").name == "foo"
    assert load_checkpoint("data/foo")[1].name == "foo"
    for not_an_id in ("./data/bar", "/abs/path", "~/x/y", "a/b/c", "../x", "x"):
        assert not hub.is_hub_id(not_an_id)
