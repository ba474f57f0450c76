"""GGUF files, the format llama.cpp and Ollama load: ``save_gguf`` writes one (written only: nothing here reads GGUF).

The file is written with ``gguf``, llama.cpp's own Python writer (gguf-py; the ``gguf`` extra), and follows
llama.cpp's ``convert_hf_to_gguf.py``:

- architecture: ``llama`` for a LLaMA-style model (RoPE, RMSNorm, SwiGLU; biases allowed), ``qwen3`` for one with
  QK-norm (no biases), ``gpt2`` for a GPT-2-style one (learned positions, LayerNorm, GELU; where the config has no
  biases, zero biases are written, which llama.cpp's ``gpt2`` requires). Everything else is refused with the reason:
  ``gguf_architecture``.
- tensors: gguf-py's names (``token_embd``, ``blk.N.attn_q`` ...); a tied head is left out (llama.cpp reuses
  ``token_embd``). Our RoPE rotates the two halves of each head (Hugging Face's layout); llama.cpp's ``llama``
  rotates adjacent pairs (Meta's layout), so the rows of q and k are permuted per head as the converter's
  ``LlamaModel.permute`` does (``interleave_rope_rows``). ``qwen3`` rotates halves (NEOX) and needs no permutation.
  GPT-2's q, k and v are written as one ``attn_qkv``.
- types: norms, biases and the position table stay F32; the other matrices are F32, F16 or Q8_0 as asked (a matrix
  whose rows are not a multiple of Q8_0's 32-value blocks falls back to F16, as in the converter).
- tokenizer: llama.cpp's GPT-2-style BPE (``tokenizer.ggml.model`` ``gpt2``): the tokens spelled in GPT-2's byte
  alphabet, token types, the merges rebuilt from tiktoken's ranks (``lit_gpt.hf_tokenizer.bpe_merges``) and the
  pre-tokenizer ``gpt-2``, whose split is GPT-2's regex, the one tiktoken's GPT-2 encodings and ``lit-gpt
  train-tokenizer`` use. llama.cpp chooses pre-tokenizers by name, so a BPE with another regex is refused. A
  character vocabulary is written as a BPE whose tokens are single characters (merges only join a character's
  UTF-8 bytes). bos and eos are the end-of-text id, and no bos is added to prompts (lit_gpt adds none). Padded
  vocabulary rows become unused ``[PAD<id>]`` tokens; llama.cpp does not mask their logits as lit_gpt's sampling
  does.

No Lightning; ``gguf`` is imported only when a file is written.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.extras import require
from lit_gpt.formats.files import make_dir
from lit_gpt.formats.weights import cpu_state
from lit_gpt.hf_tokenizer import bpe_merges
from lit_gpt.model import GPT
from lit_gpt.tokenizer import EOT_TEXT, GPT2_PAT_STR, Tokenizer, gpt2_byte_to_char

DTYPES = ("f32", "f16", "q8_0")
"""The tensor types ``save_gguf`` writes the matrices in."""
GGUF_FILE = "model.gguf"
"""The file ``save_gguf`` writes into a folder."""
GPT2_PRE_TOKENIZER = "gpt-2"
"""llama.cpp's name for GPT-2's pre-tokenizer regex (``llama-vocab.cpp``; split by ``unicode.cpp``'s
``unicode_regex_split_custom_gpt2``, which implements exactly ``GPT2_PAT_STR``)."""
OLLAMA_PRETOKENIZER_KEY = "tokenizer.ggml.pretokenizer"
"""The key holding the pre-tokenizer regex itself, which Ollama's Go implementations of ``llama``, ``qwen3`` ... read
(``model/models/*/model.go``: ``c.String("tokenizer.ggml.pretokenizer", <Llama 3's regex>)``)."""
_GPT2_PATTERNS = (
    GPT2_PAT_STR,
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
)
"""GPT-2's regex as openai/gpt-2 (and ``lit-gpt train-tokenizer``) spells it, and as tiktoken's ``gpt2`` /
``r50k_base`` spell it (possessive quantifiers and a single ``\\s`` for speed; the same splits)."""
_TOP = {"embed_tokens": "TOKEN_EMBD", "embed_positions": "POS_EMBD", "norm": "OUTPUT_NORM", "lm_head": "OUTPUT"}
_LAYER = {
    "input_layernorm": "ATTN_NORM",
    "self_attn.q_proj": "ATTN_Q",
    "self_attn.k_proj": "ATTN_K",
    "self_attn.v_proj": "ATTN_V",
    "self_attn.qkv_proj": "ATTN_QKV",  # GPT-2's fused q, k, v (built by gguf_tensors)
    "self_attn.o_proj": "ATTN_OUT",
    "self_attn.q_norm": "ATTN_Q_NORM",
    "self_attn.k_norm": "ATTN_K_NORM",
    "post_attention_layernorm": "FFN_NORM",
    "mlp.gate_proj": "FFN_GATE",
    "mlp.up_proj": "FFN_UP",
    "mlp.down_proj": "FFN_DOWN",
}
"""Our module names -> gguf-py's ``MODEL_TENSOR`` members (whose ``TENSOR_NAMES`` give the file's names)."""
_KNOWN_FIELDS = frozenset(
    "vocab_size padding_multiple block_size n_layer n_head n_embd n_kv_head intermediate_size position_embedding "
    "rope_theta norm norm_eps mlp bias tie_embeddings dropout sliding_window init qk_norm zero_init_proj "
    "logit_softcap value_residual gradient_checkpointing".split()
)
"""The ``Config`` fields that ``gguf_architecture`` and the writer account for; a field outside this set is refused
unless it has its default value, so a new architecture switch is not silently dropped from the file."""


def gguf_architecture(config: Config) -> str:
    """The llama.cpp architecture that expresses ``config``: ``"llama"``, ``"qwen3"`` (``qk_norm``) or ``"gpt2"``
    (learned positions).

    Raises:
        ConfigError: naming every setting that architecture lacks: sliding-window attention, a logit soft cap (only
            llama.cpp's Gemma architectures cap logits, and their blocks differ from ours), value residuals, a
            squared-ReLU MLP, the other norm or MLP, biases with QK-norm, or a ``Config`` field unknown here.
    """
    if config.position_embedding == "learned":
        arch, reason = "gpt2", "learned positions"
        problems = {
            "norm='rmsnorm' (its blocks use LayerNorm)": config.norm != "layernorm",
            f"mlp={config.mlp!r} (its MLP is GELU)": config.mlp != "gelu",
            "qk_norm=True (it has no norm on queries and keys)": config.qk_norm,
        }
    else:
        arch, reason = ("qwen3", "QK-norm") if config.qk_norm else ("llama", "RoPE")
        problems = {
            "norm='layernorm' (its blocks use RMSNorm)": config.norm != "rmsnorm",
            f"mlp={config.mlp!r} (its MLP is gated: SwiGLU)": config.mlp != "swiglu",
            "bias=True (qwen3 has no biases)": config.qk_norm and config.bias,
        }
    problems |= {
        f"sliding_window={config.sliding_window}": config.sliding_window is not None,
        f"logit_softcap={config.logit_softcap} (llama.cpp caps logits only in Gemma models)": config.logit_softcap
        is not None,
        "value_residual=True": config.value_residual,
    }
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        unknown = field.init and field.name not in _KNOWN_FIELDS and value != field.default
        problems[f"{field.name}={value!r} (a setting this GGUF writer does not know)"] = unknown
    found = [name for name, bad in problems.items() if bad]
    if found:
        raise ConfigError(
            f"cannot export to GGUF: llama.cpp's {arch} architecture (chosen for {reason}) cannot express "
            f"{'; '.join(found)}; save it in lit_gpt's own folder format instead"
        )
    return arch


@dataclasses.dataclass
class GGUFVocab:
    """A tokenizer as GGUF's ``tokenizer.ggml.*`` keys: ``tokens`` and ``token_types`` (one per id, gguf-py's
    ``TokenType`` values), ``merges`` (``"left right"``, highest priority first), the pre-tokenizer name and the
    end-of-text id."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    eot_id: int


def gguf_vocab(tokenizer: Tokenizer, n_vocab: int) -> GGUFVocab:
    """``tokenizer`` as llama.cpp's GPT-2-style BPE over ``n_vocab`` ids (the model's padded vocabulary).

    Raises:
        ConfigError: if the tokenizer's pre-tokenization regex is not GPT-2's (llama.cpp picks pre-tokenizers by
            name), it is not a byte-level BPE, or it has more ids than the model.
    """
    normal, control, unused = 1, 3, 5  # gguf-py's TokenType: NORMAL, CONTROL, UNUSED
    if tokenizer.vocab_size > n_vocab:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only {n_vocab}")
    if tokenizer.kind == "char":
        pieces = {i: c.encode("utf-8") for i, c in enumerate(tokenizer.chars)}
        specials, merges = {EOT_TEXT: tokenizer.eot_id}, _char_merges(pieces.values())
    else:
        encoding = tokenizer.encoding
        if encoding._pat_str not in _GPT2_PATTERNS:
            raise ConfigError(
                f"cannot export the {tokenizer.name!r} tokenizer to GGUF: llama.cpp chooses its pre-tokenizer by name "
                "and has none with this tokenizer's regex (GPT-2's is the one supported)"
            )
        ranks = encoding._mergeable_ranks  # tiktoken's attributes (its README extends encodings so)
        try:
            merges = bpe_merges(ranks)
        except ValueError as err:
            raise ConfigError(f"cannot export the {tokenizer.name!r} tokenizer to GGUF: {err}") from None
        pieces, specials = {rank: token for token, rank in ranks.items()}, dict(encoding._special_tokens)
    spell = _byte_speller()
    tokens, types = [f"[PAD{i}]" for i in range(n_vocab)], [unused] * n_vocab
    for i, piece in pieces.items():
        tokens[i], types[i] = spell(piece), normal
    for text, i in specials.items():
        tokens[i], types[i] = text, control
    # llama.cpp requires the merges key and gguf-py writes no empty list: a vocabulary without merges (all-ASCII
    # characters, a bytes-only BPE) gets one that never applies, as no text piece is ever spelled "<|endoftext|>"
    spelled = [f"{spell(a)} {spell(b)}" for a, b in merges] or [f"{EOT_TEXT} {EOT_TEXT}"]
    return GGUFVocab(tokens, types, spelled, GPT2_PRE_TOKENIZER, tokenizer.eot_id)


def _byte_speller():
    to_char = gpt2_byte_to_char()
    return lambda piece: "".join(to_char[b] for b in piece)


def _char_merges(pieces) -> list[tuple[bytes, bytes]]:
    """Merges that join each multi-byte character from its UTF-8 bytes, left to right."""
    pairs = (((piece[: k - 1], piece[k - 1 : k]) for k in range(2, len(piece) + 1)) for piece in pieces)
    return list(dict.fromkeys(pair for chain in pairs for pair in chain))


def interleave_rope_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The rows of a query or key projection (weight (n_heads * hs, C) or bias (n_heads * hs,)) reordered from the
    half-split RoPE layout (pairs (i, i + hs/2)) to the interleaved one (pairs (2i, 2i + 1)) that llama.cpp's
    ``llama`` architecture rotates: ``convert_hf_to_gguf.py``'s ``LlamaModel.permute``. Same shape."""
    return (
        weight.reshape(n_heads, 2, weight.shape[0] // n_heads // 2, *weight.shape[1:])
        .transpose(1, 2)
        .reshape(weight.shape)
    )


def gguf_tensors(state: dict[str, torch.Tensor], config: Config, arch: str) -> dict[str, torch.Tensor]:
    """Our state dict as the float32 tensors of a GGUF file of ``arch`` (see ``gguf_architecture``), keyed by our
    module names with ``weight`` / ``bias`` (``layers.{i}.self_attn.qkv_proj`` for GPT-2's fused projection); the
    names in the file are ``gguf_name``'s. A tied head is left out; llama's q and k rows are interleaved
    (``interleave_rope_rows``); GPT-2 gets zero biases where the config has none and one fused ``qkv_proj``."""
    state = {k: v.float() for k, v in state.items() if not (config.tie_embeddings and k == "lm_head.weight")}
    if arch == "llama":
        for key in [k for k in state if ".self_attn.q_proj." in k or ".self_attn.k_proj." in k]:
            heads = config.n_head if ".q_proj." in key else config.n_kv_head
            state[key] = interleave_rope_rows(state[key], heads)
    if arch == "gpt2":
        for key in [k for k in state if k.endswith(".weight") and not k.startswith(("embed_", "lm_head"))]:
            state.setdefault(key.removesuffix("weight") + "bias", torch.zeros(state[key].shape[0]))
        for i in range(config.n_layer):
            for param in ("weight", "bias"):
                parts = [state.pop(f"layers.{i}.self_attn.{x}_proj.{param}") for x in "qkv"]
                state[f"layers.{i}.self_attn.qkv_proj.{param}"] = torch.cat(parts)  # (C + 2 * nkv * hs, ...)
    return {k: v.contiguous() for k, v in state.items()}


def gguf_name(key: str, gguf) -> str:
    """The GGUF tensor name of one of ``gguf_tensors``' keys (``layers.3.mlp.up_proj.weight`` ->
    ``blk.3.ffn_up.weight``), from gguf-py's ``TENSOR_NAMES``."""
    module, param = key.rsplit(".", 1)
    if module in _TOP:
        return f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR[_TOP[module]]]}.{param}"
    _, block, sub = module.split(".", 2)  # layers.{i}.{sub}
    return f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR[_LAYER[sub]]].format(bid=int(block))}.{param}"


def gguf_path(out: str | Path) -> Path:
    """The file ``save_gguf`` writes for ``out``: ``out`` itself if it ends in ``.gguf`` and is not a folder, else
    ``GGUF_FILE`` in the folder ``out`` (created if missing).

    Raises:
        ConfigError: if ``out`` is an existing file without the ``.gguf`` suffix.
    """
    out = Path(out)
    if out.suffix == ".gguf" and not out.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    return make_dir(out) / GGUF_FILE


def save_gguf(model: GPT, tokenizer: Tokenizer, out: str | Path, dtype: str = "f32", name: str = "lit_gpt") -> Path:
    """Write ``model`` and ``tokenizer`` as one GGUF file for llama.cpp; returns its path (see ``gguf_path``).

    ``dtype`` (one of ``DTYPES``) is the type of the matrices; ``name`` is stored as ``general.name``. The file is
    written beside its final name and moved into place when complete.

    Raises:
        ConfigError: if ``dtype`` is unknown, llama.cpp cannot express the model or the tokenizer
            (``gguf_architecture``, ``gguf_vocab``; nothing is written then), ``model`` is quantized, ``out`` is
            unusable, or the ``gguf`` extra is missing.
    """
    gguf = require("gguf", "gguf", "GGUF export")
    if dtype not in DTYPES:
        raise ConfigError(f"GGUF dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    config = model.config
    arch = gguf_architecture(config)
    vocab = gguf_vocab(tokenizer, config.padded_vocab_size)
    state = cpu_state(model)
    quantized = next((k for k, v in state.items() if type(v) is not torch.Tensor), None)
    if quantized is not None:
        raise ConfigError(f"cannot export quantized weights ({quantized}) to GGUF: start from the float model")
    tensors = gguf_tensors(state, config, arch)
    path = gguf_path(out)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial, arch)
    _write_metadata(writer, gguf, config, arch, dtype, name)
    _write_vocab(writer, vocab)
    for key, tensor in tensors.items():
        _add_tensor(writer, gguf, gguf_name(key, gguf), tensor.numpy(), dtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, path)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path} ({err.strerror}); choose another path") from None
    return path


def _write_metadata(writer, gguf, config: Config, arch: str, dtype: str, name: str) -> None:
    """The ``general.*`` and ``{arch}.*`` hyperparameter keys, as ``convert_hf_to_gguf.py`` writes them."""
    file_type = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}[dtype]
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType[file_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(config.padded_vocab_size)
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.n_kv_head)
    writer.add_key_length(config.head_size)
    writer.add_value_length(config.head_size)
    if arch == "gpt2":
        writer.add_layer_norm_eps(config.norm_eps)
    else:
        writer.add_rope_dimension_count(config.head_size)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_layer_norm_rms_eps(config.norm_eps)


def _write_vocab(writer, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    # Ollama's own Go models split text by this key's regex (Llama 3's when it is missing); llama.cpp ignores it
    writer.add_string(OLLAMA_PRETOKENIZER_KEY, GPT2_PAT_STR)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.eot_id)
    writer.add_eos_token_id(vocab.eot_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def _add_tensor(writer, gguf, name: str, data: np.ndarray, dtype: str) -> None:
    """Add one float32 tensor in the type ``convert_hf_to_gguf.py`` would choose (see the module docstring)."""
    types = gguf.GGMLQuantizationType
    keep_f32 = dtype == "f32" or data.ndim < 2 or not name.endswith(".weight") or name.endswith("_norm.weight")
    qtype = types.F32 if keep_f32 or name.startswith("position_embd.") else types[dtype.upper()]
    try:
        packed = gguf.quants.quantize(data, qtype)
    except gguf.QuantError:  # rows not a multiple of Q8_0's block size
        qtype = types.F16
        packed = gguf.quants.quantize(data, qtype)
    writer.add_tensor(name, packed, raw_dtype=qtype)
