"""The fast paths of training on CPU: bf16-mixed, torch.compile, attention in float32 under autocast, fused AdamW."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from lit_gpt.attention import attend
from lit_gpt.cli import main
from lit_gpt.config import Config
from lit_gpt.model import GPT
from lit_gpt.train.module import LitGPT


def test_bf16_mixed_trains_on_cpu(fit_args, scalars, tmp_path):
    main(fit_args("--trainer.precision", "bf16-mixed"))
    logged = scalars(tmp_path / "runs" / "tiny" / "version_0")
    losses = [v for _, v in logged["train/loss"]]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]  # it learns
    assert all(math.isfinite(v) for _, v in logged["val/loss"])
    assert all(math.isfinite(v) and v > 0 for _, v in logged["train/grad_norm"])
    weights = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
    assert {w.dtype for w in weights.values()} == {torch.float32}  # mixed precision keeps float32 master weights


def test_attention_runs_in_float32_on_cpu_under_bf16_autocast():
    q = torch.randn(2, 4, 16, 8, dtype=torch.bfloat16)
    k, v = torch.randn(2, 2, 16, 8, dtype=torch.bfloat16), torch.randn(2, 2, 16, 8, dtype=torch.bfloat16)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attend(q, k, v, None, is_causal=True)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, expected.to(torch.bfloat16), rtol=0, atol=0)  # the float32 result, rounded once


def _fixed_batches(config: Config, steps: int, batch_size: int = 4) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (steps, batch_size, config.block_size + 1), generator=generator)
    return DataLoader([(t[:, :-1], t[:, 1:]) for t in tokens], batch_size=None)


def _train(compile: bool, config: Config, steps: int = 4) -> tuple[list[float], dict]:
    torch.manual_seed(0)
    module = LitGPT(config, learning_rate=1e-2, warmup_steps=1, compile=compile)
    losses = []
    module.on_train_batch_end = lambda outputs, batch, batch_idx: losses.append(outputs["loss"].item())
    trainer = Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
    )
    trainer.fit(module, train_dataloaders=_fixed_batches(config, steps))
    return losses, module.state_dict()


@pytest.mark.slow
def test_compiled_training_matches_eager_and_checkpoints_keep_their_keys():
    config = Config(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32)
    eager_losses, eager_state = _train(False, config)
    compiled_losses, compiled_state = _train(True, config)
    assert compiled_state.keys() == eager_state.keys()  # no `_orig_mod.` prefix: checkpoints load either way
    assert all("_orig_mod" not in key for key in compiled_state)
    # Inductor fuses and reorders float32 arithmetic, so the two agree closely rather than bitwise.
    torch.testing.assert_close(torch.tensor(compiled_losses), torch.tensor(eager_losses), rtol=1e-4, atol=1e-4)
    for key in eager_state:
        torch.testing.assert_close(compiled_state[key], eager_state[key], rtol=1e-3, atol=1e-4)
    model = GPT(config)
    model.load_state_dict({k.removeprefix("model."): v for k, v in compiled_state.items() if k.startswith("model.")})


def test_adamw_is_fused_on_cpu(tiny_config):
    module = LitGPT(tiny_config, lr_decay_steps=10)
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True


@pytest.mark.parametrize("compile", [False, True])
def test_the_module_holds_one_copy_of_the_model(tiny_config, compile):
    keys = LitGPT(tiny_config, compile=compile).state_dict().keys()
    assert keys == {f"model.{k}" for k in GPT(tiny_config).state_dict()}
