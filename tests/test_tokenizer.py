import pytest
import tiktoken

from lit_gpt.config import ConfigError
from lit_gpt.tokenizer import EOT_TEXT, Tokenizer

SAMPLES = ["First Citizen:\nBefore we proceed any further, hear me speak.", "naïve café — ünïcödé ✓ 日本語", ""]


@pytest.mark.parametrize("text", SAMPLES)
def test_byte_level_round_trip(byte_encoding, text):
    tok = Tokenizer(encoding=byte_encoding)
    assert tok.vocab_size == 257 and tok.eot_id == 256
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


@pytest.mark.parametrize("name", ["gpt2", "r50k_base", "cl100k_base"])
def test_tiktoken_round_trip_from_offline_cache(name, shakespeare):
    tok = Tokenizer.from_name(name)
    text = shakespeare.read_text()[:20_000] + SAMPLES[1]
    assert tok.decode(tok.encode(text)) == text
    assert tok.eot_id == tok.encoding.eot_token
    assert Tokenizer.from_spec(tok.spec).encode(text) == tok.encode(text)


def test_gpt2_counts_and_special_text():
    tok = Tokenizer.from_name("gpt2")
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    assert tok.encode("Hello world") == [15496, 995]
    # literal special-token text in a corpus is ordinary text, never the end-of-text id
    assert tok.eot_id not in tok.encode(f"a {EOT_TEXT} b")


def test_char_tokenizer_round_trip(shakespeare):
    text = shakespeare.read_text()
    tok = Tokenizer.char([text])
    assert tok.vocab_size == 66  # 65 distinct characters + end-of-text
    assert tok.chars == "".join(sorted(set(text)))
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode([tok.eot_id]) == EOT_TEXT
    assert Tokenizer.from_spec(tok.spec).encode("ROMEO:") == tok.encode("ROMEO:")


def test_char_tokenizer_rejects_unknown_characters():
    tok = Tokenizer.char(["abc"])
    with pytest.raises(ConfigError, match="'z' is not in this character-level vocabulary"):
        tok.encode("abz")


def test_unknown_tokenizer_name():
    with pytest.raises(ConfigError, match="unknown tokenizer 'gpt-7'.*gpt2"):
        Tokenizer.from_name("gpt-7")


def test_bad_spec():
    with pytest.raises(ConfigError, match="not a lit_gpt tokenizer spec"):
        Tokenizer.from_spec({"kind": "sentencepiece"})


def test_offline_without_cache_says_how_to_fix(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # forget encodings loaded by other tests
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    with pytest.raises(ConfigError, match="TIKTOKEN_CACHE_DIR"):
        Tokenizer.from_name("r50k_base")
