"""Optional extras (peft, torchao, lm-eval, gguf) that are not installed: each feature stops with one ConfigError naming
its install command. The packages are hidden from ``lit_gpt.extras.require``, so these run with or without them."""

from __future__ import annotations

import importlib
import re

import pytest

from lit_gpt.checkpoint import save_folder
from lit_gpt.config import Config, ConfigError
from lit_gpt.extras import require
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

CONFIG = Config(vocab_size=99, block_size=16, n_layer=1, n_head=2, n_embd=32)


@pytest.fixture
def without(monkeypatch):
    """``without("peft", ...)``: importing those packages fails as if they were not installed."""

    def hide(*packages: str) -> None:
        real = importlib.import_module

        def import_module(name: str, *args):
            if name.split(".")[0] in packages:
                raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}", name=name.split(".")[0])
            return real(name, *args)

        monkeypatch.setattr("lit_gpt.extras.importlib.import_module", import_module)

    return hide


def test_a_missing_package_names_its_extra():
    with pytest.raises(
        ConfigError,
        match=r"^quantization needs the optional package no_such_package: pip install -e "
        r'"\.\[quant\]"$',
    ):
        require("no_such_package.sub", "quant", "quantization")


def test_lora_without_peft(without):
    from lit_gpt.lora import LoRA, add_adapters

    without("peft")
    with pytest.raises(ConfigError, match=r'^LoRA needs the optional package peft: pip install -e "\.\[lora\]"$'):
        add_adapters(GPT(CONFIG), LoRA())


def test_quantize_without_torchao(without, run_main, errors, tmp_path):
    without("torchao")
    save_folder(GPT(CONFIG), Tokenizer(chars=[chr(33 + i) for i in range(98)]), tmp_path)
    code, _, err = run_main("generate", "--checkpoint", tmp_path, "--quantize", "int8", "--max_new_tokens", "2")
    assert code == 2
    assert errors(err) == ['error: quantization needs the optional package torchao: pip install -e ".[quant]"']


def test_lm_eval_adapter_without_lm_eval(without):
    from lit_gpt.lm_eval_adapter import LitGPTLM

    without("lm_eval")
    with pytest.raises(ConfigError, match=r'needs the optional package lm_eval: pip install -e "\.\[eval\]"$'):
        LitGPTLM(GPT(CONFIG), Tokenizer(chars=["a"]))


def test_sentencepiece_model_without_sentencepiece(without, tmp_path, shared_data, run_main, errors):
    model = shared_data / "tokenizers" / "llama2" / "tokenizer.model"
    if not model.is_file():
        pytest.skip(f"{model} not found")
    (tmp_path / "llama2").mkdir()
    (tmp_path / "llama2" / "tokenizer.model").write_bytes(model.read_bytes())
    without("sentencepiece")
    message = (
        'a SentencePiece tokenizer.model needs the optional package sentencepiece: pip install -e ".[sentencepiece]"'
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        Tokenizer.from_name(str(tmp_path / "llama2"))
    (tmp_path / "a.txt").write_text("some text\n" * 20)
    flags = ["--data.path", tmp_path / "a.txt", "--data.tokenizer", tmp_path / "llama2", "--data.cache_dir", tmp_path]
    code, _, err = run_main("prepare", *flags)
    assert code == 2 and errors(err) == [f"error: {message}"]


def test_gguf_export_without_gguf(without, run_main, errors, tmp_path):
    without("gguf")
    save_folder(GPT(CONFIG), Tokenizer(chars=[chr(33 + i) for i in range(98)]), tmp_path / "ours")
    code, _, err = run_main(
        "export", "--checkpoint", tmp_path / "ours", "--out", tmp_path / "m.gguf", "--format", "gguf"
    )
    assert code == 2
    assert errors(err) == ['error: GGUF export needs the optional package gguf: pip install -e ".[gguf]"']
    assert not (tmp_path / "m.gguf").exists()
