"""LitGPT: the LightningModule that owns a ``GPT`` and the training policy around it.

Policy: next-token cross-entropy; AdamW (Loshchilov & Hutter 2019) with weight decay on the matrices of the
linear layers only (not on norms, biases or embeddings); a learning rate that warms up linearly for
``warmup_steps`` optimizer steps, then follows a cosine from ``learning_rate`` down to ``min_lr`` at
``lr_decay_steps`` (default: the trainer's ``max_steps``) and stays there.
Logged: ``train/loss`` per step; ``val/loss`` (the exact token-weighted mean over the validation split) and
``val/ppl`` = exp(val/loss) per validation, both reduced across devices by torchmetrics. The learning rate is
logged by Lightning's LearningRateMonitor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.text import Perplexity

from lit_gpt.config import Config, ConfigError
from lit_gpt.data import IGNORE_INDEX
from lit_gpt.model import GPT


def lr_at(step: int, learning_rate: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warmup, cosine decay, then flat at min_lr.

    Warmup reaches ``learning_rate`` at step ``warmup_steps - 1``; the cosine runs from step ``warmup_steps``
    (``learning_rate``) to step ``decay_steps`` (``min_lr``), as in nanoGPT's ``get_lr``.
    """
    if step < warmup_steps:
        return learning_rate * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)


class LitGPT(LightningModule):
    """Trains ``GPT(config)`` on batches ``(x, y)`` of int64 token ids, both (B, T).

    Args:
        config: the model's architecture; ``vocab_size`` is linked from the data module on the command line.
        tokenizer: the tokenizer spec, linked from the data module and stored in checkpoints for generation.
        learning_rate: peak AdamW learning rate.
        min_lr: learning rate at the end of the cosine decay.
        warmup_steps: optimizer steps of linear warmup.
        lr_decay_steps: optimizer step where the cosine reaches ``min_lr``; None means ``trainer.max_steps``.
        weight_decay: AdamW decoupled weight decay on linear-layer matrices.
        betas: AdamW (beta1, beta2).
        eps: AdamW epsilon.
        init_weights: start from the weights of a ``.ckpt``, a ``lit-gpt export`` folder or a Hugging Face Llama /
            GPT-2 folder (fine-tuning) instead of a random init; its architecture must equal ``config``'s.
    """

    def __init__(
        self,
        config: Config,
        tokenizer: dict | None = None,
        learning_rate: float = 6e-4,
        min_lr: float = 6e-5,
        warmup_steps: int = 100,
        lr_decay_steps: int | None = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        init_weights: str | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= min_lr <= learning_rate:
            raise ConfigError(f"need 0 <= model.min_lr <= model.learning_rate, got {min_lr} and {learning_rate}")
        if warmup_steps < 0:
            raise ConfigError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
        self.save_hyperparameters()
        self.config, self.tokenizer = config, tokenizer
        self.model = GPT(config)
        if init_weights is not None:
            self._load_weights(init_weights)
        self.val_loss = MeanMetric()
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)

    def _load_weights(self, path: str) -> None:
        pretrained = GPT.from_checkpoint(path)
        ignore = {"dropout", "init", "gradient_checkpointing"}  # training-time settings, free to differ
        theirs, ours = pretrained.config.to_dict(), self.config.to_dict()
        different = [
            f"{k}: {theirs[k]!r} there, {ours[k]!r} here" for k in ours if k not in ignore and theirs[k] != ours[k]
        ]
        if different:
            raise ConfigError(f"model.init_weights {path} has another architecture ({'; '.join(different)}); "
                              "set model.config to match it")  # fmt: skip
        self.model.load_state_dict(pretrained.state_dict())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A plain, versioned record that lit_gpt.generate reads: the model can be rebuilt without Lightning.
        checkpoint["lit_gpt"] = {"format": 1, "config": self.config.to_dict(), "tokenizer": self.tokenizer}

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T)."""
        return self.model(idx)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self._loss(self.model(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluation_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self.model(x)
        self.val_loss.update(self._loss(logits, y), weight=(y != IGNORE_INDEX).sum())
        self.val_ppl.update(logits.float(), y)
        self.log(f"{stage}/loss", self.val_loss, prog_bar=True)
        self.log(f"{stage}/ppl", self.val_ppl)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def configure_optimizers(self):
        embeddings = {id(m.weight) for m in self.model.modules() if isinstance(m, nn.Embedding)}
        decay, no_decay = [], []
        for param in self.model.parameters():  # deduplicated: a tied matrix appears once, as an embedding
            (decay if param.dim() >= 2 and id(param) not in embeddings else no_decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        hp = self.hparams
        optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate, betas=hp.betas, eps=hp.eps)
        decay_steps = self.hparams.lr_decay_steps or self.trainer.max_steps
        if decay_steps is None or decay_steps < 0:
            raise ConfigError("set trainer.max_steps (or model.lr_decay_steps): the cosine schedule needs a horizon")
        base = self.hparams.learning_rate
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_at(step, base, self.hparams.min_lr, self.hparams.warmup_steps, decay_steps) / base,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
