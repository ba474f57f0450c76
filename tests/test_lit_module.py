import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import ModelParallelStrategy, SingleDeviceStrategy
from torch.utils.data import DataLoader

from lit_gpt.config import Config, ConfigError
from lit_gpt.train.datamodule import TextDataModule
from lit_gpt.train.module import LitGPT
from lit_gpt.train.optim import MuonWithAdamW, lr_at


def test_lr_schedule_values():
    kw = dict(learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, decay_steps=2000)
    assert lr_at(0, **kw) == pytest.approx(1e-5)
    assert lr_at(99, **kw) == pytest.approx(1e-3)
    assert lr_at(100, **kw) == pytest.approx(1e-3)
    assert lr_at(1050, **kw) == pytest.approx(1e-4 + 0.5 * 9e-4)  # halfway through the cosine
    assert lr_at(2000, **kw) == pytest.approx(1e-4)
    assert lr_at(5000, **kw) == pytest.approx(1e-4)
    lrs = [lr_at(s, **kw) for s in range(100, 2001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_weight_decay_only_on_linear_matrices(tiny_config):
    module = LitGPT(tiny_config.replace(bias=True, norm="layernorm"), weight_decay=0.1)
    module.trainer = type("T", (), {"max_steps": 100})()  # configure_optimizers reads trainer.max_steps only
    config = module.configure_optimizers()
    decay, no_decay = config["optimizer"].param_groups
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("proj.weight") for p in decay["params"])
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "embed_tokens.weight" in no_decay_names  # tied with lm_head, counted once
    assert any(n.endswith("layernorm.weight") for n in no_decay_names)
    assert any(n.endswith("proj.bias") for n in no_decay_names)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.model.parameters()))


def test_bad_hyperparameters(tiny_config):
    with pytest.raises(ConfigError, match="min_lr"):
        LitGPT(tiny_config, learning_rate=1e-4, min_lr=1e-3)


def test_validation_loss_is_exact_over_the_split(shakespeare, tmp_path):
    dm = TextDataModule(path=str(shakespeare), tokenizer="char", block_size=48, batch_size=64, cache_dir=str(tmp_path))
    config = Config(vocab_size=dm.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=32)
    module = LitGPT(config, tokenizer=dm.tokenizer_spec)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    result = trainer.validate(module, datamodule=dm)[0]

    # reference: every validation token after the first predicted once from up to 48 tokens of context
    val = torch.from_numpy(dm.val_tokens[0].astype(np.int64))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(val) - 1, 48):
            end = min(start + 48, len(val) - 1)
            begin = max(0, end - 48)  # the last chunk re-reads earlier context, as the data module does
            logits = module.model(val[begin:end][None])[0, start - begin :]
            total += F.cross_entropy(logits, val[start + 1 : end + 1], reduction="sum").item()
            count += end - start
    assert count == len(val) - 1
    assert result["val/loss"] == pytest.approx(total / count, rel=1e-5)
    assert result["val/ppl"] == pytest.approx(math.exp(total / count), rel=1e-4)


def test_trainer_fits_a_few_steps(shakespeare, tmp_path):
    dm = TextDataModule(path=str(shakespeare), tokenizer="char", block_size=32, batch_size=8, cache_dir=str(tmp_path))
    config = Config(vocab_size=dm.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32)
    module = LitGPT(config, learning_rate=3e-3, warmup_steps=5)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=30,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        val_check_interval=30,
        check_val_every_n_epoch=None,
        limit_val_batches=5,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 30
    assert trainer.callback_metrics["val/loss"] < math.log(dm.vocab_size) - 0.5
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(lr_at(30, 3e-3, 6e-5, 5, 30))


def test_init_weights_from_a_hugging_face_folder(tiny_config, byte_encoding, tmp_path):
    from lit_gpt.checkpoint import save_hf
    from lit_gpt.tokenizer import Tokenizer

    config = tiny_config.replace(vocab_size=257)
    source = LitGPT(config).model
    save_hf(source, Tokenizer(encoding=byte_encoding), tmp_path / "hf")
    module = LitGPT(config.replace(dropout=0.1), init_weights=str(tmp_path / "hf"))
    for (name, a), b in zip(source.state_dict().items(), module.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="has another architecture .*n_layer: 2 there, 3 here"):
        LitGPT(config.replace(n_layer=3), init_weights=str(tmp_path / "hf"))


def test_fine_tuning_takes_another_rope_context_and_keeps_the_models_vocabulary_rows(tiny_config, tmp_path):
    """A Hugging Face model with more embedding rows than its tokenizer has ids (Qwen2.5: 151,936 for 151,665) and a
    long context trains at a shorter block_size with the data's (smaller) vocabulary linked into the config."""
    from lit_gpt.checkpoint import save_hf
    from lit_gpt.tokenizer import Tokenizer

    source = LitGPT(tiny_config.replace(vocab_size=320, block_size=64)).model.eval()
    save_hf(source, Tokenizer(chars=[chr(33 + i) for i in range(95)]), tmp_path / "hf")
    module = LitGPT(tiny_config.replace(vocab_size=96, block_size=32), init_weights=str(tmp_path / "hf"))
    assert module.config is module.model.config
    assert (module.config.vocab_size, module.config.padded_vocab_size, module.config.block_size) == (320, 320, 32)
    idx = torch.randint(0, 96, (2, 32))
    with torch.no_grad():
        assert torch.equal(module.model.eval()(idx), source(idx))  # the same model on a 32-token context
    longer = LitGPT(tiny_config.replace(vocab_size=96, block_size=128), init_weights=str(tmp_path / "hf"))
    assert longer.config.block_size == 128  # RoPE: a longer context is a context extension
    with pytest.raises(ConfigError, match="the tokenizer has 400 token ids but .* has 320 embedding rows"):
        LitGPT(tiny_config.replace(vocab_size=400, block_size=32), init_weights=str(tmp_path / "hf"))
    learned = dict(position_embedding="learned", norm="layernorm", mlp="gelu", bias=True)
    save_hf(LitGPT(tiny_config.replace(**learned)).model, Tokenizer(chars=["a", "b"]), tmp_path / "gpt2")
    with pytest.raises(ConfigError, match="block_size 32: .* a learned position table of 16 rows"):
        LitGPT(tiny_config.replace(**learned, block_size=32), init_weights=str(tmp_path / "gpt2"))


def test_init_weights_build_no_random_model_and_keep_this_runs_training_settings(tiny_config, tmp_path):
    from lit_gpt.checkpoint import save_folder
    from lit_gpt.tokenizer import Tokenizer

    source = LitGPT(tiny_config).model
    save_folder(source, Tokenizer(chars=[chr(33 + i) for i in range(95)]), tmp_path / "folder")
    before = torch.get_rng_state()
    module = LitGPT(tiny_config.replace(dropout=0.1), init_weights=str(tmp_path / "folder"))
    assert torch.equal(torch.get_rng_state(), before)  # no random initialisation drew from the generator
    assert module.model.training and all(p.requires_grad for p in module.model.parameters())
    dropouts = [m.p for m in module.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(p == 0.1 for p in dropouts)  # this run's dropout, not the file's 0.0
    assert module.model.lm_head.weight is module.model.embed_tokens.weight  # the tied head is one Parameter
    for (name, a), b in zip(source.state_dict().items(), module.model.state_dict().values()):
        assert torch.equal(a, b), name


def muon_module(tiny_config, **switches):
    config = tiny_config.replace(**switches)
    module = LitGPT(config, weight_decay=0.1, optimizer="muon")
    module.trainer = type("T", (), {"max_steps": 100, "strategy": SingleDeviceStrategy()})()
    return module


def test_muon_takes_the_block_matrices_and_adamw_the_rest(tiny_config):
    module = muon_module(tiny_config, bias=True, tie_embeddings=False, qk_norm=True, value_residual=True)
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, MuonWithAdamW)
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert list(groups) == ["muon", "decay", "no_decay"]
    assert [g["weight_decay"] for g in groups.values()] == [0.1, 0.1, 0.0]
    names = {id(p): n for n, p in module.model.named_parameters()}
    muon = {names[id(p)] for p in groups["muon"]["params"]}
    assert muon == {n for n in names.values() if n.startswith("layers.") and n.endswith("proj.weight")}
    assert {names[id(p)] for p in groups["decay"]["params"]} == {"lm_head.weight"}  # untied: AdamW with decay
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    assert "embed_tokens.weight" in no_decay and any(n.endswith("q_norm.weight") for n in no_decay)
    assert any(n.endswith("value_residual.weight") for n in no_decay) and any(n.endswith(".bias") for n in no_decay)
    every = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(every) == sorted(names) and len(set(every)) == len(every)  # each parameter exactly once
    assert optimizer.muon.param_groups == [groups["muon"]] and optimizer.adamw.param_groups[0] is groups["decay"]


def test_muon_and_adamw_state_round_trips_exactly(tiny_config):
    def step(module, optimizer, idx):
        optimizer.zero_grad()
        module.model(idx).float().logsumexp(-1).mean().backward()
        optimizer.step()

    idx = torch.randint(0, tiny_config.vocab_size, (2, 16))
    module = muon_module(tiny_config)
    optimizer = module.configure_optimizers()["optimizer"]
    for _ in range(2):
        step(module, optimizer, idx)
    twin = muon_module(tiny_config)
    twin.model.load_state_dict(module.model.state_dict())
    restored = twin.configure_optimizers()["optimizer"]
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as saved: no tensor shared with `optimizer`
    assert restored.muon.state is restored.state and restored.adamw.param_groups[0] is restored.param_groups[1]
    step(module, optimizer, idx)
    step(twin, restored, idx)
    for (name, ours), theirs in zip(twin.model.named_parameters(), module.model.parameters()):
        assert torch.equal(ours, theirs), name


def test_muon_is_refused_where_matrices_are_sharded(tiny_config):
    module = muon_module(tiny_config)
    module.trainer.strategy = ModelParallelStrategy()
    with pytest.raises(ConfigError, match="model.optimizer muon needs whole weight matrices.*ModelParallelStrategy"):
        module.configure_optimizers()


def test_gradient_clipping_covers_muon_and_adamw_parameters(tiny_config, monkeypatch):
    norms = []
    step = MuonWithAdamW.step

    def recording_step(self, closure=None):
        loss = closure()
        grads = [p.grad for group in self.param_groups for p in group["params"]]
        norms.append(torch.nn.utils.get_total_norm(grads).item())
        return step(self) or loss

    monkeypatch.setattr(MuonWithAdamW, "step", recording_step)
    windows = torch.randint(0, tiny_config.vocab_size, (3, 4, 17))
    trainer = Trainer(
        accelerator="cpu",
        max_steps=3,
        gradient_clip_val=0.01,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader([(w[:, :-1], w[:, 1:]) for w in windows], batch_size=None)
    trainer.fit(LitGPT(tiny_config, optimizer="muon"), train_dataloaders=loader)
    assert norms == pytest.approx([0.01] * 3, rel=1e-4)  # at init the norm is ~1: every step was clipped
