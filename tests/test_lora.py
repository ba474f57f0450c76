"""LoRA with peft: what trains, what a checkpoint holds, merging, the base's identity, peft's file format, and the
whole command-line loop (fit, resume, generate, evaluate, export)."""

from __future__ import annotations

import json

import pytest
import torch

from lit_gpt.checkpoint import load_checkpoint, load_model, load_tokenizer, save_folder, save_hf, save_peft_adapter
from lit_gpt.config import Config, ConfigError
from lit_gpt.lora import PROJECTIONS, LoRA, adapter_names, add_adapters, merge_adapters, weights_sha256
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer
from lit_gpt.train.loss import next_token_loss

needs_peft = pytest.mark.usefixtures("peft_installed")


@pytest.fixture
def peft_installed() -> None:
    pytest.importorskip("peft", reason="LoRA needs peft: pip install -e '.[lora]'")


CONFIG = Config(vocab_size=99, block_size=32, n_layer=2, n_head=4, n_embd=32, n_kv_head=2)


@pytest.fixture
def base(char_tokenizer, tmp_path) -> str:
    """A random base model saved as our folder."""
    save_folder(GPT(CONFIG), char_tokenizer(), tmp_path / "base")
    return str(tmp_path / "base")


def lit_module(base: str, **lora):
    from lit_gpt.train.module import LitGPT

    return LitGPT(
        CONFIG,
        tokenizer=load_tokenizer(base).spec,
        init_weights=base,
        lora=LoRA(r=4, **lora),
        warmup_steps=1,
        lr_decay_steps=10,
    )


def train_steps(module, steps: int = 3) -> None:
    """A few AdamW steps on random batches, as Lightning would run them (no Trainer: fast)."""
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    for _ in range(steps):
        x = torch.randint(0, CONFIG.vocab_size, (4, 16))
        loss = next_token_loss(module(x), torch.roll(x, -1, dims=1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@needs_peft
def test_only_the_adapters_train_and_the_optimizer_holds_them_decayed(base):
    module = lit_module(base)
    x = torch.randint(0, CONFIG.vocab_size, (2, 16))
    next_token_loss(module(x), x).backward()
    names = adapter_names(module.model)
    assert len(names) == 2 * 2 * 7  # A and B of 7 projections in 2 layers
    for name, param in module.model.named_parameters():
        assert param.requires_grad == (name in names), name
        if ".lora_B." in name:  # B starts at zero; its gradient (A x)^T dy does not
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        if name not in names:
            assert param.grad is None, name
    decay, no_decay = module.configure_optimizers()["optimizer"].param_groups  # the names full training logs
    assert decay["name"] == "decay" and decay["weight_decay"] == module.hparams.weight_decay
    assert {id(p) for p in decay["params"]} == {id(p) for n, p in module.model.named_parameters() if n in names}
    assert no_decay["name"] == "no_decay" and no_decay["params"] == []  # the frozen norms and embedding stay out


@needs_peft
def test_training_leaves_the_base_bit_identical(base):
    module = lit_module(base)
    adapters_before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    train_steps(module)
    original = load_model(base).state_dict()
    state = module.model.state_dict()
    for name, tensor in original.items():
        key = name.replace(".weight", ".base_layer.weight") if name.split(".")[-2] in PROJECTIONS else name
        assert torch.equal(state[key], tensor), name
    assert all(not torch.equal(p, adapters_before[n]) for n, p in module.model.named_parameters() if p.requires_grad)


@needs_peft
def test_merged_equals_unmerged(base):
    module = lit_module(base)
    train_steps(module)
    model = module.model.eval()
    idx = torch.randint(0, CONFIG.vocab_size, (2, 24))
    with torch.no_grad():
        unmerged = model(idx)
        merged = merge_adapters(model)(idx)
    assert not any(".lora_" in name for name in model.state_dict())  # plain nn.Linear layers again
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    with torch.no_grad():
        assert (merged - load_model(base)(idx)).abs().max() > 1e-3  # the adapters did change the model


@needs_peft
def test_checkpoint_holds_the_adapters_and_the_base_identity(char_tokenizer, base, tmp_path):
    module = lit_module(base)
    train_steps(module)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == {f"model.{n}" for n in adapter_names(module.model)}
    record = checkpoint["lit_gpt"]["lora"]
    assert record["base"] == {"path": str((tmp_path / "base").resolve()), "sha256": weights_sha256(load_model(base))}
    assert record["r"] == 4 and record["target_modules"] == list(LoRA().target_modules)

    torch.save(checkpoint, tmp_path / "lora.ckpt")
    model, tokenizer = load_checkpoint(tmp_path / "lora.ckpt")
    idx = torch.randint(0, CONFIG.vocab_size, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), module.model.eval()(idx), rtol=0, atol=1e-5)
    assert tokenizer.spec == char_tokenizer().spec


@needs_peft
def test_a_moved_or_changed_base_is_refused(char_tokenizer, base, tmp_path):
    module = lit_module(base)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "lora.ckpt")
    (tmp_path / "base").rename(tmp_path / "moved")
    with pytest.raises(ConfigError, match=r"adapts the base model at .*base, which is not there \(moved"):
        load_checkpoint(tmp_path / "lora.ckpt")
    other = GPT(CONFIG)
    save_folder(other, char_tokenizer(), tmp_path / "base")
    with pytest.raises(ConfigError, match="whose weights have changed since"):
        load_checkpoint(tmp_path / "lora.ckpt")


@needs_peft
def test_resuming_on_another_base_is_refused(char_tokenizer, base, tmp_path):
    module = lit_module(base)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    save_folder(GPT(CONFIG), char_tokenizer(), tmp_path / "other")
    with pytest.raises(ConfigError, match="trained on the base at .*not on model.init_weights .*other"):
        lit_module(str(tmp_path / "other")).on_load_checkpoint(checkpoint)
    fresh = lit_module(base)
    fresh.on_load_checkpoint(checkpoint)  # the same base: the frozen weights are filled in for strict loading
    fresh.load_state_dict(checkpoint["state_dict"], strict=True)


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(r=0), "r must be a positive integer"),
        (dict(alpha=0), "alpha must be positive"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(target_modules=["lm_head"]), "choose among q_proj"),
    ],
)
def test_bad_lora_settings(settings, match):
    with pytest.raises(ConfigError, match=match):
        LoRA(**settings)


def test_lora_needs_a_base_and_the_base_needs_the_datas_tokenizer(base):
    from lit_gpt.train.module import LitGPT

    with pytest.raises(ConfigError, match="model.lora adapts a pretrained model: set model.init_weights"):
        LitGPT(CONFIG, lora=LoRA())
    other = Tokenizer(chars=[chr(34 + i) for i in range(98)]).spec
    with pytest.raises(ConfigError, match="trained with another tokenizer .*set data.tokenizer"):
        LitGPT(CONFIG, tokenizer=other, init_weights=base)


@needs_peft
def test_peft_loads_our_adapters_on_the_hugging_face_export(char_tokenizer, base, tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    module = lit_module(base)
    train_steps(module)
    model = module.model.eval()
    save_hf(load_model(base), char_tokenizer(), tmp_path / "hf")
    save_peft_adapter(model, LoRA(r=4), tmp_path / "adapter", base=base)
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 4
    llama = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf")
    theirs = peft.PeftModel.from_pretrained(llama, tmp_path / "adapter").eval()
    idx = torch.randint(0, CONFIG.vocab_size, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(theirs(idx).logits, model(idx), rtol=0, atol=1e-5)


@needs_peft
def test_gpt2_style_adapters_have_no_peft_form(tmp_path):
    model = add_adapters(
        GPT(
            Config(
                **{
                    **CONFIG.to_dict(),
                    "n_kv_head": 4,
                    "position_embedding": "learned",
                    "norm": "layernorm",
                    "mlp": "gelu",
                    "bias": True,
                }
            )
        ),
        LoRA(),
    )
    assert adapter_names(model)  # up/down/q/k/v/o adapted; GELU has no gate_proj
    with pytest.raises(ConfigError, match="transformers' GPT-2 fuses q, k and v.*merge the adapters"):
        save_peft_adapter(model, LoRA(), tmp_path / "adapter")


@needs_peft
@pytest.mark.slow
def test_the_command_line_loop(tiny, run_main, tmp_path):
    """fit a base, LoRA-fit on it, resume, then generate, evaluate and export the LoRA checkpoint."""
    base = tmp_path / "base"
    assert run_main(*tiny(base))[0] == 0
    lora = tmp_path / "lora"
    flags = ["--model.init_weights", base / "ckpt" / "last.ckpt", "--model.lora.r", "4", "--trainer.max_steps"]
    assert run_main(*tiny(lora, *flags, 10))[0] == 0
    code, _, err = run_main(*tiny(lora, *flags, 20, "--ckpt_path", "last"))
    assert code == 0, err
    last = torch.load(lora / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 20 and all(".lora_" in key for key in last["state_dict"])
    assert (lora / "ckpt" / "last.ckpt").stat().st_size < (base / "ckpt" / "last.ckpt").stat().st_size / 2
    code, out, _ = run_main(
        "generate",
        "--checkpoint",
        lora / "ckpt" / "last.ckpt",
        "--prompt",
        "ROMEO:",
        "--max_new_tokens",
        "20",
        "--seed",
        "1",
    )
    assert code == 0 and out.startswith("ROMEO:")
    text = tmp_path / "text.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n")
    code, out, _ = run_main("evaluate", "--checkpoint", lora / "ckpt" / "last.ckpt", "--data.path", text)
    assert code == 0 and json.loads(out)["bits_per_byte"] > 0
    code, _, err = run_main("export", "--checkpoint", lora / "ckpt" / "last.ckpt", "--out", tmp_path / "hf")
    assert code == 2 and "pass --merge" in err
    for out, extra in (("merged", ["--merge"]), ("adapter", ["--format", "peft"])):
        code, _, err = run_main("export", "--checkpoint", lora / "ckpt" / "last.ckpt", "--out", tmp_path / out, *extra)
        assert code == 0, err
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    merged, _ = load_checkpoint(tmp_path / "merged")
    reference, _ = load_checkpoint(lora / "ckpt" / "last.ckpt")
    idx = torch.randint(0, merged.config.vocab_size, (1, 30))
    with torch.no_grad():
        assert torch.equal(merged(idx), reference(idx))
