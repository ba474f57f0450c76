"""Shared fixtures: tiny configs, an in-process byte-level tokenizer, and the real corpora in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tiktoken
import torch

from lit_gpt.config import Config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIT_GPT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _offline_tiktoken():
    """Point tiktoken at the offline cache of gpt2 / r50k_base / cl100k_base files (never the network)."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))


@pytest.fixture(autouse=True)
def _seed_and_dtype():
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder (Tiny Shakespeare, WikiText-2, TinyStories, the tiktoken cache)."""
    return SHARED_DATA


@pytest.fixture
def shakespeare() -> Path:
    path = SHARED_DATA / "tinyshakespeare" / "input.txt"
    assert path.is_file(), f"Tiny Shakespeare not found at {path}; set LIT_GPT_SHARED_DATA to the shared data folder"
    return path


@pytest.fixture
def tiny_config() -> Config:
    return Config(vocab_size=96, block_size=16, n_layer=2, n_head=4, n_embd=32)


@pytest.fixture
def byte_encoding() -> tiktoken.Encoding:
    """A byte-level BPE with no merges: 256 byte tokens plus <|endoftext|> (id 256), built in-process."""
    return tiktoken.Encoding(
        name="bytes",
        pat_str=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|endoftext|>": 256},
    )
