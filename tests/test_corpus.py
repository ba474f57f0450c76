"""lit_gpt.corpus: document boundaries, cleaning switches and their counts, dedup, encodings and bad input."""

from __future__ import annotations

import functools
import gzip
import json
import os
import random
import re
import unicodedata
from pathlib import Path

import pytest

from lit_gpt.data import corpus
from lit_gpt.data.corpus import Cleaning, CorpusStats, clean, iter_documents
from lit_gpt.errors import ConfigError

SHARED_DATA = Path(os.environ.get("LIT_GPT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TINYSTORIES_HEAD = SHARED_DATA / "tinystories" / "TinyStoriesV2-GPT4-train.head.txt"
EOT = "<|endoftext|>"
OFF = Cleaning(nfc=False, remove_control=False, normalize_whitespace=False, deduplicate=False, min_chars=0)


def write(path: Path, content: str | bytes) -> Path:
    """Write ``content`` (str as UTF-8) to ``path``, gzipped when the name ends in ``.gz``."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def read(sources, **kwargs) -> tuple[list[str], CorpusStats]:
    stats = CorpusStats()
    docs = list(iter_documents([Path(s) for s in sources], stats=stats, **kwargs))
    return docs, stats


def assert_accounted(stats: CorpusStats, docs: list[str]) -> None:
    """Every document read is either kept or counted in exactly one removal counter."""
    assert stats.documents_read == (
        stats.documents_kept + stats.duplicates_removed + stats.short_removed + stats.empty_removed
    )
    assert stats.documents_kept == len(docs)
    assert stats.chars_kept == sum(len(d) for d in docs)


# ---------------------------------------------------------------------------------------------- boundaries


def test_txt_file_is_one_document(tmp_path):
    text = f"Once upon a time.\n\nThe end.{EOT}Not split without a separator.\n"
    docs, stats = read([write(tmp_path / "a.txt", text)])
    assert docs == [text]
    assert (stats.files, stats.documents_read, stats.documents_kept) == (1, 1, 1)
    assert stats.chars_kept == len(text)
    assert stats.empty_files == []


def test_separator_splits_documents(tmp_path):
    text = f"first story{EOT}\nsecond story\n{EOT}{EOT}  \n{EOT}third{EOT}"
    docs, stats = read([write(tmp_path / "a.txt", text)], separator=EOT)
    assert docs == ["first story", "\nsecond story\n", "third"]
    # "" between the doubled separator, "  \n", and "" after the trailing separator
    assert stats.documents_read == 6
    assert stats.empty_removed == 3
    assert_accounted(stats, docs)


@pytest.mark.parametrize("block_chars", [1, 5, 7, 13, len(EOT), len(EOT) + 1])
def test_separator_straddling_block_boundary(tmp_path, monkeypatch, block_chars):
    # documents of many lengths so the separator lands at every offset within a block
    parts = ["x" * n + f"-{n}" for n in range(40)] + ["é\u00e8 unicode", "tail without separator"]
    path = write(tmp_path / "a.txt", EOT.join(parts))
    expected, expected_stats = read([path], separator=EOT)
    assert expected == parts
    monkeypatch.setattr(corpus, "BLOCK_CHARS", block_chars)
    docs, stats = read([path], separator=EOT)
    assert docs == expected
    assert stats == expected_stats


def test_separator_that_is_never_found_gives_one_document(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "BLOCK_CHARS", 7)
    text = "a story with a < and a <| but never the whole separator <|endoftext| ."
    docs, _ = read([write(tmp_path / "a.txt", text)], separator=EOT)
    assert docs == [text]


def test_jsonl_one_document_per_record(tmp_path):
    content = jsonl({"text": "one", "id": 1}, {"text": "two\nlines", "meta": {"x": 1}}) + "\n   \n"
    content += jsonl({"text": f"has {EOT} inside"})
    docs, stats = read([write(tmp_path / "a.jsonl", content)], separator=EOT)
    # blank lines are skipped, and the separator does not split JSONL records
    assert docs == ["one", "two\nlines", f"has {EOT} inside"]
    assert stats.documents_read == 3
    assert_accounted(stats, docs)


def test_jsonl_custom_text_field(tmp_path):
    content = jsonl({"story": "alpha", "text": 5}, {"story": "beta"})
    docs, _ = read([write(tmp_path / "a.jsonl", content)], text_field="story")
    assert docs == ["alpha", "beta"]


def test_jsonl_crlf_line_endings(tmp_path):
    content = jsonl({"text": "a"}, {"text": "b"}).replace("\n", "\r\n")
    docs, _ = read([write(tmp_path / "a.jsonl", content)])
    assert docs == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "content", "kwargs"),
    [
        ("c.txt", f"alpha\x07 e\u0301{EOT}beta{EOT}{EOT}alpha\x07 e\u0301{EOT}gamma\n", {"separator": EOT}),
        ("c.txt", "one whole document\n\nwith  spaces\n", {}),
        ("c.jsonl", jsonl({"text": "a"}, {"text": "b\x85"}, {"text": "a"}, {"text": " "}), {}),
    ],
)
def test_gzip_gives_the_same_documents(tmp_path, name, content, kwargs):
    plain = write(tmp_path / name, content)
    gz = write(tmp_path / (name + ".gz"), content)
    assert gzip.decompress(gz.read_bytes()) == plain.read_bytes()
    docs, stats = read([plain], **kwargs)
    gz_docs, gz_stats = read([gz], **kwargs)
    assert docs and gz_docs == docs
    assert gz_stats == stats


def test_several_files_in_order(tmp_path):
    a = write(tmp_path / "a.txt", f"a1{EOT}a2")
    b = write(tmp_path / "b.jsonl", jsonl({"text": "b1"}, {"text": "b2"}))
    c = write(tmp_path / "c.txt.gz", f"c1{EOT}c2")
    docs, stats = read([c, a, b], separator=EOT)
    assert docs == ["c1", "c2", "a1", "a2", "b1", "b2"]
    assert stats.files == 3


def test_default_stats_and_cleaning(tmp_path):
    path = write(tmp_path / "a.txt", f"x\x07{EOT}x")
    assert list(iter_documents([path], separator=EOT)) == ["x"]  # control removed, then a duplicate


def test_stats_accumulate_across_calls(tmp_path):
    path = write(tmp_path / "a.txt", f"a{EOT}b")
    stats = CorpusStats()
    list(iter_documents([path], separator=EOT, stats=stats))
    list(iter_documents([path], separator=EOT, stats=stats))
    # dedup memory is per call, counts are not
    assert (stats.files, stats.documents_read, stats.documents_kept, stats.duplicates_removed) == (2, 4, 4, 0)
    d = stats.as_dict()
    assert d["documents_kept"] == 4 and d["empty_files"] == [] and set(d) == set(CorpusStats().as_dict())
    json.dumps(d)  # goes into metadata


def test_tinystories_head(monkeypatch):
    assert TINYSTORIES_HEAD.is_file(), f"{TINYSTORIES_HEAD} not found; set LIT_GPT_SHARED_DATA"
    text = TINYSTORIES_HEAD.read_bytes().decode("utf-8-sig", errors="replace")
    parts = text.split(EOT)
    cleaned = [clean(p, Cleaning(), CorpusStats()) for p in parts]
    non_empty = [c for c in cleaned if c.strip()]
    expected = list(dict.fromkeys(non_empty))  # first occurrences, in order

    docs, stats = read([TINYSTORIES_HEAD], separator=EOT)
    assert len(parts) > 1000  # 1728 in the shipped head file
    assert stats.documents_read == len(parts)
    assert stats.empty_removed == len(parts) - len(non_empty)
    assert stats.duplicates_removed == len(non_empty) - len(expected)
    assert stats.short_removed == 0
    assert docs == expected
    assert_accounted(stats, docs)
    assert stats.invalid_utf8_bytes_replaced == 0 and stats.empty_files == []

    # small blocks change nothing
    monkeypatch.setattr(corpus, "BLOCK_CHARS", 1000)
    small_docs, small_stats = read([TINYSTORIES_HEAD], separator=EOT)
    assert small_docs == docs and small_stats == stats


# ---------------------------------------------------------------------------------------------- cleaning


@pytest.mark.parametrize("nfc", [True, False])
def test_nfc(tmp_path, nfc):
    content = jsonl({"text": "cafe\u0301"}, {"text": "caf\u00e9"}, {"text": "A\u030a and n\u0303"}, {"text": "plain"})
    docs, stats = read([write(tmp_path / "a.jsonl", content)], cleaning=Cleaning(nfc=nfc, deduplicate=False))
    if nfc:
        assert docs == ["caf\u00e9", "caf\u00e9", "\u00c5 and \u00f1", "plain"]
        assert stats.documents_nfc_changed == 2
    else:
        assert docs == ["cafe\u0301", "caf\u00e9", "A\u030a and n\u0303", "plain"]
        assert stats.documents_nfc_changed == 0


def test_nfc_makes_equal_text_deduplicate(tmp_path):
    content = jsonl({"text": "cafe\u0301"}, {"text": "caf\u00e9"})
    docs, stats = read([write(tmp_path / "a.jsonl", content)], cleaning=Cleaning(nfc=True))
    assert docs == ["caf\u00e9"] and stats.duplicates_removed == 1
    docs, stats = read([write(tmp_path / "a.jsonl", content)], cleaning=Cleaning(nfc=False))
    assert len(docs) == 2 and stats.duplicates_removed == 0


@pytest.mark.parametrize("remove_control", [True, False])
def test_control_characters(tmp_path, remove_control):
    raw = "bell\x07 esc\x1b[0m nel\x85 del\x7f nul\x00 c1\x9f\ttab\nnewline\r\ncrlf\rcr"
    # NUL in the middle of a JSONL string is fine (escaped), the binary check only looks at raw bytes
    docs, stats = read(
        [write(tmp_path / "a.jsonl", jsonl({"text": raw}))], cleaning=Cleaning(remove_control=remove_control)
    )
    if remove_control:
        assert docs == ["bell esc[0m nel del nul c1\ttab\nnewline\r\ncrlf\rcr"]
        assert stats.control_chars_removed == 6
    else:
        assert docs == [raw]
        assert stats.control_chars_removed == 0


def test_control_characters_in_txt_counted_across_documents(tmp_path):
    docs, stats = read([write(tmp_path / "a.txt", f"a\x07\x07{EOT}b\x1b{EOT}\x07\x85")], separator=EOT)
    assert docs == ["a", "b"]
    assert stats.control_chars_removed == 5
    assert stats.empty_removed == 1  # only control characters: empty after cleaning


def test_every_cc_but_tab_newline_cr_is_removed():
    cc = "".join(chr(i) for i in range(0x110000) if unicodedata.category(chr(i)) == "Cc")
    stats = CorpusStats()
    assert clean(f"<{cc}>", Cleaning(), stats) == "<\t\n\r>"
    assert stats.control_chars_removed == len(cc) - 3
    # other invisible characters (format Cf, line separator Zl, no-break space Zs) are not control characters
    keep = "a\u200bb\u2028c\u00a0d\ufeffe"
    assert clean(keep, Cleaning(), CorpusStats()) == keep


@pytest.mark.parametrize(
    ("raw", "tidy"),
    [
        ("a  b\t\tc \t d", "a b c d"),
        ("line  \nnext\t\nlast", "line\nnext\nlast"),
        ("a\n\n\nb\n\n\n\n\nc", "a\n\nb\n\nc"),
        ("a\n  \n\t\n\nb", "a\n\nb"),  # lines of only spaces count as blank
        ("a \r\n\r\n\r\n\r\nb", "a\n\nb"),
        ("  indented\n\tcode", " indented\n code"),
        ("a\n\nb", "a\n\nb"),  # already tidy
    ],
)
def test_normalize_whitespace(raw, tidy):
    stats = CorpusStats()
    assert clean(raw, Cleaning(normalize_whitespace=True), stats) == tidy
    assert stats.documents_whitespace_changed == (raw != tidy)
    off = CorpusStats()
    assert clean(raw, Cleaning(), off) == raw  # off by default
    assert off.documents_whitespace_changed == 0


def test_normalize_whitespace_counts_documents(tmp_path):
    content = jsonl({"text": "a  b"}, {"text": "clean"}, {"text": "x\n\n\n\ny"}, {"text": "a b"})
    docs, stats = read([write(tmp_path / "a.jsonl", content)], cleaning=Cleaning(normalize_whitespace=True))
    assert docs == ["a b", "clean", "x\n\ny"]  # "a  b" and "a b" are duplicates once normalized
    assert stats.documents_whitespace_changed == 2
    assert stats.duplicates_removed == 1


@pytest.mark.parametrize(("min_chars", "kept", "short"), [(0, 4, 0), (1, 4, 0), (3, 3, 1), (4, 2, 2), (6, 0, 4)])
def test_min_chars(tmp_path, min_chars, kept, short):
    content = jsonl({"text": "ab"}, {"text": "abc"}, {"text": "abcd"}, {"text": "abcde"}, {"text": "  "})
    docs, stats = read([write(tmp_path / "a.jsonl", content)], cleaning=Cleaning(min_chars=min_chars))
    assert docs == ["ab", "abc", "abcd", "abcde"][4 - kept :]
    assert (stats.short_removed, stats.empty_removed) == (short, 1)  # whitespace-only is "empty", not "short"
    assert_accounted(stats, docs)


def test_min_chars_counts_after_cleaning(tmp_path):
    # 5 characters raw, 3 after control removal, 4 -> 3 after NFC
    content = jsonl({"text": "ab\x07\x07c"}, {"text": "e\u0301xy"})
    docs, stats = read([write(tmp_path / "a.jsonl", content)], cleaning=Cleaning(nfc=True, min_chars=4))
    assert docs == [] and stats.short_removed == 2
    assert stats.empty_files == []  # it had documents, they were just short


def dup_corpus(tmp_path: Path) -> tuple[list[Path], list[str]]:
    """Three files with duplicates within and across them, and every document in reading order."""
    a = write(tmp_path / "a.txt", f"one{EOT}two{EOT}one{EOT}three")
    b = write(tmp_path / "b.jsonl", jsonl(*({"text": t} for t in ["two", "four", "four", "five", "one", "four"])))
    c = write(tmp_path / "c.txt.gz", f"six{EOT}five{EOT}Six{EOT}six ")
    order = ["one", "two", "one", "three", "two", "four", "four", "five", "one", "four", "six", "five", "Six", "six "]
    return [a, b, c], order


def test_deduplicate_removes_exactly_the_duplicates(tmp_path):
    sources, order = dup_corpus(tmp_path)
    docs, stats = read(sources, separator=EOT)
    assert docs == ["one", "two", "three", "four", "five", "six", "Six", "six "]  # first occurrences, in order
    assert docs == list(dict.fromkeys(order))
    assert stats.duplicates_removed == len(order) - len(set(order)) == 6
    assert stats.documents_read == len(order)
    assert stats.empty_files == []
    assert_accounted(stats, docs)


def test_deduplicate_off_keeps_everything(tmp_path):
    sources, order = dup_corpus(tmp_path)
    docs, stats = read(sources, separator=EOT, cleaning=Cleaning(deduplicate=False))
    assert docs == order
    assert stats.duplicates_removed == 0
    assert_accounted(stats, docs)


def test_file_of_only_duplicates_is_not_an_empty_file(tmp_path):
    a = write(tmp_path / "a.txt", "same")
    b = write(tmp_path / "b.txt", "same")
    docs, stats = read([a, b])
    assert docs == ["same"] and stats.duplicates_removed == 1 and stats.empty_files == []


def test_whitespace_only_documents_are_dropped_and_counted(tmp_path):
    content = f" \n\t\r\n{EOT}real{EOT}\u3000{EOT}{EOT}\n\n"
    docs, stats = read([write(tmp_path / "a.txt", content)], separator=EOT)
    assert docs == ["real"]
    assert stats.empty_removed == 4
    assert_accounted(stats, docs)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.txt", ""),
        ("spaces.txt", "  \n\n\t "),
        ("empty.txt.gz", ""),
        ("empty.jsonl", ""),
        ("blank_lines.jsonl", "\n\n  \n"),
        ("empty_texts.jsonl", jsonl({"text": ""}, {"text": "  "})),
        ("bom_only.txt", b"\xef\xbb\xbf"),
    ],
)
def test_empty_files_are_listed(tmp_path, name, content):
    before = write(tmp_path / "before.txt", "before")
    empty = write(tmp_path / name, content)
    after = write(tmp_path / "after.txt", "after")
    docs, stats = read([before, empty, after], separator=EOT)
    assert docs == ["before", "after"]
    assert stats.empty_files == [str(empty)]
    assert stats.files == 3


def test_all_cleaning_off(tmp_path):
    text = f"e\u0301\x07  x\n\n\n{EOT}e\u0301\x07  x\n\n\n{EOT}y"
    docs, stats = read([write(tmp_path / "a.txt", text)], separator=EOT, cleaning=OFF)
    assert docs == ["e\u0301\x07  x\n\n\n", "e\u0301\x07  x\n\n\n", "y"]
    assert (stats.documents_nfc_changed, stats.control_chars_removed, stats.documents_whitespace_changed) == (0, 0, 0)
    assert stats.duplicates_removed == 0


def test_clean_output_is_nfc_after_control_removal():
    # a control character between a letter and its combining mark blocks composition; once removed, the
    # cleaned text must still be NFC, or equal text gives different tokens and escapes deduplication
    stats = CorpusStats()
    out = clean("e\x07\u0301", Cleaning(nfc=True), stats)
    assert out == "\u00e9"
    assert unicodedata.is_normalized("NFC", out)
    assert stats.control_chars_removed == 1


def test_clean_is_idempotent():
    raw = "A\u030a\x1b  b \n\n\n\nc\r\n\x85d\t\te"
    cleaning = Cleaning(normalize_whitespace=True)
    once = clean(raw, cleaning, CorpusStats())
    stats = CorpusStats()
    assert clean(once, cleaning, stats) == once
    assert stats == CorpusStats()


# ---------------------------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
@pytest.mark.parametrize("block_chars", [None, 3])
def test_invalid_utf8_is_replaced_and_counted(tmp_path, monkeypatch, name, block_chars):
    if block_chars:
        monkeypatch.setattr(corpus, "BLOCK_CHARS", block_chars)
    # a lone continuation byte, an invalid start byte, a truncated 3-byte sequence, an overlong encoding,
    # a UTF-16 surrogate encoded in UTF-8, and a truncated sequence at the very end of the file
    data = (
        b"ok \x80 x\xff y\xe2\x82 z\xc0\xaf w\xed\xa0\x80" + EOT.encode() + b"\xc3\xa9 fine" + EOT.encode() + b"end\xe2"
    )
    docs, stats = read([write(tmp_path / name, data)], separator=EOT)
    assert docs[1] == "\u00e9 fine"
    assert docs[0].startswith("ok \ufffd x\ufffd y") and docs[2].startswith("end\ufffd")
    n_replaced = sum(d.count("\ufffd") for d in docs)
    assert n_replaced == stats.invalid_utf8_bytes_replaced
    assert stats.invalid_utf8_bytes_replaced == 1 + 1 + 2 + 2 + 3 + 1  # one U+FFFD per invalid byte
    assert "".join(docs).replace("\ufffd", "") == "ok  x y z w\u00e9 fineend"


def test_invalid_utf8_in_jsonl_gz(tmp_path):
    data = b'{"text": "bad \xff byte"}\n{"text": "good"}\n'
    for name in ["a.jsonl", "a.jsonl.gz"]:
        docs, stats = read([write(tmp_path / name, data)])
        assert docs == ["bad \ufffd byte", "good"]
        assert stats.invalid_utf8_bytes_replaced == 1


def test_invalid_utf8_counts_are_per_stats(tmp_path):
    path = write(tmp_path / "b.txt", b"x\xfe\xff")  # not at the start, so not a UTF-16 byte-order mark
    first, second = CorpusStats(), CorpusStats()
    list(iter_documents([path], stats=first))
    list(iter_documents([path], stats=second))
    list(iter_documents([path], stats=second))
    assert (first.invalid_utf8_bytes_replaced, second.invalid_utf8_bytes_replaced) == (2, 4)


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz", "a.jsonl", "a.jsonl.gz"])
def test_utf8_bom_is_stripped(tmp_path, name):
    body = jsonl({"text": "first"}, {"text": "second"}) if ".jsonl" in name else f"first{EOT}second"
    docs, stats = read([write(tmp_path / name, b"\xef\xbb\xbf" + body.encode())], separator=EOT)
    assert docs == ["first", "second"]
    assert stats.invalid_utf8_bytes_replaced == 0


def test_bom_later_in_the_file_is_kept(tmp_path):
    docs, _ = read([write(tmp_path / "a.txt", f"a{EOT}\ufeffb")], separator=EOT)
    assert docs == ["a", "\ufeffb"]


def test_non_ascii_text_roundtrips(tmp_path):
    text = "Ünïcödé — 日本語 — emoji 🐍 — עברית"
    docs, stats = read([write(tmp_path / "a.txt.gz", text)])
    assert docs == [text] and stats.invalid_utf8_bytes_replaced == 0


# ---------------------------------------------------------------------------------------------- bad input


def assert_config_error(paths, match, **kwargs):
    with pytest.raises(ConfigError, match=match) as info:
        read(paths, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("name", ["model.txt", "model.txt.gz"])
def test_binary_file(tmp_path, name):
    path = write(tmp_path / name, b"PK\x03\x04\x00\x00binary\x00stuff" + bytes(range(256)))
    message = assert_config_error([path], "binary")
    assert str(path) in message and "NUL" in message


@pytest.mark.parametrize(
    "data",
    ["hello".encode("utf-16"), "hello".encode("utf-16-be"), "hello".encode("utf-32"), "\ufeffhi".encode("utf-16-be")],
)
def test_utf16_and_utf32_files(tmp_path, data):
    path = write(tmp_path / "a.txt", data)
    message = str(pytest.raises(ConfigError, read, [path]).value)
    assert str(path) in message
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        assert "UTF-16" in message and "UTF-8" in message
    else:  # no byte-order mark: caught by its NUL bytes
        assert "binary" in message


def test_utf16_jsonl_gz(tmp_path):
    path = write(tmp_path / "a.jsonl.gz", jsonl({"text": "x"}).encode("utf-16"))
    assert_config_error([path], "UTF-16")


def test_jsonl_line_that_is_not_json(tmp_path):
    content = jsonl({"text": "ok"}) + "\n" + '{"text": "unterminated\n' + jsonl({"text": "never read"})
    path = write(tmp_path / "bad.jsonl", content)
    message = assert_config_error([path], "is not JSON")
    assert f"{path}:3 " in message  # line numbers count blank lines


def test_jsonl_error_is_raised_after_earlier_documents(tmp_path):
    path = write(tmp_path / "bad.jsonl.gz", jsonl({"text": "a"}, {"text": "b"}) + "not json\n")
    it = iter_documents([path])
    assert [next(it), next(it)] == ["a", "b"]  # streaming: documents before the bad line come first
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3")):
        next(it)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"content": "text under another key"}, "text"),
        ({"text": 3}, "text"),
        ({"text": None}, "text"),
        ({"text": ["a", "b"]}, "text"),
        ({"text": {"nested": "x"}}, "text"),
        (["text", "a list, not an object"], "text"),
        ("a bare string", "text"),
        ({"text": "has text but not the custom field"}, "story"),
    ],
)
def test_jsonl_record_without_string_field(tmp_path, record, field):
    path = write(tmp_path / "a.jsonl", jsonl({field: "fine"}, record))
    message = assert_config_error([path], "no string field", text_field=field)
    assert f"{path}:2 " in message and repr(field) in message and "text_field" in message


@functools.cache
def big_gzip() -> bytes:
    """~200 KB of JSONL (valid as .txt too): far more than the 8 KiB that the head check reads."""
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randrange(1, 9))) for _ in range(40_000)]
    return gzip.compress(jsonl(*({"text": " ".join(words[i : i + 20])} for i in range(0, len(words), 20))).encode())


def corrupt_gzip(kind: str) -> bytes:
    small = gzip.compress(b"a small file that gzip compresses " * 3)
    if kind == "not gzip":
        return b"this is plain text, not gzip data"
    if kind == "empty":
        return b""
    if kind == "truncated small":
        return small[: len(small) // 2]
    if kind == "garbled deflate small":
        data = bytearray(small)
        data[10:20] = b"\xff" * 10
        return bytes(data)
    if kind == "truncated large":
        data = big_gzip()
        return data[: len(data) // 2]
    if kind == "bad CRC large":
        data = bytearray(big_gzip())
        data[-6] ^= 0xFF
        return bytes(data)
    if kind == "garbled deflate large":
        data = bytearray(big_gzip())
        rng = random.Random(0)
        for _ in range(5):
            data[rng.randrange(len(data) // 2, len(data) - 100)] = rng.randrange(256)
        return bytes(data)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "not gzip",
        "empty",
        "truncated small",
        "garbled deflate small",
        "truncated large",
        "bad CRC large",
        "garbled deflate large",
    ],
)
@pytest.mark.parametrize("name", ["c.txt.gz", "c.jsonl.gz"])
def test_corrupt_gzip(tmp_path, kind, name):
    path = tmp_path / name
    path.write_bytes(corrupt_gzip(kind))
    if kind == "empty":  # gzip reads an empty file as empty data: an empty file, not an error
        docs, stats = read([path])
        assert docs == [] and stats.empty_files == [str(path)]
        return
    message = str(pytest.raises(ConfigError, read, [path], separator=EOT).value)
    assert str(path) in message
    if not kind.startswith("garbled"):  # garbled data may first decode into a line that is not JSON
        assert "cannot read" in message and "valid" in message


def test_missing_file(tmp_path):
    path = tmp_path / "missing.txt"
    assert str(path) in assert_config_error([path], "cannot read")


def test_directory_instead_of_file(tmp_path):
    assert_config_error([tmp_path], "cannot read")


def test_bad_file_after_good_ones(tmp_path):
    good = write(tmp_path / "good.txt", "fine")
    bad = write(tmp_path / "bad.txt", b"\x00\x01\x02")
    stats = CorpusStats()
    it = iter_documents([good, bad], stats=stats)
    assert next(it) == "fine"
    with pytest.raises(ConfigError, match="binary"):
        next(it)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------------------- quality filters

STORY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine with her dog,"
    " Max. One day, Lily and Max went to the park to look for the big red ball that had rolled under the old tree."
    " They looked and looked, and at last Max found it. Lily was so happy that she gave him a hug and said thank "
    "you to the kind man who had helped them."
)
SPAM = {
    "word_count": "Buy now! Best price.",
    "mean_word_length": " ".join(["aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQgZGF0YQ=="] * 60),
    "max_symbol_word_ratio": STORY + " #sale #deal #win #free #love #summer #cute #dog #girl #park #ball #happy",
    "min_alpha_word_fraction": STORY + " " + " ".join(f"{i} | {i * 7} | {i * 13:.2f}" for i in range(30)),
    "min_stop_words": " ".join(["cheap flights hotels deals booking travel insurance car rental"] * 8),
    "max_duplicate_line_fraction": "\n".join(
        [
            "Home | About | Contact",
            STORY,
            "Home | About | Contact",
            "Home | About | Contact",
            "Share on Facebook",
            "Share on Facebook",
        ]
    ),
}
GOPHER = dict(
    word_count=(50, 100_000),
    mean_word_length=(3, 10),
    max_symbol_word_ratio=0.1,
    min_alpha_word_fraction=0.8,
    min_stop_words=2,
    max_duplicate_line_fraction=0.3,
)
COUNT = {
    "word_count": "word_count_removed",
    "mean_word_length": "word_length_removed",
    "max_symbol_word_ratio": "symbol_ratio_removed",
    "min_alpha_word_fraction": "non_alpha_removed",
    "min_stop_words": "stop_words_removed",
    "max_duplicate_line_fraction": "repeated_lines_removed",
}


@pytest.mark.parametrize("switch", list(SPAM))
def test_each_gopher_filter_drops_its_kind_of_document_and_counts_it(tmp_path, switch):
    source = write(tmp_path / "a.jsonl", jsonl({"text": STORY}, {"text": SPAM[switch]}))
    docs, stats = read([source], cleaning=Cleaning(**{switch: GOPHER[switch]}))
    assert docs == [STORY]
    assert {name: getattr(stats, name) for name in corpus.QUALITY_COUNTS} == {
        name: int(name == COUNT[switch]) for name in corpus.QUALITY_COUNTS
    }
    assert stats.documents_read == stats.documents_kept + stats.documents_removed
    off, _ = read([source])  # off by default
    assert off == [STORY, SPAM[switch]]


def test_a_document_is_counted_under_the_first_filter_it_fails(tmp_path):
    docs, stats = read([write(tmp_path / "a.jsonl", jsonl({"text": "### ### ###"}))], cleaning=Cleaning(**GOPHER))
    assert docs == [] and stats.word_count_removed == 1 and stats.documents_removed == 1  # also all symbols


def test_gopher_rules_keep_real_stories():
    docs, stats = read([TINYSTORIES_HEAD], separator=EOT, cleaning=Cleaning(**GOPHER))
    assert stats.documents_read == 1728 and stats.documents_removed == 0  # all 1,728 stories pass every rule


def test_c4_lines_keep_sentences_and_drop_menus(tmp_path):
    page = "\n".join(
        [
            "Home | Products | About us",
            "Welcome to our bakery in the old town of Lyon.",
            "Click here",
            "We bake bread every morning with flour from local mills!",
            "Copyright 2024",
        ]
    )
    docs, stats = read(
        [write(tmp_path / "a.jsonl", jsonl({"text": page}, {"text": "Menu\nLogin"}))], cleaning=Cleaning(c4_lines=True)
    )
    assert docs == [
        "Welcome to our bakery in the old town of Lyon.\nWe bake bread every morning with flour from local mills!"
    ]
    assert stats.lines_removed == 5 and stats.empty_removed == 1  # the page with no sentence is left empty


def test_quality_filters_left_off_are_not_recorded():
    assert set(Cleaning().recorded()) == {"nfc", "remove_control", "normalize_whitespace", "deduplicate", "min_chars"}
    assert Cleaning(word_count=(50, 100_000)).recorded()["word_count"] == (50, 100_000)
    assert "max_symbol_word_ratio" in Cleaning(max_symbol_word_ratio=0.0).recorded()  # 0.0 is a threshold, not "off"
