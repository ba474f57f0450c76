"""Real model families through ``lit_gpt.hf``: 2-layer models with the real ``config.json`` values of Llama-3.2-1B,
Qwen3-0.6B, Qwen2.5-0.5B, SmolLM2-135M and TinyLlama-1.1B, built by transformers with random weights (no hub access),
import with transformers' logits within 1e-5 (float32), and export back to the same class and logits.

The values are those of each model's ``config.json`` on the Hugging Face hub (the repository named in ``MODELS``),
written here from our knowledge of those files; only ``num_hidden_layers`` is cut to 2. The vocabulary is the real
size. Keys that only matter for training or serving in transformers (``initializer_range``, ``use_cache``,
``torch_dtype``, ``transformers_version``) are left out.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from lit_gpt.checkpoint import load_hf, save_hf
from lit_gpt.config import Config
from lit_gpt.errors import ConfigError
from lit_gpt.hf import config_from_hf

transformers = pytest.importorskip("transformers")
from test_hf_parity import load_hf_quietly  # noqa: E402  (after the importorskip above)

LLAMA_3_2_1B = {  # meta-llama/Llama-3.2-1B config.json
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "vocab_size": 128256,
}
QWEN3_0_6B = {  # Qwen/Qwen3-0.6B config.json
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
QWEN2_5_0_5B = {  # Qwen/Qwen2.5-0.5B config.json
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "max_window_layers": 24,
    "model_type": "qwen2",
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
SMOLLM2_135M = {  # HuggingFaceTB/SmolLM2-135M config.json
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "silu",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "is_llama_config": True,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_interleaved": False,
    "rope_scaling": None,
    "rope_theta": 100000,
    "tie_word_embeddings": True,
    "vocab_size": 49152,
}
TINYLLAMA_1_1B = {  # TinyLlama/TinyLlama-1.1B-Chat-v1.0 config.json
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "max_position_embeddings": 2048,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 22,
    "num_key_value_heads": 4,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "vocab_size": 32000,
}
MODELS = {
    "Llama-3.2-1B": pytest.param(LLAMA_3_2_1B, id="Llama-3.2-1B"),
    "Qwen3-0.6B": pytest.param(QWEN3_0_6B, id="Qwen3-0.6B"),
    "Qwen2.5-0.5B": pytest.param(QWEN2_5_0_5B, id="Qwen2.5-0.5B"),
    "SmolLM2-135M": pytest.param(SMOLLM2_135M, id="SmolLM2-135M"),
    "TinyLlama-1.1B": pytest.param(TINYLLAMA_1_1B, id="TinyLlama-1.1B"),
}
"""Each model's ``config.json`` values: the Hugging Face hub repositories named beside them."""


def two_layer_folder(values: dict, folder) -> torch.nn.Module:
    """A transformers model (float32, eval mode) built from ``config.json`` values with 2 layers and random weights:
    transformers' init, with norm weights ~ N(1, 0.1) and biases ~ N(0, 0.1), so that none is at its initial value;
    saved to ``folder`` by ``save_pretrained``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**values, "num_hidden_layers": 2}))
    config = transformers.AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "norm" in name:
                param.normal_(1.0, 0.1)
            elif name.endswith(".bias"):
                param.normal_(0.0, 0.1)
    hf.save_pretrained(folder)
    return hf.eval()


def assert_logits_match(ours: torch.nn.Module, hf: torch.nn.Module, vocab_size: int) -> None:
    idx = torch.randint(0, vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(ours(idx), hf(idx).logits, rtol=0.0, atol=1e-5)


@pytest.mark.parametrize("values", MODELS.values())
def test_real_configs_import_export_and_match_transformers(values, char_tokenizer, tmp_path):
    hf = two_layer_folder(values, tmp_path / "hf")
    ours = load_hf(tmp_path / "hf").eval()
    config = ours.config
    assert (config.n_embd, config.n_head, config.n_kv_head) == (
        values["hidden_size"],
        values["num_attention_heads"],
        values["num_key_value_heads"],
    )
    assert config.head_size == values.get("head_dim", values["hidden_size"] // values["num_attention_heads"])
    assert config.padded_vocab_size == config.vocab_size == values["vocab_size"]
    assert config.block_size == values["max_position_embeddings"]
    assert config.rope_theta == float(values["rope_theta"]) and config.norm_eps == values["rms_norm_eps"]
    assert config.tie_embeddings == values["tie_word_embeddings"]
    assert (config.qk_norm, config.qkv_bias) == (values["model_type"] == "qwen3", values["model_type"] == "qwen2")
    assert_logits_match(ours, hf, values["vocab_size"])

    arch = save_hf(ours, char_tokenizer(), tmp_path / "out")  # ours -> save_hf -> transformers
    assert arch == values["architectures"][0]
    theirs, messages = load_hf_quietly(tmp_path / "out")
    assert messages == [] and type(theirs).__name__ == arch
    assert_logits_match(ours, theirs, values["vocab_size"])
    back = load_hf(tmp_path / "out")  # and back, bit for bit
    assert back.config == config
    for key, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key


def test_a_head_dim_apart_from_the_width_is_kept_and_an_implied_one_is_not():
    qwen3 = config_from_hf({**QWEN3_0_6B, "num_hidden_layers": 2})
    assert (qwen3.head_dim, qwen3.head_size, qwen3.n_embd // qwen3.n_head) == (128, 128, 64)
    assert config_from_hf({**LLAMA_3_2_1B, "rope_scaling": None}).head_dim is None  # 2048 / 32 = 64: implied
    without = config_from_hf({k: v for k, v in QWEN3_0_6B.items() if k != "head_dim"})
    assert without.head_dim == transformers.Qwen3Config().head_dim == 128  # a missing key: transformers' default


def test_qwen2_biases_are_on_q_k_v_only():
    config = config_from_hf({**QWEN2_5_0_5B, "num_hidden_layers": 1})
    assert config == Config(
        vocab_size=151936,
        block_size=32768,
        n_layer=1,
        n_head=14,
        n_embd=896,
        n_kv_head=2,
        intermediate_size=4864,
        rope_theta=1e6,
        norm_eps=1e-6,
        qkv_bias=True,
    )
    hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**{**QWEN2_5_0_5B, "num_hidden_layers": 1}))
    from lit_gpt.meta import meta_model

    ours = {k: tuple(v.shape) for k, v in meta_model(config).state_dict().items() if k != "lm_head.weight"}
    theirs = {k.removeprefix("model."): tuple(v.shape) for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    assert ours == theirs
    assert config.num_params() == sum(p.numel() for p in hf.parameters())
