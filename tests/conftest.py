"""Shared fixtures and helpers: tiny configs, an in-process byte-level tokenizer, the real corpora in ../shared/data,
and the flags that run ``configs/tiny.yaml`` with every file under a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tiktoken
import torch

from lit_gpt.config import Config
from lit_gpt.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIT_GPT_SHARED_DATA", REPO.parent / "shared" / "data"))
TINY_CONFIG = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="session", autouse=True)
def _offline_tiktoken():
    """Point tiktoken at the offline cache of gpt2 / r50k_base / cl100k_base files (never the network)."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))


@pytest.fixture(autouse=True)
def _seed_and_dtype():
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root (configs/, lit_gpt/, tests/)."""
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (Tiny Shakespeare, WikiText-2, TinyStories, the tiktoken cache)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    path = SHARED_DATA / "tinyshakespeare" / "input.txt"
    assert path.is_file(), f"Tiny Shakespeare not found at {path}; set LIT_GPT_SHARED_DATA to the shared data folder"
    return path


@pytest.fixture
def tiny_config() -> Config:
    return Config(vocab_size=96, block_size=16, n_layer=2, n_head=4, n_embd=32)


@pytest.fixture(scope="session")
def char_tokenizer() -> Callable[..., Tokenizer]:
    """``char_tokenizer(vocab_size=99)``: a character tokenizer of ``vocab_size - 1`` printable characters plus
    end-of-text (id ``vocab_size - 1``), for models with that vocabulary and no corpus."""
    return lambda vocab_size=99: Tokenizer(chars=[chr(33 + i) for i in range(vocab_size - 1)])


@pytest.fixture
def byte_encoding() -> tiktoken.Encoding:
    """A byte-level BPE with no merges: 256 byte tokens plus <|endoftext|> (id 256), built in-process."""
    return tiktoken.Encoding(
        name="bytes",
        pat_str=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|endoftext|>": 256},
    )


def tiny_args(shakespeare: Path, folder: Path, *extra, command: str = "fit") -> list[str]:
    """``lit-gpt COMMAND`` arguments for configs/tiny.yaml on Tiny Shakespeare, with the token cache under
    ``folder/cache``, TensorBoard runs under ``folder/runs`` and checkpoints under ``folder/ckpt``."""
    return [
        command,
        "--config",
        str(TINY_CONFIG),
        "--data.path",
        str(shakespeare),
        "--data.cache_dir",
        str(folder / "cache"),
        "--trainer.logger.init_args.save_dir",
        str(folder / "runs"),
        "--checkpoint.dirpath",
        str(folder / "ckpt"),
        *map(str, extra),
    ]


@pytest.fixture(scope="session")
def tiny(shakespeare: Path) -> Callable[..., list[str]]:
    """``tiny(folder, *extra, command="fit")``: the arguments of a configs/tiny.yaml run with every file under
    ``folder`` (for module-scoped runs; ``fit_args`` is the same under ``tmp_path``)."""
    return lambda folder, *extra, command="fit": tiny_args(shakespeare, folder, *extra, command=command)


@pytest.fixture
def fit_args(shakespeare: Path, tmp_path: Path) -> Callable[..., list[str]]:
    """``fit_args(*extra, command="fit")``: the arguments of a configs/tiny.yaml run (20 steps, seconds on a CPU)
    with every file under ``tmp_path``; ``extra`` flags override the config."""
    return lambda *extra, command="fit": tiny_args(shakespeare, tmp_path, *extra, command=command)


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard holds for a run folder: tag -> [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="session")
def scalars() -> Callable[[Path], dict[str, list[tuple[int, float]]]]:
    """``scalars(run_dir)``: tag -> [(step, value), ...] from a TensorBoard run folder."""
    return read_scalars


def run_lit_gpt(*args, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m lit_gpt.cli ARGS`` in a fresh process; its output as text."""
    command = [sys.executable, "-m", "lit_gpt.cli", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli(*args, cwd=REPO, timeout=300)``: ``python -m lit_gpt.cli ARGS`` in a fresh process."""
    return run_lit_gpt


@pytest.fixture
def run_main(capsys) -> Callable[..., tuple[int, str, str]]:
    """``run_main(*args)``: ``lit-gpt ARGS`` in this process (``lit_gpt.cli.main``); returns (exit status,
    standard output, standard error). Faster than ``run_cli`` where a fresh process is not the point."""
    from lit_gpt.cli import main

    def run(*args) -> tuple[int, str, str]:
        capsys.readouterr()  # start from empty buffers
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that start with ``error:``."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="session")
def errors() -> Callable[[str], list[str]]:
    """``errors(stderr)``: the ``error:`` lines of a command's standard error."""
    return error_lines


def _added(content: str) -> dict:
    """An ``AddedToken`` entry as Llama 2's ``tokenizer_config.json`` writes its special tokens."""
    flags = dict.fromkeys(("lstrip", "normalized", "rstrip", "single_word"), False)
    return {"__type": "AddedToken", "content": content, **flags}


LLAMA2_TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": _added("<s>"),
    "clean_up_tokenization_spaces": False,
    "eos_token": _added("</s>"),
    "legacy": False,
    "model_max_length": 1000000000000000019884624838656,
    "pad_token": None,
    "padding_side": "right",
    "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": _added("<unk>"),
}
"""meta-llama/Llama-2-7b-hf's ``tokenizer_config.json`` (the Hugging Face hub), as written beside its tokenizer.model."""
LLAMA2_GENERATION_CONFIG = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
"""The token ids of meta-llama/Llama-2-7b-hf's ``generation_config.json``."""
TINYLLAMA_TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "clean_up_tokenization_spaces": False,
    "eos_token": "</s>",
    "legacy": False,
    "model_max_length": 2048,
    "pad_token": "</s>",
    "padding_side": "right",
    "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": "<unk>",
    "use_default_system_prompt": False,
}
"""TinyLlama/TinyLlama-1.1B-Chat-v1.0's ``tokenizer_config.json`` without its ``added_tokens_decoder`` (the same three
tokens as the model's own) and with its chat template read from tests/data/chat_templates; it uses Llama 2's
tokenizer.model."""


@pytest.fixture(scope="session")
def hf_folder(tmp_path_factory, shakespeare) -> Callable[[str], Path]:
    """``hf_folder(name)``: a Hugging Face tokenizer folder, built once per session. ``llama3``, ``qwen2`` and
    ``smollm2`` are byte-level BPEs in those models' formats trained on Tiny Shakespeare (``tests/hf_formats.py``);
    ``llama2`` and ``tinyllama`` hold the real Llama 2 SentencePiece model of the shared data with those models'
    configs (skipped without the shared file or the ``sentencepiece`` extra)."""
    import json
    import shutil

    from hf_formats import TEMPLATES, build_folder

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            out = tmp_path_factory.mktemp(name)
            if name in ("llama2", "tinyllama"):
                pytest.importorskip("sentencepiece", reason="the sentencepiece extra is not installed")
                model = SHARED_DATA / "tokenizers" / "llama2" / "tokenizer.model"
                if not model.is_file():
                    pytest.skip(f"{model} not found")
                shutil.copy(model, out / "tokenizer.model")
                config = dict(LLAMA2_TOKENIZER_CONFIG)
                if name == "tinyllama":
                    template = (TEMPLATES / "TinyLlama-TinyLlama-1.1B-Chat-v1.0.jinja").read_text(encoding="utf-8")
                    config = {**TINYLLAMA_TOKENIZER_CONFIG, "chat_template": template}
                (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
                (out / "generation_config.json").write_text(json.dumps(LLAMA2_GENERATION_CONFIG), encoding="utf-8")
            else:
                build_folder(name, [shakespeare.read_text(encoding="utf-8")[:300_000]], out)
            built[name] = out
        return built[name]

    return get
