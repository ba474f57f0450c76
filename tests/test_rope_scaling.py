"""RoPE scaling (``Config.rope_scaling``, ``lit_gpt.rope``) against transformers 5's ``modeling_rope_utils.py`` and
``LlamaForCausalLM``: the frequencies (bit for bit), and logits within 1e-5 in float32 on export (our model ->
``save_hf`` -> ``AutoModelForCausalLM``) and import (a random ``LlamaForCausalLM`` -> ``load_hf``) for every scaling
type, at lengths past ``original_block_size``; a 2-layer model with Llama-3.2-1B's real config values; the
validation of bad settings; and context extension from a checkpoint (``init_weights`` with a larger ``block_size``
and a scaling)."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch
from torch.testing import assert_close

from lit_gpt.checkpoint import load_checkpoint, load_folder, load_hf, save_folder, save_hf
from lit_gpt.config import Config, ConfigError, RopeScaling
from lit_gpt.generate import generate
from lit_gpt.hf import rope_from_hf, rope_to_hf
from lit_gpt.model import GPT
from lit_gpt.rope import inverse_frequencies, rope_cache

transformers = pytest.importorskip("transformers")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Weights ~ N(0, 0.2), norm weights ~ N(1, 0.2), so every tensor shapes the logits (as in test_hf_parity)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(1.0 if "norm" in name else 0.0, 0.2)
    return model.eval()


def load_hf_quietly(folder, caplog) -> tuple[torch.nn.Module, list[str]]:
    """``AutoModelForCausalLM.from_pretrained(folder)`` and every warning it logged or raised."""
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="transformers"):
        warnings.simplefilter("always")
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder)
    logged = [
        r.getMessage() for r in caplog.records if r.name.startswith("transformers") and r.levelno >= logging.WARNING
    ]
    return hf.eval(), logged + [str(w.message) for w in caught]


ORIGINAL = 16  # original_block_size of every small model here; they run at 4x it
SCALINGS = {
    "linear": dict(type="linear", factor=4.0, original_block_size=ORIGINAL),
    "dynamic": dict(type="dynamic", factor=4.0, original_block_size=ORIGINAL),
    "yarn": dict(type="yarn", factor=4.0, original_block_size=ORIGINAL),
    "yarn-extras": dict(
        type="yarn", factor=4.0, original_block_size=ORIGINAL, beta_fast=8.0, beta_slow=2.0, truncate=False
    ),
    "yarn-mscale": dict(type="yarn", factor=4.0, original_block_size=ORIGINAL, mscale=0.8, mscale_all_dim=0.5),
    "yarn-attention-factor": dict(type="yarn", factor=4.0, original_block_size=ORIGINAL, attention_factor=1.3),
    "llama3": dict(type="llama3", factor=8.0, original_block_size=ORIGINAL, low_freq_factor=1.0, high_freq_factor=4.0),
}
SMALL = dict(block_size=4 * ORIGINAL, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, rope_theta=100.0)


def hf_rope_parameters(scaling: dict, theta: float) -> dict:
    """transformers' ``rope_parameters`` for one of ``SCALINGS``, written by hand from its documentation."""
    keys = {"rope_type": scaling["type"], "rope_theta": theta, "factor": scaling["factor"]}
    if scaling["type"] in ("yarn", "llama3"):
        keys["original_max_position_embeddings"] = scaling["original_block_size"]
    extras = ("beta_fast", "beta_slow", "truncate", "mscale", "mscale_all_dim", "attention_factor")
    return {**keys, **{k: v for k, v in scaling.items() if k in extras + ("low_freq_factor", "high_freq_factor")}}


def hf_llama_config(scaling: dict, **fields) -> transformers.LlamaConfig:
    """A small LlamaConfig with ``SMALL``'s shape and the scaling; max_position_embeddings as transformers reads it
    (the original length for dynamic, the extended one otherwise)."""
    length = ORIGINAL if scaling["type"] == "dynamic" else SMALL["block_size"]
    return transformers.LlamaConfig(
        vocab_size=99,
        hidden_size=SMALL["n_embd"],
        intermediate_size=96,
        num_hidden_layers=SMALL["n_layer"],
        num_attention_heads=SMALL["n_head"],
        num_key_value_heads=SMALL["n_kv_head"],
        max_position_embeddings=length,
        rms_norm_eps=1e-5,
        rope_parameters=hf_rope_parameters(scaling, SMALL["rope_theta"]),
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        **fields,
    )


@pytest.mark.parametrize("name", SCALINGS)
@pytest.mark.parametrize("head_size", [16, 64])
def test_frequencies_equal_transformers(name, head_size):
    scaling = SCALINGS[name]
    hf_config = hf_llama_config(scaling, head_dim=head_size)
    ours_scaling = RopeScaling(**scaling)
    lengths = [None, ORIGINAL, 4 * ORIGINAL, 1000] if scaling["type"] == "dynamic" else [None]
    for length in lengths:
        seq_len = None if length is None else torch.tensor(length)  # transformers passes the length as a tensor
        theirs, their_factor = ROPE_INIT_FUNCTIONS[scaling["type"]](hf_config, "cpu", seq_len=seq_len)
        ours, our_factor = inverse_frequencies(head_size, SMALL["rope_theta"], ours_scaling, length)
        assert torch.equal(ours, theirs), (name, length)  # the same float32 operations: bit for bit
        assert our_factor == their_factor
    plain, _ = inverse_frequencies(head_size, SMALL["rope_theta"])
    scaled, _ = inverse_frequencies(head_size, SMALL["rope_theta"], ours_scaling, 4 * ORIGINAL)
    assert not torch.equal(scaled, plain)  # the scaling changes something


@pytest.mark.parametrize("name", SCALINGS)
def test_exported_model_matches_transformers(char_tokenizer, name, tmp_path, caplog):
    config = Config(vocab_size=99, **SMALL, rope_scaling=SCALINGS[name])
    model = randomize(GPT(config))
    save_hf(model, char_tokenizer(), tmp_path)
    hf, messages = load_hf_quietly(tmp_path, caplog)
    assert messages == []  # transformers takes the rope_parameters without a complaint
    written = json.loads((tmp_path / "config.json").read_text())
    expected = hf_rope_parameters(SCALINGS[name], SMALL["rope_theta"])
    if expected["rope_type"] == "yarn":  # the defaults are written out
        expected = {"beta_fast": 32.0, "beta_slow": 1.0, "truncate": True, **expected}
    assert written["rope_parameters"] == expected
    assert written["rope_scaling"] == {k: v for k, v in expected.items() if k != "rope_theta"}  # transformers 4
    assert hf.model.rotary_emb.rope_type == SCALINGS[name]["type"]

    idx = torch.randint(0, 99, (2, config.block_size))  # 4x the original length
    with torch.no_grad():
        logits = model(idx)
        assert_close(logits, hf(idx).logits, rtol=0, atol=1e-5)
        plain = GPT(config.replace(rope_scaling=None)).eval()
        plain.load_state_dict(model.state_dict())
        assert not torch.allclose(plain(idx), logits, atol=1e-3)  # the scaling is in the logits

    prompt = idx[:1, :8]  # decoding runs from 8 to 40 tokens, past the original length, through the KV cache
    ours = generate(model, prompt, max_new_tokens=32, temperature=0.0)
    hf.generation_config.eos_token_id = None
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=32)
    assert torch.equal(ours, theirs)

    back = load_hf(tmp_path).eval()  # the lit_gpt record restores the exact config
    assert back.config == config
    with torch.no_grad():  # as logits were computed (with autograd on, eager CPU runs lit_gpt.norm_rope's node)
        assert_close(back(idx), logits, rtol=0, atol=0)


def test_qwen3_export_carries_the_scaling(char_tokenizer, tmp_path, caplog):
    config = Config(vocab_size=99, **SMALL, qk_norm=True, rope_scaling=SCALINGS["yarn"])
    model = randomize(GPT(config))
    assert save_hf(model, char_tokenizer(), tmp_path) == "Qwen3ForCausalLM"
    hf, messages = load_hf_quietly(tmp_path, caplog)
    assert messages == [] and hf.model.rotary_emb.rope_type == "yarn"
    idx = torch.randint(0, 99, (2, config.block_size))
    with torch.no_grad():
        assert_close(model(idx), hf(idx).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", SCALINGS)
def test_transformers_model_imports(name, tmp_path):
    """A LlamaForCausalLM built and saved by transformers (no lit_gpt record) imports with its logits."""
    scaling = SCALINGS[name]
    hf = randomize(transformers.LlamaForCausalLM(hf_llama_config(scaling)))
    hf.save_pretrained(tmp_path)
    model = load_hf(tmp_path).eval()
    ours = model.config.rope_scaling
    assert (ours.type, ours.factor, ours.original_block_size) == (scaling["type"], scaling["factor"], ORIGINAL)
    assert model.config.block_size == 4 * ORIGINAL  # dynamic: factor x transformers' max_position_embeddings
    idx = torch.randint(0, 99, (2, 4 * ORIGINAL))
    with torch.no_grad():
        assert_close(model(idx), hf(idx).logits, rtol=0, atol=1e-5)


def test_transformers_4_rope_scaling_imports(tmp_path):
    """An older config.json: ``rope_scaling`` with ``type`` (not ``rope_type``) and a top-level ``rope_theta``."""
    hf = randomize(transformers.LlamaForCausalLM(hf_llama_config(SCALINGS["linear"])))
    hf.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["rope_parameters"]
    saved.update(rope_scaling={"type": "linear", "factor": 4.0}, rope_theta=SMALL["rope_theta"])
    (tmp_path / "config.json").write_text(json.dumps(saved))
    model = load_hf(tmp_path).eval()
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.model.rotary_emb.rope_type == "linear"  # transformers 5 reads the old form too
    assert model.config.rope_scaling == RopeScaling(type="linear", factor=4.0, original_block_size=ORIGINAL)
    assert model.config.rope_theta == SMALL["rope_theta"]
    idx = torch.randint(0, 99, (1, 4 * ORIGINAL))
    with torch.no_grad():
        assert_close(model(idx), reloaded(idx).logits, rtol=0, atol=1e-5)


def test_rope_maps_round_trip():
    for scaling in [None, *SCALINGS.values()]:
        config = Config(vocab_size=99, **SMALL, rope_scaling=scaling)
        fields = rope_to_hf(config)
        assert Config(vocab_size=99, **{**SMALL, **rope_from_hf(fields)}) == config
    plain = rope_to_hf(Config(**SMALL))
    assert plain == {
        "max_position_embeddings": 64,
        "rope_parameters": {"rope_type": "default", "rope_theta": 100.0},
        "rope_theta": 100.0,
    }
    dynamic = rope_to_hf(Config(**SMALL, rope_scaling=SCALINGS["dynamic"]))
    assert dynamic["max_position_embeddings"] == ORIGINAL  # transformers scales from max_position_embeddings


# ---------------------------------------------------------------------------------------------------------------
# Llama-3.2-1B's shape and RoPE, 2 layers

LLAMA_3_2_1B = dict(  # meta-llama/Llama-3.2-1B config.json, every value but num_hidden_layers (16)
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling={
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    tie_word_embeddings=True,
    hidden_act="silu",
    attention_bias=False,
    mlp_bias=False,
    bos_token_id=128000,
    eos_token_id=128001,
)


@pytest.mark.slow
def test_llama_3_2_1b_shaped_model_imports(tmp_path):
    """Everything real but the depth (2 layers: 0.38B parameters, 1.5 GB in float32)."""
    hf_config = transformers.LlamaConfig(**LLAMA_3_2_1B, num_hidden_layers=2)
    hf = transformers.LlamaForCausalLM(hf_config).eval()  # transformers' own init; the norms below are not ones
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "norm" in name:
                param.normal_(1.0, 0.2)
    hf.save_pretrained(tmp_path)
    model = load_hf(tmp_path).eval()
    config = model.config
    assert (config.n_embd, config.intermediate_size, config.n_head, config.n_kv_head) == (2048, 8192, 32, 8)
    assert (config.head_size, config.block_size, config.rope_theta) == (64, 131072, 500000.0)
    assert config.rope_scaling == RopeScaling(
        type="llama3", factor=32.0, original_block_size=8192, low_freq_factor=1.0, high_freq_factor=4.0
    )
    assert config.padded_vocab_size == 128256 and config.tie_embeddings and config.norm_eps == 1e-5

    positions = torch.tensor([0, 1, 4095, 8191, 8192, 65535, 131071])  # the tables far past 8192 too
    x = torch.zeros(1, 1, len(positions), 64)
    hf_cos, hf_sin = hf.model.rotary_emb(x, positions[None])
    assert_close(model.rope_cos[positions], hf_cos[0], rtol=0, atol=1e-5)
    assert_close(model.rope_sin[positions], hf_sin[0], rtol=0, atol=1e-5)
    plain_cos, _ = rope_cache(131072, 64, 500000.0)
    assert not torch.allclose(plain_cos[positions], hf_cos[0], atol=1e-3)  # the llama3 scaling shows there

    idx = torch.randint(0, 128256, (1, 24))
    with torch.no_grad():
        assert_close(model(idx), hf(idx).logits, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(rope_scaling=dict(type="linear", factor=0.5, original_block_size=16)), r"factor must be a number >= 1"),
        (dict(rope_scaling=dict(type="ntk", factor=2.0, original_block_size=16)), r"type must be one of linear"),
        (dict(rope_scaling=dict(type="yarn", factor=2.0, original_block_size=16)), r"block_size 64 exceeds .* = 32"),
        (dict(rope_scaling=dict(type="linear", factor=2.0, original_block_size=0)), r"original_block_size must be"),
        (dict(rope_scaling=dict(type="linear", factor=4.0)), r"original_block_size must be a positive integer"),
        (
            dict(rope_scaling=dict(type="linear", factor=4.0, original_block_size=16, beta=1)),
            r"unknown keys \['beta'\]",
        ),
        (dict(rope_scaling=dict(type="linear", factor=4.0, original_block_size=16, beta_fast=8)), r"applies to yarn"),
        (dict(rope_scaling=dict(type="yarn", factor=4.0, original_block_size=16, low_freq_factor=1)), r"to llama3"),
        (dict(rope_scaling=dict(type="yarn", factor=4.0, original_block_size=16, beta_fast=1, beta_slow=2)), "beta"),
        (dict(rope_scaling=dict(type="llama3", factor=8.0, original_block_size=16, high_freq_factor=1)), r"high_freq"),
        (dict(rope_scaling="yarn"), r"must be a mapping or None"),
        (dict(rope_scaling=SCALINGS["linear"], position_embedding="learned"), r"needs position_embedding='rope'"),
    ],
)
def test_bad_scalings(fields, match):
    with pytest.raises(ConfigError, match=match):
        Config(**{**SMALL, **fields})


def test_which_lengths_a_scaling_supports():
    for kind in ("linear", "yarn"):  # they stretch the original length by the factor
        Config(**{**SMALL, "block_size": 64}, rope_scaling=dict(type=kind, factor=4.0, original_block_size=16))
        with pytest.raises(ConfigError, match="exceeds"):
            Config(**{**SMALL, "block_size": 65}, rope_scaling=dict(type=kind, factor=4.0, original_block_size=16))
    for kind in ("dynamic", "llama3"):  # no bound: Llama 3.1 runs 16x its original length with factor 8
        Config(**{**SMALL, "block_size": 256}, rope_scaling=dict(type=kind, factor=8.0, original_block_size=16))


def test_scaling_round_trips_through_dicts_and_files(char_tokenizer, tmp_path):
    config = Config(vocab_size=99, **SMALL, rope_scaling=SCALINGS["yarn-extras"])
    assert isinstance(config.rope_scaling, RopeScaling)
    saved = config.to_dict()
    assert saved["rope_scaling"]["beta_fast"] == 8.0 and saved["rope_scaling"]["attention_factor"] is None
    assert json.loads(json.dumps(saved)) == saved and Config(**saved) == config
    assert config.replace(rope_scaling=None).rope_scaling is None
    assert config.differences(config.replace(rope_scaling=SCALINGS["yarn"])) == ["rope_scaling"]
    model = GPT(config).eval()
    save_folder(model, char_tokenizer(), tmp_path / "folder")
    assert load_folder(tmp_path / "folder").config == config


# ---------------------------------------------------------------------------------------------------------------
# Context extension as a recipe: fine-tune a checkpoint at a longer block_size with a scaling


def test_a_checkpoint_extends_its_context(fit_args, run_main, errors, tmp_path):
    code, _, err = run_main(*fit_args("--trainer.max_steps", "2", "--trainer.val_check_interval", "2"))
    assert code == 0, err
    base = tmp_path / "ckpt" / "last.ckpt"
    scaling = "{type: yarn, factor: 2, original_block_size: 64}"
    extended = [
        "--model.init_weights",
        base,
        "--model.config.block_size",
        "128",
        "--model.config.rope_scaling",
        scaling,
        "--checkpoint.dirpath",
        tmp_path / "extended",
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "2",
    ]
    code, _, err = run_main(*fit_args(*extended))
    assert code == 0, err
    model, _ = load_checkpoint(tmp_path / "extended" / "last.ckpt")
    assert model.config.block_size == 128
    assert model.config.rope_scaling == RopeScaling(type="yarn", factor=2.0, original_block_size=64)
    code, _, err = run_main(*fit_args(*extended[:4], "--model.config.rope_scaling", "{type: yarn, factor: 0.5}"))
    assert code == 2 and errors(err) == [
        "error: Config.rope_scaling.factor must be a number >= 1 (1: no scaling), got 0.5"
    ]
    code, _, err = run_main(*fit_args("--model.init_weights", base, "--model.config.n_layer", "2"))
    assert code == 2 and "another architecture (n_layer: 1 there, 2 here)" in err  # weights' shapes still checked
