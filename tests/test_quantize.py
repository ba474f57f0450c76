"""int8 / int4 weight-only quantization with torchao: accuracy and size against float32, the quantized folder, the
commands, and the errors. The perplexity and speed figures of a 124M model are bench/quantize.py's."""

from __future__ import annotations

import json

import pytest
import torch

from lit_gpt.checkpoint import load_checkpoint, save_folder, save_quantized
from lit_gpt.config import Config, ConfigError
from lit_gpt.generate import generate
from lit_gpt.model import GPT
from lit_gpt.quantize import is_quantized, model_bytes, quantize

pytest.importorskip("torchao", reason="quantization needs torchao: pip install -e '.[quant]'")

# wide enough that the matrices dominate the bytes, as in real models (norms and RoPE tables stay float32)
CONFIG = Config(vocab_size=512, block_size=32, n_layer=2, n_head=4, n_embd=128)


def trained_like(config: Config = CONFIG) -> GPT:
    """A model with heavy-tailed weights like a trained one's (Student-t, 4 degrees of freedom), which quantization
    finds harder than an initialisation's Gaussian: outliers widen each row's or group's range."""
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.copy_(torch.distributions.StudentT(4.0).sample(param.shape) * 0.03)
    return model


def copy_of(model: GPT) -> GPT:
    twin = GPT(model.config).eval()
    twin.load_state_dict(model.state_dict())
    return twin


def weight_errors(quantized: GPT, original: GPT) -> dict[str, float]:
    """||W_q - W|| / ||W|| of every matrix, W_q read back through the quantized layer itself (x -> x W_q^T on the
    identity), since torchao's CPU int4 tensor has no dequantize."""
    errors = {}
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                weight = module.weight
                if isinstance(module, torch.nn.Linear):
                    read = torch.nn.functional.linear(torch.eye(weight.shape[1]), weight).T
                else:
                    read = torch.nn.functional.embedding(torch.arange(weight.shape[0]), weight)
                exact = original.get_submodule(name).weight
                errors[name] = ((read - exact).norm() / exact.norm()).item()
    return errors


@pytest.mark.parametrize(
    "mode, group_size, max_error, max_fraction", [("int8", 64, 0.015, 0.28), ("int4", 32, 0.11, 0.22)]
)
def test_quantized_weights_and_size(mode, group_size, max_error, max_fraction):
    model = trained_like()
    quantized = quantize(copy_of(model), mode, group_size)
    assert is_quantized(quantized) and not is_quantized(model)
    errors = weight_errors(quantized, model)
    assert len(errors) == 1 + 2 * 7 + 1  # the embedding, 7 projections per layer, the (tied) head
    assert max(errors[name] for name in errors if "embed" in name or name == "lm_head") < 0.015  # int8 rows
    assert max(errors.values()) < max_error, errors
    assert model_bytes(quantized) / model_bytes(model) < max_fraction
    assert quantized.lm_head.weight is quantized.embed_tokens.weight  # the tied head shares the int8 embedding
    idx = torch.randint(0, CONFIG.vocab_size, (2, 32))
    with torch.no_grad():
        reference, logits = model(idx).log_softmax(-1), quantized(idx).log_softmax(-1)
    kl = torch.nn.functional.kl_div(logits, reference, log_target=True, reduction="sum") / idx.numel()
    assert kl < (1e-3 if mode == "int8" else 2e-2), kl  # nats per token


def test_smaller_int4_groups_are_more_accurate():
    model = trained_like(CONFIG.replace(n_layer=1))
    errors = [weight_errors(quantize(copy_of(model), "int4", g), model)["layers.0.mlp.up_proj"] for g in (32, 64, 128)]
    assert errors == sorted(errors), errors


def test_float_model_bytes_are_its_parameters_and_rope_tables():
    model = GPT(CONFIG)
    rope = 2 * CONFIG.block_size * CONFIG.head_size * 4
    assert model_bytes(model) == 4 * CONFIG.num_params() + rope


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_folder_round_trip_generates(char_tokenizer, mode, tmp_path):
    model = quantize(trained_like(), mode, 32)
    save_quantized(model, char_tokenizer(512), tmp_path, mode, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.pt"]
    record = json.loads((tmp_path / "config.json").read_text())["quantization"]
    assert (
        record["mode"] == mode
        and record["device"] == "cpu"
        and record["group_size"] == (32 if mode == "int4" else None)
    )
    loaded, tokenizer = load_checkpoint(tmp_path)
    assert loaded.lm_head.weight is loaded.embed_tokens.weight and tokenizer.spec == char_tokenizer(512).spec
    idx = torch.randint(0, CONFIG.vocab_size, (1, 8))
    with torch.no_grad():
        assert torch.equal(loaded(idx), model(idx))
    out = generate(loaded, idx, 10, temperature=0.0, vocab_size=CONFIG.vocab_size)
    assert torch.equal(out, generate(model, idx, 10, temperature=0.0, vocab_size=CONFIG.vocab_size))


def test_quantize_and_generate_commands(char_tokenizer, run_main, tmp_path):
    save_folder(trained_like(), char_tokenizer(512), tmp_path / "float")
    code, out, err = run_main(
        "quantize", "--checkpoint", tmp_path / "float", "--out", tmp_path / "int8", "--mode", "int8"
    )
    assert code == 0, err
    assert "wrote an int8 model" in out and "% of its" in out
    for checkpoint, flags in (
        (tmp_path / "int8", []),
        (tmp_path / "float", ["--quantize", "int4", "--group_size", "32"]),
    ):
        code, out, err = run_main(
            "generate", "--checkpoint", checkpoint, "--prompt", "ab", "--max_new_tokens", "5", "--seed", "1", *flags
        )
        assert code == 0 and out.startswith("ab"), err
    code, _, err = run_main("export", "--checkpoint", tmp_path / "int8", "--out", tmp_path / "hf")
    assert code == 2 and "is quantized" in err


def test_int4_folders_load_only_on_their_kind_of_device(char_tokenizer, tmp_path):
    save_quantized(quantize(trained_like(), "int4", 32), char_tokenizer(512), tmp_path, "int4", 32)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["quantization"]["device"] = "cuda"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="int4 weights packed for cuda, not cpu"):
        load_checkpoint(tmp_path)


def test_a_quantized_folder_is_no_starting_point_for_training(char_tokenizer, tmp_path):
    from lit_gpt.train.module import LitGPT

    save_quantized(quantize(trained_like(), "int8"), char_tokenizer(512), tmp_path, "int8", None)
    with pytest.raises(ConfigError, match="holds quantized weights .*start from the float checkpoint"):
        LitGPT(CONFIG, init_weights=str(tmp_path))


def test_bad_requests():
    with pytest.raises(ConfigError, match="choose one of int8, int4"):
        quantize(GPT(CONFIG), "int2")
    with pytest.raises(ConfigError, match="choose one of 32, 64, 128"):
        quantize(GPT(CONFIG), "int4", 16)
    narrow = GPT(Config(vocab_size=99, block_size=16, n_layer=1, n_head=2, n_embd=32))
    with pytest.raises(ConfigError, match="multiples of 64; layers.0.self_attn.q_proj has 32"):
        quantize(narrow, "int4", 64)
    model = quantize(GPT(CONFIG), "int8")
    with pytest.raises(ConfigError, match="already quantized"):
        quantize(model, "int8")


def test_a_torchao_without_the_cpu_int4_path_is_named(monkeypatch):
    import lit_gpt.quantize

    real = lit_gpt.quantize.require

    def without_prototype(module: str, *args):
        if module.startswith("torchao.prototype"):
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
        return real(module, *args)

    monkeypatch.setattr(lit_gpt.quantize, "require", without_prototype)
    with pytest.raises(ConfigError, match=r"has no CPU int4 path .*PrototypeInt4WeightOnlyConfig.*quantize to int8"):
        quantize(GPT(CONFIG), "int4", 32)
