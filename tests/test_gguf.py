"""GGUF export (``lit_gpt.formats.gguf``, ``lit-gpt export --format gguf``): the file read back with gguf-py's own
``GGUFReader`` (metadata, tensor names, shapes, types, values), the RoPE row permutation checked by what it must
preserve (attention scores), the refusals, and, where llama-cpp-python is installed, llama.cpp itself loading our
files: same tokens for the same text, logits within 1e-3, the same 64-token greedy continuation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_gpt.checkpoint import save_folder, save_gguf
from lit_gpt.config import Config, ConfigError
from lit_gpt.data.bpe import train_bpe
from lit_gpt.formats.gguf import gguf_architecture
from lit_gpt.generate import generate
from lit_gpt.hf_tokenizer import gpt2_tokenizer_files
from lit_gpt.model import GPT
from lit_gpt.rope import apply_rope, rope_cache
from lit_gpt.tokenizer import GPT2_PAT_STR, Tokenizer, gpt2_byte_to_char

gguf = pytest.importorskip("gguf", reason='GGUF export needs the gguf extra: pip install -e ".[gguf]"')

BASE = dict(vocab_size=99, block_size=32, n_layer=2, n_head=4, n_embd=64)
GPT2_STYLE = dict(position_embedding="learned", norm="layernorm", mlp="gelu")
CONFIGS = {
    "llama": (Config(**BASE), "llama"),
    "llama-gqa-untied-bias-padded": (
        Config(**BASE, n_kv_head=2, tie_embeddings=False, bias=True, padding_multiple=64),
        "llama",
    ),
    "qwen3-gqa": (Config(**BASE, n_kv_head=1, qk_norm=True), "qwen3"),
    "gpt2-no-bias": (Config(**BASE, **GPT2_STYLE), "gpt2"),
    "gpt2-gqa-bias-untied": (Config(**BASE, **GPT2_STYLE, bias=True, n_kv_head=2, tie_embeddings=False), "gpt2"),
}
UNICODE = "naïve café, Ünïcödé — 日本語のテキスト, emoji 🙂👍🏽, tabs\tand  spaces  \n\n\r\n end "


def randomized(config: Config) -> GPT:
    """A model whose every parameter (norm weights and biases too) is random, so no tensor is left at its init."""
    model = GPT(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_()
    return model.eval()


def read(path) -> tuple[dict, dict]:
    """The file's metadata (key -> value) and tensors (name -> ReaderTensor)."""
    reader = gguf.GGUFReader(path)
    fields = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    return fields, {tensor.name: tensor for tensor in reader.tensors}


def values(tensor) -> np.ndarray:
    """A tensor read back, as float32 in numpy (row-major, our shape)."""
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)


def half_split(rows: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of the converter's ``LlamaModel.permute``: interleaved RoPE rows (per head: pair i at rows 2i,
    2i+1) back to the half-split layout (pair i at rows i, i + hs/2)."""
    return rows.reshape(n_heads, rows.shape[0] // n_heads // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def expected_tensors(model: GPT, arch: str) -> dict[str, np.ndarray]:
    """What each GGUF tensor must hold, written out by hand from llama.cpp's names (gguf-py's ``TENSOR_NAMES``)."""
    config, state = model.config, {k: v.detach().numpy() for k, v in model.state_dict().items()}
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.o_proj": "attn_output"}
    names |= {f"self_attn.{x}_proj": f"attn_{x}" for x in "qkv"} | {
        f"self_attn.{x}_norm": f"attn_{x}_norm" for x in "qk"
    }
    names |= {f"mlp.{x}_proj": f"ffn_{x}" for x in ("gate", "up", "down")}
    out = {"token_embd.weight": state["embed_tokens.weight"], "output_norm.weight": state["norm.weight"]}
    if not config.tie_embeddings:
        out["output.weight"] = state["lm_head.weight"]
    if "embed_positions.weight" in state:
        out["position_embd.weight"] = state["embed_positions.weight"]
    for key, value in state.items():
        if key.startswith("layers."):
            _, i, rest = key.split(".", 2)
            module, param = rest.rsplit(".", 1)
            out[f"blk.{i}.{names[module]}.{param}"] = value
    if "norm.bias" in state:
        out["output_norm.bias"] = state["norm.bias"]
    if arch == "gpt2":  # llama.cpp's gpt2 requires every bias: zeros where the model has none
        for name in [n for n in out if n.endswith(".weight") and (n.startswith("blk.") or n == "output_norm.weight")]:
            out.setdefault(name.removesuffix("weight") + "bias", np.zeros(out[name].shape[0], np.float32))
        for i in range(config.n_layer):
            for param in ("weight", "bias"):
                out[f"blk.{i}.attn_qkv.{param}"] = np.concatenate([out.pop(f"blk.{i}.attn_{x}.{param}") for x in "qkv"])
    return out


@pytest.mark.parametrize("name", CONFIGS)
def test_metadata_names_shapes_and_values(name, char_tokenizer, tmp_path):
    config, arch = CONFIGS[name]
    model = randomized(config)
    path = save_gguf(model, char_tokenizer(), tmp_path / "m.gguf")
    assert path == tmp_path / "m.gguf" and not list(tmp_path.glob("*.partial"))
    fields, tensors = read(path)
    assert fields["general.architecture"] == arch and fields["general.file_type"] == 0  # ALL_F32
    expected = {
        "context_length": config.block_size,
        "embedding_length": config.n_embd,
        "block_count": config.n_layer,
        "feed_forward_length": config.intermediate_size,
        "attention.head_count": config.n_head,
        "attention.head_count_kv": config.n_kv_head,
    }
    if arch == "gpt2":
        expected["attention.layer_norm_epsilon"] = config.norm_eps
    else:
        expected |= {"rope.freq_base": config.rope_theta, "rope.dimension_count": config.head_size}
        expected["attention.layer_norm_rms_epsilon"] = config.norm_eps
    for key, value in expected.items():
        assert fields[f"{arch}.{key}"] == pytest.approx(value), key

    want = expected_tensors(model, arch)
    assert set(tensors) == set(want)
    allowed = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH[arch.upper()]]}
    templates = {
        ".".join(["blk", "{bid}", *n.split(".")[2:-1]] if n.startswith("blk.") else n.split(".")[:-1]) for n in tensors
    }
    assert templates <= allowed  # every tensor is one that gguf-py lists for the architecture
    for name, tensor in tensors.items():
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32, name
        assert tuple(reversed(tensor.shape.tolist())) == want[name].shape, name  # GGUF lists dimensions innermost first
        got = values(tensor)
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            got = half_split(got, config.n_head if ".attn_q." in name else config.n_kv_head)
        assert np.array_equal(got, want[name]), name


def test_interleaved_rows_keep_attention_scores():
    """llama.cpp's ``llama`` rotates adjacent pairs (Meta's RoPE, ggml's NORM mode); ours rotates the two halves. With
    the rows of q and k permuted, every query-key score (q_m . k_n) must be what our model computes."""
    from lit_gpt.formats.gguf import interleave_rope_rows

    n_heads, hs, C, T = 3, 8, 16, 5
    wq, wk, x = torch.randn(n_heads * hs, C), torch.randn(n_heads * hs, C), torch.randn(T, C)
    cos, sin = rope_cache(T, hs, 500.0)

    def heads(y):  # (T, nh * hs) -> (1, nh, T, hs)
        return y.view(T, n_heads, hs).transpose(0, 1)[None]

    ours = apply_rope(heads(x @ wq.T), cos, sin) @ apply_rope(heads(x @ wk.T), cos, sin).transpose(-1, -2)

    def rope_interleaved(y):  # pairs (2i, 2i + 1) rotated by theta_i = 500 ** (-2i / hs) times the position
        angle = torch.arange(T)[:, None] * 500.0 ** (-torch.arange(0, hs, 2) / hs)  # (T, hs / 2)
        a, b = y[..., 0::2], y[..., 1::2]
        return torch.stack((a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()), -1).flatten(-2)

    q = rope_interleaved(heads(x @ interleave_rope_rows(wq, n_heads).T))
    k = rope_interleaved(heads(x @ interleave_rope_rows(wk, n_heads).T))
    torch.testing.assert_close(q @ k.transpose(-1, -2), ours, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype, matrix_type", [("f16", "F16"), ("q8_0", "Q8_0")])
def test_f16_and_q8_0(dtype, matrix_type, char_tokenizer, tmp_path):
    config = Config(**{**BASE, "n_embd": 64, "intermediate_size": 80}, bias=True)  # down_proj rows: 80, not 32k
    model = randomized(config)
    path = save_gguf(model, char_tokenizer(), tmp_path, dtype=dtype)
    assert path == tmp_path / "model.gguf"
    fields, tensors = read(path)
    assert fields["general.file_type"] == {"f16": 1, "q8_0": 7}[dtype]
    want = expected_tensors(model, "llama")
    for name, tensor in tensors.items():
        kind = "F32" if tensor.data.ndim == 1 or "_norm" in name or name.endswith(".bias") else matrix_type
        if dtype == "q8_0" and name.endswith("ffn_down.weight"):
            kind = "F16"  # 80 values per row: not whole 32-value blocks, so F16 as in the converter
        assert tensor.tensor_type.name == kind, name
        got = values(tensor)
        if ".attn_q." in name or ".attn_k." in name:
            got = half_split(got, config.n_head)
        scale = np.abs(want[name]).max(axis=-1, keepdims=True)
        assert np.all(np.abs(got - want[name]) <= scale * (1 / 127 if kind == "Q8_0" else 1e-3)), name


def test_gpt2_tokenizer_metadata(tmp_path):
    tokenizer = Tokenizer.from_name("gpt2")
    config = Config(**{**BASE, "vocab_size": tokenizer.vocab_size, "n_layer": 1}, padding_multiple=64)
    fields, _ = read(save_gguf(GPT(config), tokenizer, tmp_path / "m.gguf"))
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.pretokenizer"] == GPT2_PAT_STR  # for Ollama's Go models, which read the regex
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == fields["llama.vocab_size"] == 50304
    # the same spelling and merges as Hugging Face's GPT-2 files (which the transformers tests check against tiktoken)
    hf = gpt2_tokenizer_files(tokenizer, config.block_size)
    vocab = {text: i for i, text in enumerate(tokens[:50257])}
    assert vocab == __import__("json").loads(hf["vocab.json"])
    assert fields["tokenizer.ggml.merges"] == hf["merges.txt"].splitlines()[1:]
    assert types[:50256] == [1] * 50256 and types[50256] == 3 and types[50257:] == [5] * 47
    assert tokens[50256] == "<|endoftext|>" and tokens[50300] == "[PAD50300]"
    assert fields["tokenizer.ggml.bos_token_id"] == fields["tokenizer.ggml.eos_token_id"] == 50256
    assert fields["tokenizer.ggml.add_bos_token"] is False and fields["tokenizer.ggml.add_eos_token"] is False


def test_own_bpe_and_char_tokenizer_metadata(shakespeare, tmp_path):
    text = shakespeare.read_text(encoding="utf-8")[:50000]
    bpe = Tokenizer(train_bpe([text], 400), bpe=True)
    fields, _ = read(save_gguf(GPT(Config(**{**BASE, "vocab_size": 400})), bpe, tmp_path / "bpe.gguf"))
    spell = gpt2_byte_to_char()
    ranks = bpe.encoding._mergeable_ranks
    assert fields["tokenizer.ggml.tokens"] == ["".join(spell[b] for b in t) for t in sorted(ranks, key=ranks.get)] + [
        "<|endoftext|>"
    ]
    merges = fields["tokenizer.ggml.merges"]
    assert len(merges) == 400 - 257 and all(len(m.split(" ")) == 2 for m in merges)
    assert ["".join(m.split(" ")) for m in merges] == fields["tokenizer.ggml.tokens"][256:399]

    chars = Tokenizer.char(["ab €é\n"])
    fields, _ = read(save_gguf(GPT(Config(**{**BASE, "vocab_size": 7})), chars, tmp_path / "char.gguf"))
    assert fields["tokenizer.ggml.tokens"] == ["Ċ", "Ġ", "a", "b", "Ã©", "âĤ¬", "<|endoftext|>"]
    assert fields["tokenizer.ggml.merges"] == ["Ã ©", "â Ĥ", "âĤ ¬"]  # each character's bytes joined, nothing more
    ascii_chars = Tokenizer.char(["ab\n"])
    fields, _ = read(save_gguf(GPT(Config(**{**BASE, "vocab_size": 4})), ascii_chars, tmp_path / "ascii.gguf"))
    assert fields["tokenizer.ggml.merges"] == ["<|endoftext|> <|endoftext|>"]  # llama.cpp needs one; it never applies


@dataclasses.dataclass
class _FutureConfig(Config):
    future_setting: int | None = None  # a setting the GGUF writer has not been taught


@pytest.mark.parametrize(
    "config, match",
    [
        (Config(**BASE, sliding_window=8), r"llama architecture \(chosen for RoPE\) cannot express sliding_window=8"),
        (Config(**BASE, logit_softcap=30.0), r"logit_softcap=30.0 \(llama.cpp caps logits only in Gemma"),
        (Config(**BASE, value_residual=True), "value_residual=True"),
        (Config(**BASE, mlp="relu2"), r"mlp='relu2' \(its MLP is gated: SwiGLU\)"),
        (Config(**BASE, norm="layernorm", mlp="gelu"), "norm='layernorm'.*; mlp='gelu'"),
        (Config(**BASE, qk_norm=True, bias=True), r"qwen3 architecture \(chosen for QK-norm\).*bias=True"),
        (Config(**BASE, **GPT2_STYLE, qk_norm=True), r"gpt2 architecture \(chosen for learned positions\).*qk_norm"),
        (Config(**BASE, position_embedding="learned"), "norm='rmsnorm'.*; mlp='swiglu'"),
        (_FutureConfig(**BASE, future_setting=4), "future_setting=4 .a setting this GGUF writer does not know"),
    ],
)
def test_what_llama_cpp_cannot_express(config, match, char_tokenizer, tmp_path):
    with pytest.raises(ConfigError, match=f"^cannot export to GGUF: .*{match}.*; save it in lit_gpt's own folder"):
        save_gguf(GPT(config), char_tokenizer(), tmp_path / "m.gguf")
    assert not list(tmp_path.iterdir())
    assert gguf_architecture(_FutureConfig(**BASE)) == "llama"  # the default value changes nothing


def test_tokenizers_llama_cpp_cannot_express(byte_encoding, tmp_path):
    cl100k = Tokenizer.from_name("cl100k_base")
    with pytest.raises(
        ConfigError, match="'cl100k_base' tokenizer to GGUF: llama.cpp chooses its pre-tokenizer by name"
    ):
        save_gguf(GPT(Config(**{**BASE, "vocab_size": cl100k.vocab_size})), cl100k, tmp_path / "m.gguf")
    with pytest.raises(ConfigError, match="the tokenizer has 257 ids but the model only 99"):
        save_gguf(GPT(Config(**BASE)), Tokenizer(byte_encoding, bpe=True), tmp_path / "m.gguf")
    assert not list(tmp_path.iterdir())


def test_export_command(char_tokenizer, run_main, errors, tmp_path):
    model = randomized(Config(**BASE))
    save_folder(model, char_tokenizer(), tmp_path / "ours")
    code, out, _ = run_main("export", "--checkpoint", tmp_path / "ours", "--out", tmp_path / "q", "--format", "gguf")
    assert code == 0 and f"wrote a GGUF file to {tmp_path / 'q' / 'model.gguf'}" in out
    code, _, _ = run_main(
        "export", "--checkpoint", tmp_path / "ours", "--out", tmp_path / "x.gguf", "--format", "gguf", "--dtype", "f16"
    )
    assert code == 0 and read(tmp_path / "x.gguf")[0]["general.file_type"] == 1
    code, _, err = run_main("export", "--checkpoint", tmp_path / "ours", "--out", tmp_path / "hf", "--dtype", "f16")
    assert code == 2 and errors(err) == ["error: --dtype applies to --format gguf only, not --format hf"]
    bad = Config(**BASE, sliding_window=4)
    save_folder(GPT(bad), char_tokenizer(), tmp_path / "swa")
    code, _, err = run_main("export", "--checkpoint", tmp_path / "swa", "--out", tmp_path / "s", "--format", "gguf")
    assert code == 2 and len(errors(err)) == 1 and "cannot express sliding_window=4" in err
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------------------------------------
# llama.cpp itself (llama-cpp-python, built from its source package)


def train_a_little(model: GPT, ids: list[int], steps: int = 300, T: int = 64, B: int = 8) -> GPT:
    """A few hundred AdamW steps on ``ids``, so that greedy decoding follows the text (words, not one token over and
    over) and its choices are not near-ties between tokens."""
    data, generator = torch.tensor(ids), torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        starts = torch.randint(len(ids) - T - 1, (B,), generator=generator).tolist()
        x = torch.stack([data[s : s + T] for s in starts])
        y = torch.stack([data[s + 1 : s + T + 1] for s in starts])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def check_in_llama_cpp(llama_cpp, path, model: GPT, tokenizer: Tokenizer, texts: list[str], atol: float) -> list[int]:
    """llama.cpp on ``path`` against ``model``: its tokens of ``texts``, its logits over ``PROMPT`` (float32 KV cache,
    so that only the arithmetic differs) within ``atol``, and its greedy continuation of 64 tokens, which is returned."""
    f32 = llama_cpp.GGML_TYPE_F32
    llm = llama_cpp.Llama(
        str(path), n_ctx=model.config.block_size, n_threads=2, logits_all=True, type_k=f32, type_v=f32, verbose=False
    )
    for text in texts:
        assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == tokenizer.encode(text)
    ids = tokenizer.encode(PROMPT)
    llm.eval(ids)
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].numpy()
        greedy = generate(model, torch.tensor([ids]), 64, temperature=0.0)[0, len(ids) :].tolist()
    assert np.abs(np.asarray(llm.scores[: len(ids)]) - ours).max() < atol
    continuation = []
    for token in llm.generate(ids, temp=0.0, repeat_penalty=1.0):
        continuation.append(token)
        if len(continuation) == 64:
            break
    assert continuation == greedy
    assert llm.detokenize(ids + greedy).decode("utf-8") == tokenizer.decode(ids + greedy)
    llm.close()
    return greedy


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip(
        "llama_cpp",
        reason='llama-cpp-python is not installed (it compiles llama.cpp: CMAKE_ARGS="-DLLAVA_BUILD=OFF" pip install '
        "llama-cpp-python)",
    )


PROMPT = "ROMEO:\nWhat light through yonder"


def corpus(shakespeare) -> tuple[str, str]:
    """Training text, and held-out text to compare tokenizations on."""
    text = shakespeare.read_text(encoding="utf-8")
    return text[:200_000], text[-3000:]


@pytest.mark.slow
def test_llama_cpp_runs_a_gpt2_bpe_model(llama_cpp, shakespeare, tmp_path):
    """LLaMA-style (GQA, biases, untied head, padded vocabulary) on GPT-2's BPE; f32 matches, q8_0 generates."""
    train, held_out = corpus(shakespeare)
    gpt2 = Tokenizer.from_name("gpt2")
    config = Config(vocab_size=gpt2.vocab_size, padding_multiple=64, block_size=128, n_layer=2, n_head=4, n_embd=64)
    # 300 steps over the whole text leave a 50k-vocabulary model of this size looping over two to four tokens (which
    # ones depends on the float rounding of training); over its first 4096 tokens it learns words (30+ distinct)
    ids = gpt2.encode(train)[:4096]
    model = train_a_little(GPT(config.replace(n_kv_head=2, bias=True, tie_embeddings=False)), ids)
    path = save_gguf(model, gpt2, tmp_path / "gpt2-bpe.gguf")
    greedy = check_in_llama_cpp(llama_cpp, path, model, gpt2, [held_out, UNICODE], atol=1e-3)
    assert len(set(greedy)) > 8  # a trained model's continuation, not a few tokens over and over

    q8 = llama_cpp.Llama(str(save_gguf(model, gpt2, tmp_path / "q8.gguf", dtype="q8_0")), n_ctx=128, verbose=False)
    completion = q8.create_completion(PROMPT, max_tokens=64, temperature=0.0)
    assert completion["usage"]["completion_tokens"] == 64 and completion["choices"][0]["text"].strip()
    q8.close()


@pytest.mark.slow
def test_llama_cpp_runs_an_own_bpe_model(llama_cpp, shakespeare, tmp_path):
    """QK-norm (qwen3; multi-query attention) on a BPE trained like `lit-gpt train-tokenizer`."""
    train, held_out = corpus(shakespeare)
    bpe = Tokenizer(train_bpe([train], 512), bpe=True)
    config = Config(
        vocab_size=bpe.vocab_size, block_size=128, n_layer=2, n_head=4, n_kv_head=1, n_embd=64, qk_norm=True
    )
    model = train_a_little(GPT(config), bpe.encode(train))
    path = save_gguf(model, bpe, tmp_path / "own-bpe.gguf")
    greedy = check_in_llama_cpp(llama_cpp, path, model, bpe, [held_out, UNICODE], atol=1e-3)
    assert len(set(greedy)) > 8


@pytest.mark.slow
def test_llama_cpp_runs_a_gpt2_style_char_model(llama_cpp, shakespeare, tmp_path):
    """GPT-2-style (no biases in the config: zeros written) with the character vocabulary (all ASCII: no merges).
    llama.cpp's GELU reads its input through an f16 table, hence the looser logits bound."""
    train, held_out = corpus(shakespeare)
    chars = Tokenizer.char([train, held_out])
    config = Config(vocab_size=chars.vocab_size, block_size=128, n_layer=2, n_head=4, n_embd=64, **GPT2_STYLE)
    model = train_a_little(GPT(config), chars.encode(train))
    check_in_llama_cpp(llama_cpp, save_gguf(model, chars, tmp_path / "char.gguf"), model, chars, [held_out], atol=2e-3)
