"""Our GPT against Hugging Face ``LlamaForCausalLM`` / ``GPT2LMHeadModel`` through ``lit_gpt.export``'s maps.

Every model has random (not initial) norm weights and biases, so a swapped or dropped tensor changes the logits.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch.testing import assert_close

from lit_gpt.checkpoint import load_hf, save_hf
from lit_gpt.config import Config
from lit_gpt.generate import generate
from lit_gpt.model import GPT, RMSNorm
from lit_gpt.rope import apply_rope, rope_cache

transformers = pytest.importorskip("transformers")

BASE = dict(vocab_size=99, block_size=32, n_layer=2, n_head=4, n_embd=32)
GPT2_STYLE = dict(position_embedding="learned", norm="layernorm", mlp="gelu", bias=True)
CONFIGS = {
    "llama-mha-tied": Config(**BASE),
    "llama-gqa-untied-bias": Config(**BASE, n_kv_head=2, tie_embeddings=False, bias=True, padding_multiple=64),
    "llama-mqa-theta-eps": Config(**BASE, n_kv_head=1, intermediate_size=48, rope_theta=500.0, norm_eps=1e-3),
    "qwen3-gqa-tied": Config(**BASE, n_kv_head=2, qk_norm=True),
    "qwen3-untied-theta": Config(**BASE, qk_norm=True, tie_embeddings=False, rope_theta=500.0, norm_eps=1e-5),
    "gpt2-tied": Config(**BASE, **GPT2_STYLE),
    "gpt2-untied-eps": Config(**BASE, **GPT2_STYLE, tie_embeddings=False, norm_eps=1e-3, intermediate_size=80),
}


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Weights ~ N(0, 0.2), norm weights ~ N(1, 0.2), so every tensor (biases included) shapes the logits."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(1.0 if "norm" in name or "ln_" in name else 0.0, 0.2)
    return model.eval()


class TransformersLog(logging.Handler):
    """Collects the warnings transformers logs (its load report names missing and unexpected weights)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_hf_quietly(folder) -> tuple[torch.nn.Module, list[str]]:
    """``AutoModelForCausalLM.from_pretrained(folder)`` and every warning it logged or raised."""
    handler = TransformersLog()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hf = transformers.AutoModelForCausalLM.from_pretrained(folder)
    finally:
        logger.removeHandler(handler)
    return hf.eval(), handler.messages + [str(w.message) for w in caught]


@pytest.mark.parametrize("name", CONFIGS)
def test_exported_model_matches_transformers(char_tokenizer, name, tmp_path):
    config = CONFIGS[name]
    model = randomize(GPT(config))
    arch = save_hf(model, char_tokenizer(), tmp_path)
    hf, messages = load_hf_quietly(tmp_path)
    assert messages == []  # no missing, unexpected or newly initialised weights, no config complaints
    llama = config.position_embedding == "rope"
    expected = ("Qwen3ForCausalLM" if config.qk_norm else "LlamaForCausalLM") if llama else "GPT2LMHeadModel"
    assert type(hf).__name__ == arch == expected
    assert hf.config.vocab_size == config.padded_vocab_size
    if llama:
        assert hf.config.rope_parameters["rope_theta"] == config.rope_theta
        assert hf.config.rms_norm_eps == config.norm_eps
        assert hf.config.num_key_value_heads == config.n_kv_head
        inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, config.head_size, 2).float() / config.head_size)
        assert_close(hf.model.rotary_emb.inv_freq, inv_freq)  # the theta transformers really applies
    else:
        assert hf.config.layer_norm_epsilon == config.norm_eps
    assert (hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()) == config.tie_embeddings

    idx = torch.randint(0, config.vocab_size, (2, config.block_size))
    with torch.no_grad():
        assert_close(model(idx), hf(idx).logits)

    prompt = idx[:1, :8]
    ours = generate(model, prompt, max_new_tokens=12, temperature=0.0)
    hf.generation_config.eos_token_id = None  # decode all 12 tokens, as ours does, even past end-of-text
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=12)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("name", ["llama-gqa-untied-bias", "qwen3-gqa-tied", "gpt2-tied"])
def test_transformers_model_imports(name, tmp_path):
    """A model built and saved by transformers itself (not by our export) imports with the same logits."""
    config = CONFIGS[name]
    if config.qk_norm:
        hf_config = transformers.Qwen3Config(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=32,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
            tie_word_embeddings=True,
            bos_token_id=0,
            eos_token_id=0,
        )
        hf = transformers.Qwen3ForCausalLM(hf_config)
    elif config.position_embedding == "rope":
        hf_config = transformers.LlamaConfig(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32,
            rms_norm_eps=1e-5,
            attention_bias=True,
            mlp_bias=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
            tie_word_embeddings=False,
            bos_token_id=0,
            eos_token_id=0,
        )
        hf = transformers.LlamaForCausalLM(hf_config)
    else:
        hf_config = transformers.GPT2Config(
            vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0, eos_token_id=0
        )
        hf = transformers.GPT2LMHeadModel(hf_config)
    randomize(hf).save_pretrained(tmp_path)
    model = load_hf(tmp_path).eval()
    assert model.config.tie_embeddings == hf_config.tie_word_embeddings
    idx = torch.randint(0, 99, (2, 32))
    with torch.no_grad():
        assert_close(model(idx), hf(idx).logits)


@pytest.mark.parametrize("theta", [10000.0, 500.0])
def test_rope_matches_llama_rotary_embedding(theta):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    T, hs = 16, 8
    hf_config = transformers.LlamaConfig(
        hidden_size=32,
        num_attention_heads=4,
        max_position_embeddings=T,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
    )
    q, k = torch.randn(2, 4, T, hs), torch.randn(2, 2, T, hs)  # GQA: fewer key heads
    hf_cos, hf_sin = LlamaRotaryEmbedding(hf_config)(q, torch.arange(T)[None])  # (1, T, hs) each
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    cos, sin = rope_cache(T, hs, theta)
    assert_close(cos, hf_cos[0])
    assert_close(sin, hf_sin[0])
    assert_close(apply_rope(q, cos, sin), hf_q)
    assert_close(apply_rope(k, cos, sin), hf_k)


def test_rmsnorm_matches_llama_rmsnorm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    ours, theirs = RMSNorm(32, eps=1e-4), LlamaRMSNorm(32, eps=1e-4)
    with torch.no_grad():
        ours.weight.normal_(1.0, 0.2)
        theirs.weight.copy_(ours.weight)
    x = torch.randn(2, 5, 32) * 3
    assert_close(ours(x), theirs(x))
    assert_close(ours(x.bfloat16()), theirs(x.bfloat16()))  # both normalise in float32 and cast back
