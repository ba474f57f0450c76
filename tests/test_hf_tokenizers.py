"""Hugging Face tokenizers behind ``Tokenizer`` (kind ``hf``): ids equal transformers' ``AutoTokenizer`` on the same
folder, for the real Llama 2 SentencePiece model and byte-level ``tokenizer.json`` files in the formats of Llama 3,
Qwen2 and SmolLM2 (``tests/hf_formats.py``), and GPT-2 (tiktoken) against transformers' GPT-2 tokenizer from the
offline files. The whole-corpus runs (Tiny Shakespeare, WikiText-2 valid) are marked slow; the fast ones take a slice.

transformers matches special-token strings written in text ("<unk>" in WikiText); ``Tokenizer.encode`` reads text as
ordinary text, so it is compared with ``split_special_tokens=True``, and ``encode(..., allow_special=True)`` with the
default."""

from __future__ import annotations

import json
import shutil
import unicodedata

import pytest

from lit_gpt.data import encode as encode_stage
from lit_gpt.errors import ConfigError
from lit_gpt.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

FORMATS = ["llama2", "llama3", "qwen2", "smollm2"]
UNICODE = "Naïve café — ünïcödé 日本語 テキスト 😀👍🏽 e\u0301 1234567 3.14159\n\n\n  indented\tTab\r\nend  "


@pytest.fixture(scope="module")
def corpora(shared_data) -> dict[str, str]:
    return {
        "shakespeare": (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8"),
        "wikitext": (shared_data / "wikitext-2" / "valid.txt").read_text(encoding="utf-8"),
    }


def reference(folder, split_special_tokens: bool):
    return transformers.AutoTokenizer.from_pretrained(folder, split_special_tokens=split_special_tokens)


def check_ids(tok: Tokenizer, folder, text: str, name: str) -> None:
    """Ours against transformers on ``text``: plain ids, ids with special tokens, and decoding (to the text itself,
    after Qwen2's NFC normalizer)."""
    plain, special = reference(folder, True), reference(folder, False)
    ids = tok.encode(text)
    assert tok.document_prefix + ids + tok.hf.suffix_ids == plain(text)["input_ids"]
    assert tok.encode(text, allow_special=True) == special(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == special.decode(ids, clean_up_tokenization_spaces=False)
    if not (name == "llama2" and text.startswith(" ")):  # the SentencePiece decoder drops one leading space
        assert tok.decode(ids) == (unicodedata.normalize("NFC", text) if name == "qwen2" else text)


@pytest.mark.parametrize("name", FORMATS)
def test_ids_equal_transformers(hf_folder, corpora, name):
    folder = hf_folder(name)
    tok = Tokenizer.from_name(str(folder))
    assert tok.kind == "hf" and tok.name == folder.name
    for text in (corpora["shakespeare"][:20_000], corpora["wikitext"][:20_000], UNICODE, "<unk> <s> <|im_end|>"):
        check_ids(tok, folder, text, name)


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["shakespeare", "wikitext"])
@pytest.mark.parametrize("name", FORMATS)
def test_ids_equal_transformers_on_whole_corpora(hf_folder, corpora, name, corpus):
    folder = hf_folder(name)
    check_ids(Tokenizer.from_name(str(folder)), folder, corpora[corpus], name)


def gpt2_folder(shared_data, tmp_path):
    """transformers' GPT-2 tokenizer files, from the offline copies of OpenAI's ``encoder.json`` and ``vocab.bpe``."""
    cache = shared_data / "tiktoken_cache"
    shutil.copy(cache / "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6", tmp_path / "vocab.json")
    shutil.copy(cache / "6d1cbeee0f20b3d9449abfede4726ed8212e3aee", tmp_path / "merges.txt")
    config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("size", [pytest.param(None, marks=pytest.mark.slow), 20_000])
def test_gpt2_ids_equal_transformers(shared_data, corpora, tmp_path, size):
    hf = transformers.AutoTokenizer.from_pretrained(gpt2_folder(shared_data, tmp_path), split_special_tokens=True)
    tok = Tokenizer.from_name("gpt2")
    for text in [corpora["shakespeare"][:size], corpora["wikitext"][:size], UNICODE]:
        ids = tok.encode(text)
        assert ids == hf(text)["input_ids"]
        assert tok.decode(ids) == text


@pytest.mark.parametrize(
    "name, prefix, eot, stops, splits",
    [
        ("llama2", ["<s>"], "</s>", ["</s>"], False),
        ("llama3", ["<|begin_of_text|>"], "<|eot_id|>", ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"], True),
        ("qwen2", [], "<|im_end|>", ["<|im_end|>", "<|endoftext|>"], True),
        ("smollm2", [], "<|im_end|>", ["<|im_end|>"], True),
    ],
)
def test_special_tokens_come_from_the_folder(hf_folder, name, prefix, eot, stops, splits):
    tok = Tokenizer.from_name(str(hf_folder(name)))
    hf = reference(hf_folder(name), False)
    assert tok.document_prefix == hf.convert_tokens_to_ids(prefix) == hf("x")["input_ids"][: len(prefix)]
    assert tok.eot_id == hf.eos_token_id == hf.convert_tokens_to_ids(eot)
    assert tok.stop_ids == hf.convert_tokens_to_ids(stops)
    assert tok.vocab_size == len(hf) and tok.splits_at_newlines is splits
    assert tok.special_tokens["eos_token"] == eot and tok.chat_template == (hf.chat_template or None)


@pytest.mark.parametrize("name", FORMATS)
def test_spec_embeds_the_files_and_round_trips(hf_folder, name):
    folder = hf_folder(name)
    tok = Tokenizer.from_name(str(folder))
    spec = json.loads(json.dumps(tok.spec))  # as a checkpoint or meta.json stores it
    again = Tokenizer.from_spec(spec)
    assert again.spec == spec and again.eot_id == tok.eot_id and again.document_prefix == tok.document_prefix
    assert again.encode(UNICODE) == tok.encode(UNICODE) and again.decode(tok.encode(UNICODE)) == tok.decode(
        tok.encode(UNICODE)
    )
    if name == "llama2":  # converted once, with the model's bytes kept for exports
        assert "tokenizer.json" in spec["files"] and spec["binary"]["tokenizer.model"]
        assert again.hf.files()["tokenizer.model"] == (folder / "tokenizer.model").read_bytes()


@pytest.mark.parametrize("name", ["llama3", "qwen2", "smollm2"])
@pytest.mark.parametrize("corpus", ["shakespeare", "wikitext"])
def test_cutting_at_newlines_keeps_the_ids(hf_folder, corpora, monkeypatch, name, corpus):
    """``prepare`` encodes byte-level tokenizers in pieces cut at newlines: the pieces' ids are the whole text's."""
    tok = Tokenizer.from_name(str(hf_folder(name)))
    monkeypatch.setattr(encode_stage, "PIECE_CHARS", 2_000)
    text = corpora[corpus][:400_000]
    parts = list(encode_stage.pieces(text, tok.splits_at_newlines))
    assert len(parts) > 100 and "".join(parts) == text
    assert [i for ids in tok.hf.encode_batch(parts) for i in ids] == tok.encode(text)


def test_a_folder_without_a_tokenizer_file(tmp_path, run_main, errors):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"has no tokenizer.tiktoken .*tokenizer.json .*tokenizer.model"):
        Tokenizer.from_name(str(tmp_path / "empty"))
    (tmp_path / "a.txt").write_text("some text\n" * 50)
    flags = ["--data.path", tmp_path / "a.txt", "--data.cache_dir", tmp_path / "cache"]
    code, _, err = run_main("prepare", *flags, "--data.tokenizer", tmp_path / "empty")
    assert code == 2 and len(errors(err)) == 1 and "no tokenizer lit_gpt can use" in errors(err)[0], err


def test_a_broken_tokenizer_json_is_one_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Nope"}}')
    with pytest.raises(ConfigError, match="tokenizer.json is not a tokenizers file") as info:
        Tokenizer.from_name(str(tmp_path))
    assert "\n" not in str(info.value)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer.model").write_bytes(b"\x00garbage")
    pytest.importorskip("sentencepiece")
    with pytest.raises(ConfigError, match="is not a SentencePiece model"):
        Tokenizer.from_name(str(tmp_path))


@pytest.mark.parametrize("name", ["llama2", "llama3"])
def test_prepare_encodes_documents_with_the_folder_tokenizer(hf_folder, tmp_path, name):
    """``prepare`` with a Hugging Face folder: each document is ``tokenizer(document)`` (BOS included), documents are
    joined with the end-of-text id, and a BPE-format tokenizer cuts long documents into pieces on threads."""
    import numpy as np

    from lit_gpt.data.prepare import load_split, prepare
    from lit_gpt.data.settings import Corpus

    folder = hf_folder(name)
    docs = [f"Document {i}: " + "To be, or not to be, that is the question.\n" * (40 + i) for i in range(30)]
    for split, part in (("train", docs[:25]), ("val", docs[25:])):
        lines = "".join(json.dumps({"text": d}) + "\n" for d in part)
        (tmp_path / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    corpus = Corpus(str(tmp_path / "train.jsonl"), val_path=str(tmp_path / "val.jsonl"))
    meta = prepare(corpus, str(folder), tmp_path / "out", shard_tokens=1_000)
    tok = Tokenizer.from_spec(meta["tokenizer"])
    assert meta["tokenizer"] == Tokenizer.from_name(str(folder)).spec and meta["vocab_size"] == tok.vocab_size
    hf = reference(folder, True)
    for split, part in (("train", docs[:25]), ("val", docs[25:])):
        expected = [i for n, d in enumerate(part) for i in ([tok.eot_id] if n else []) + hf(d)["input_ids"]]
        assert np.concatenate(load_split(tmp_path / "out", split, meta)).tolist() == expected
    assert prepare(corpus, str(folder), tmp_path / "out", shard_tokens=1_000) == meta  # fresh: the same spec


@pytest.mark.parametrize("name", ["llama2", "llama3", "qwen2"])
def test_exports_write_the_tokenizer_back(hf_folder, tmp_path, name):
    from lit_gpt.checkpoint import load_checkpoint, save_folder, save_hf
    from lit_gpt.config import Config
    from lit_gpt.model import GPT

    tok = Tokenizer.from_name(str(hf_folder(name)))
    model = GPT(Config(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_hf(model, tok, tmp_path / "hf")
    save_folder(model, tok, tmp_path / "ours")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", split_special_tokens=True)
    assert hf(UNICODE)["input_ids"] == tok.document_prefix + tok.encode(UNICODE)
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == (tok.stop_ids if len(tok.stop_ids) > 1 else tok.eot_id)
    for folder in ("hf", "ours"):
        again = load_checkpoint(tmp_path / folder)[1]
        assert again.spec == tok.spec and again.encode(UNICODE) == tok.encode(UNICODE)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    del config["lit_gpt"]  # as a folder from the hub: the tokenizer is read from its files
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    assert load_checkpoint(tmp_path / "hf")[1].encode(UNICODE) == tok.encode(UNICODE)


def test_fit_export_and_generate_with_a_folder_tokenizer(hf_folder, fit_args, run_main, tmp_path):
    """``lit-gpt fit --data.tokenizer FOLDER``: the checkpoint holds the folder's tokenizer, generation starts from its
    BOS, and the export's tokenizer files load in transformers."""
    import torch

    folder = hf_folder("llama3")
    code, _, err = run_main(*fit_args("--data.tokenizer", folder, "--trainer.max_steps", "4"))
    assert code == 0, err
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    spec = torch.load(ckpt, map_location="cpu", weights_only=False)["lit_gpt"]["tokenizer"]
    assert spec == Tokenizer.from_name(str(folder)).spec
    code, out, err = run_main("generate", "--checkpoint", ckpt, "--prompt", "ROMEO:", "--max_new_tokens", "3")
    assert code == 0 and out.startswith("ROMEO:"), err
    code, _, err = run_main("export", "--checkpoint", ckpt, "--out", tmp_path / "hf")
    assert code == 0, err
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf("ROMEO:")["input_ids"] == Tokenizer.from_spec(spec).document_prefix + Tokenizer.from_spec(spec).encode(
        "ROMEO:"
    )
