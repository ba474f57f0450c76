"""Export and loading: our folder format, Hugging Face folders, Lightning checkpoints, tokenizer files, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lit_gpt import checkpoint as export
from lit_gpt.checkpoint import load_checkpoint, load_model, load_tokenizer
from lit_gpt.cli import main
from lit_gpt.config import Config, ConfigError
from lit_gpt.model import GPT
from lit_gpt.tokenizer import Tokenizer

BASE = dict(vocab_size=99, block_size=32, n_layer=2, n_head=4, n_embd=32)
GPT2_STYLE = dict(position_embedding="learned", norm="layernorm", mlp="gelu", bias=True)
CONFIGS = {
    "llama-tied": Config(**BASE),
    "llama-gqa-untied-bias-padded": Config(**BASE, n_kv_head=2, tie_embeddings=False, bias=True, padding_multiple=64),
    "gpt2-tied": Config(**BASE, **GPT2_STYLE, dropout=0.1),
    "gpt2-untied": Config(**BASE, **GPT2_STYLE, tie_embeddings=False),
}
UNICODE = "naïve café, Ünïcödé — 日本語のテキスト, emoji 🙂👍🏽, tabs\tand  spaces  \n\n\r\n end "


def assert_same_weights(a: GPT, b: GPT) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("fmt", ["hf", "lit_gpt"])
@pytest.mark.parametrize("name", CONFIGS)
def test_round_trip_is_bit_identical(char_tokenizer, name, fmt, tmp_path):
    model = GPT(CONFIGS[name])
    with torch.no_grad():
        for param in model.parameters():
            param.normal_()  # norm weights and biases too, so none is left at its initial value
    if fmt == "hf":
        export.save_hf(model, char_tokenizer(), tmp_path)
        back = export.load_hf(tmp_path)
    else:
        export.save_folder(model, char_tokenizer(), tmp_path)
        back = export.load_folder(tmp_path)
    assert back.config == model.config  # exact, unpadded vocab_size and dropout included
    assert_same_weights(back, model)
    assert (back.lm_head.weight is back.embed_tokens.weight) == model.config.tie_embeddings
    loaded, tokenizer = load_checkpoint(tmp_path)
    assert not loaded.training and tokenizer.spec == char_tokenizer().spec
    assert_same_weights(loaded, model)


def test_hf_import_without_our_record_pads_the_vocabulary(char_tokenizer, tmp_path):
    """A foreign Hugging Face folder has no lit_gpt record: the padded vocabulary becomes vocab_size."""
    model = GPT(CONFIGS["llama-gqa-untied-bias-padded"])
    export.save_hf(model, char_tokenizer(), tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    del hf["lit_gpt"]
    (tmp_path / "config.json").write_text(json.dumps(hf))
    back = load_model(tmp_path)
    assert back.config.vocab_size == back.config.padded_vocab_size == 128
    assert_same_weights(back, model)
    with pytest.raises(ConfigError, match="no tokenizer lit_gpt can use.*load_model"):
        load_checkpoint(tmp_path)


def test_gpt2_hub_layout_imports(char_tokenizer, tmp_path):
    """GPT-2 files from the Hub: no ``transformer.`` prefix, attention-mask buffers, a stored tied head."""
    model = GPT(CONFIGS["gpt2-tied"])
    export.save_hf(model, char_tokenizer(), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    state["lm_head.weight"] = state["wte.weight"].clone()
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert_same_weights(export.load_hf(tmp_path), model)


def fit_one_step(shakespeare, tmp_path):
    from lightning.pytorch import Trainer

    from lit_gpt.train.datamodule import TextDataModule
    from lit_gpt.train.module import LitGPT

    dm = TextDataModule(
        path=str(shakespeare), tokenizer="char", block_size=32, batch_size=4, cache_dir=str(tmp_path / "d")
    )
    config = Config(vocab_size=dm.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32, n_kv_head=2)
    module = LitGPT(config, tokenizer=dm.tokenizer_spec, warmup_steps=1)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        use_distributed_sampler=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    return module.model.eval(), path


def test_load_lightning_checkpoint_and_export_it(shakespeare, tmp_path, capsys):
    trained, ckpt = fit_one_step(shakespeare, tmp_path)
    model, tokenizer = load_checkpoint(ckpt)
    idx = torch.tensor([tokenizer.encode("ROMEO:\nBut soft, what light?")])
    with torch.no_grad():
        assert torch.equal(model(idx), trained(idx))
    assert_same_weights(load_model(ckpt), trained)
    assert load_tokenizer(ckpt).spec == tokenizer.spec
    assert tokenizer.name == "char"

    main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")])
    out = capsys.readouterr().out
    assert "LlamaForCausalLM" in out and str(tmp_path / "hf") in out and "no tokenizer files" in out
    assert not (tmp_path / "hf" / "vocab.json").exists()
    main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ours"), "--format", "lit_gpt"])
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["config.json", "model.safetensors"]
    for folder in ("hf", "ours", "ours/config.json"):
        again, again_tokenizer = load_checkpoint(tmp_path / folder)
        assert again_tokenizer.spec == tokenizer.spec
        with torch.no_grad():
            assert torch.equal(again(idx), trained(idx))


@pytest.mark.parametrize("name", ["gpt2", "r50k_base"])
def test_gpt2_bpe_tokenizer_files_encode_like_tiktoken(name, shakespeare, tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizer = Tokenizer.from_name(name)
    model = GPT(Config(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, **GPT2_STYLE))
    export.save_hf(model, tokenizer, tmp_path)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in (shakespeare.read_text(encoding="utf-8")[:20000], UNICODE):
        ids = tokenizer.encode(text)
        assert hf_tokenizer.encode(text, add_special_tokens=False) == ids
        assert hf_tokenizer.decode(ids) == text
    assert hf_tokenizer.eos_token_id == tokenizer.eot_id
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == generation["bos_token_id"] == tokenizer.eot_id

    hf = json.loads((tmp_path / "config.json").read_text())
    del hf["lit_gpt"]  # as a folder from the Hub: the tokenizer is recognised from vocab.json
    (tmp_path / "config.json").write_text(json.dumps(hf))
    assert load_tokenizer(tmp_path).spec == {"kind": "tiktoken", "name": "gpt2"}


def test_missing_and_foreign_inputs(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint not found.*lit-gpt fit"):
        load_checkpoint(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="junk.ckpt is not a readable lit_gpt checkpoint.*lit-gpt export"):
        load_checkpoint(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 3}, tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match="other.ckpt is not a lit_gpt training checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match="config.json not found"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ConfigError, match="config.json is not from lit_gpt or Hugging Face"):
        load_checkpoint(tmp_path)


def test_export_folder_with_a_missing_file(char_tokenizer, tmp_path):
    export.save_folder(GPT(CONFIGS["llama-tied"]), char_tokenizer(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="has no model.safetensors: export the checkpoint again"):
        load_checkpoint(tmp_path)
    export.save_hf(GPT(CONFIGS["gpt2-tied"]), char_tokenizer(), tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="has no model.safetensors, model.safetensors.index.json or pytorch_model"):
        load_checkpoint(tmp_path / "hf")


def test_weights_that_do_not_fit_the_config(char_tokenizer, tmp_path):
    export.save_folder(GPT(CONFIGS["llama-tied"]), char_tokenizer(), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["n_embd"] = 64
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="do not fit its config: size mismatch"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(norm="layernorm"), r"LlamaForCausalLM \(chosen for position_embedding='rope'\) cannot express norm="),
        (dict(mlp="gelu", bias=True), r"LlamaForCausalLM .* cannot express mlp='gelu'"),
        (dict(position_embedding="learned"), r"GPT2LMHeadModel .* express norm='rmsnorm'.*mlp='swiglu'.*bias=False"),
        ({**GPT2_STYLE, "bias": False}, r"GPT2LMHeadModel .* cannot express bias=False \(GPT-2 always has biases\)"),
        ({**GPT2_STYLE, "n_kv_head": 2}, r"GPT2LMHeadModel .* grouped-query attention \(n_kv_head=2 < n_head=4\)"),
        (dict(sliding_window=8), r"LlamaForCausalLM .* cannot express sliding_window=8"),
        (dict(mlp="relu2"), r"LlamaForCausalLM .* cannot express mlp='relu2' \(Llama's MLP is gated"),
        (dict(qk_norm=True, bias=True), r"Qwen3ForCausalLM \(chosen for qk_norm=True\) .* bias=True \(Qwen3's MLP has"),
        (dict(qk_norm=True, value_residual=True), r"Qwen3ForCausalLM .* value_residual=True \(Qwen3's layers have no"),
        (dict(logit_softcap=30.0), r"LlamaForCausalLM .* logit_softcap=30.0 \(Llama has no tanh cap"),
        (dict(value_residual=True), r"LlamaForCausalLM .* value_residual=True \(Llama's layers have no value"),
        ({**GPT2_STYLE, "mlp": "relu2", "qk_norm": True}, r"GPT2LMHeadModel .* mlp='relu2'.*qk_norm=True"),
    ],
)
def test_configs_transformers_cannot_express(char_tokenizer, fields, match, tmp_path):
    model = GPT(Config(**BASE, **fields))
    with pytest.raises(ConfigError, match=match + ".*lit_gpt's own folder format"):
        export.save_hf(model, char_tokenizer(), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing is written


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(model_type="mistral"), "model_type 'mistral'"),
        (dict(rope_parameters={"rope_type": "longrope", "rope_theta": 5e5, "factor": 8.0}), "rope_type 'longrope'"),
        (dict(rope_scaling={"type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}), "partial rotary factor"),
        (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
        (dict(mlp_bias=True), "attention_bias != mlp_bias"),
        (dict(head_dim=16), "head_dim 16"),
    ],
)
def test_hf_features_we_lack(char_tokenizer, change, match, tmp_path):
    export.save_hf(GPT(CONFIGS["llama-tied"]), char_tokenizer(), tmp_path)
    hf = {**json.loads((tmp_path / "config.json").read_text()), **change}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ConfigError, match=match):
        export.load_hf(tmp_path)
