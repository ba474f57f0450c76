import pytest
import tiktoken

from lit_gpt.errors import ConfigError
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


def test_kinds_and_existing_specs_unchanged(byte_encoding):
    assert Tokenizer.from_name("gpt2").spec == {"kind": "tiktoken", "name": "gpt2"}
    assert Tokenizer(encoding=byte_encoding).kind == "tiktoken"
    assert Tokenizer.char(["ab"]).kind == "char"
    with pytest.raises(ValueError, match="bpe=True"):
        Tokenizer(chars="ab", bpe=True)


def test_bpe_spec_carries_the_vocabulary(byte_encoding):
    tok = Tokenizer(encoding=byte_encoding, bpe=True)
    spec = tok.spec
    assert spec["kind"] == "bpe" and spec["name"] == "bytes" and spec["special_tokens"] == {EOT_TEXT: 256}
    assert len(spec["ranks"].splitlines()) == 256 and spec["pat_str"] == byte_encoding._pat_str
    rebuilt = Tokenizer.from_spec(spec)
    assert (rebuilt.kind, rebuilt.vocab_size, rebuilt.eot_id) == ("bpe", 257, 256)
    assert rebuilt.encode(SAMPLES[1]) == tok.encode(SAMPLES[1]) and rebuilt.spec == spec


def test_from_name_reads_a_bpe_folder(byte_encoding, tmp_path, monkeypatch):
    from lit_gpt.tokenizer import save_bpe

    monkeypatch.chdir(tmp_path)
    save_bpe(byte_encoding, tmp_path / "gpt2")
    save_bpe(byte_encoding, tmp_path / "mybpe")
    assert Tokenizer.from_name("gpt2").kind == "tiktoken"  # a tiktoken name wins over a folder of that name
    for name in ("./gpt2", "mybpe", str(tmp_path / "mybpe"), "mybpe/"):
        tok = Tokenizer.from_name(name)
        assert (tok.kind, tok.vocab_size, tok.name) == ("bpe", 257, "bytes")
        assert tok.decode(tok.encode(SAMPLES[1])) == SAMPLES[1]
    with pytest.raises(ConfigError, match="'missing/bpe' not found; train one with `lit-gpt train-tokenizer`"):
        Tokenizer.from_name("missing/bpe")
    with pytest.raises(ConfigError, match="unknown tokenizer 'missing'.*train-tokenizer"):
        Tokenizer.from_name("missing")


def test_bad_bpe_spec(byte_encoding):
    spec = Tokenizer(encoding=byte_encoding, bpe=True).spec
    with pytest.raises(ConfigError, match="not a lit_gpt tokenizer spec"):
        Tokenizer.from_spec({k: v for k, v in spec.items() if k != "ranks"})
    with pytest.raises(ConfigError, match="tokenizer spec is corrupt: special_tokens has no"):
        Tokenizer.from_spec({**spec, "special_tokens": {}})


def test_special_tokens_only_when_allowed(byte_encoding, char_tokenizer):
    gpt2 = Tokenizer.from_name("gpt2")
    text = "a<|endoftext|>b"
    assert gpt2.eot_id not in gpt2.encode(text)
    assert gpt2.encode(text, allow_special=True) == gpt2.encode("a") + [gpt2.eot_id] + gpt2.encode("b")
    ids, starts = gpt2.encode_with_offsets("héllo<|endoftext|> wörld")
    assert ids == gpt2.encode("héllo<|endoftext|> wörld", allow_special=True) and starts[0] == 0
    assert starts[ids.index(gpt2.eot_id)] == 5 and starts[ids.index(gpt2.eot_id) + 1] == 18
    char = char_tokenizer()
    assert char.encode(text, allow_special=True) == [char.encode("a")[0], char.eot_id, char.encode("b")[0]]
    assert char.encode_with_offsets(text) == (char.encode(text, allow_special=True), [0, 1, 14])
    for tok in (gpt2, char, Tokenizer(encoding=byte_encoding, bpe=True)):
        assert tok.document_prefix == [] and tok.stop_ids == [tok.eot_id] and tok.chat_template is None
        assert tok.splits_at_newlines and tok.special_tokens == {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT}
