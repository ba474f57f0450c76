"""LitGPT: the Lightning adapter around a ``GPT``: training and validation steps, metrics and hooks. The policies are
plain functions it calls: the loss (``lit_gpt.train.loss``: whole, or chunked with ``loss_chunk_size``), the
optimizer and the LR schedule (``lit_gpt.train.optim``), the gradient norm and
clipping (``lit_gpt.train.parallel``), loading pretrained weights (``lit_gpt.checkpoint.load_checkpoint``) and the
checkpoint record (``lit_gpt.formats.training``, through ``lit_gpt.checkpoint``).

Policy: next-token cross-entropy; AdamW (Loshchilov & Hutter 2019) with weight decay on the matrices of the
linear layers only (not on norms, biases or embeddings), or with ``optimizer="muon"`` Muon for the matrices inside the
blocks and AdamW for the rest; a learning rate that warms up linearly for ``warmup_steps`` optimizer steps, then
follows a cosine from ``learning_rate`` down to ``min_lr`` at ``lr_decay_steps`` (default: the trainer's
``max_steps``) and stays there.
Logged: ``train/loss`` and ``train/grad_norm`` (before clipping) every ``trainer.log_every_n_steps`` steps;
``val/loss`` (the exact token-weighted mean over the validation split, reduced across devices by torchmetrics) and
``val/ppl`` = exp(val/loss) per validation. With a mixture of corpora (the data module's ``val_corpora``: one
validation loader per corpus), ``val/loss/<name>`` is each corpus's exact mean and ``val/loss`` their sum
weighted by the mixture's weights (``lit_gpt.data.mixture`` says why). The learning rate is logged by Lightning's
LearningRateMonitor (as ``train/lr/decay`` and ``train/lr/no_decay``, one per parameter group, and
``train/lr/muon`` with Muon), tokens/s, FLOP/s and MFU by ``lit_gpt.train.callbacks.ThroughputMonitor`` (from
``flops_per_batch``: ``batch_flops`` of the latest batch on this device, None before the first).
Speed: ``compile`` runs the training forward and backward of each transformer block through ``torch.compile``, one
graph per kind of block reused by every layer (``lit_gpt.train.compile``; evaluation stays eager); AdamW is fused on
CPU and CUDA; the gradient norm is computed once per step, with no host synchronisation.

Pretrained weights (``init_weights``) are read once, and the model is built from their tensors without a random
initialisation; a random model (no ``init_weights``) is ``GPT(config)``, drawing from torch's global generator.
LoRA (``lora``, peft through ``lit_gpt.lora``): the model loads ``init_weights`` (the base), freezes it and gets
adapters; the optimizer holds the adapter matrices only, and checkpoints hold them with the base's identity (path and
SHA-256 of its weights) instead of a second copy of the base. Resuming rebuilds the base from ``init_weights``, checks
it against the checkpoint's record and fills the base weights in before Lightning loads the state dict.
Weight decay on the adapters: A and B are matrices of linear layers, so they are decayed like every other such
matrix. For an adapter this pulls the update (alpha/r) B A towards zero, i.e. the fine-tuned model towards its base
(not the weights towards zero, as in full training): a mild regulariser in the right direction, also used by the
LoRA paper's GPT-2 runs (weight decay 0.01). Set ``weight_decay: 0`` to turn it off.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric

from lit_gpt.checkpoint import build_model, load_checkpoint, restore_training_record, write_training_record
from lit_gpt.config import Config
from lit_gpt.data.windows import IGNORE_INDEX
from lit_gpt.errors import ConfigError
from lit_gpt.flops import flops_per_token
from lit_gpt.lora import LoRA, add_adapters, base_identity
from lit_gpt.model import GPT
from lit_gpt.train.compile import compile_blocks, eager_blocks
from lit_gpt.train.loss import batch_loss
from lit_gpt.train.optim import build_optimizer, check_muon_strategy, check_resumed_optimizer, cosine_schedule
from lit_gpt.train.parallel import clip_grad_norm_, gradient_norm, owns_gradient_norm, parallelize

Batch = tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict]
"""Token ids ``(x, y)``, both (B, T) int64: inputs and next-token targets (``IGNORE_INDEX`` where none); under
document masking also a dict of ``GPT.forward`` keyword arguments (``lit_gpt.train.datamodule``)."""
TRAINING_FIELDS = ("dropout", "init", "gradient_checkpointing")
"""``Config`` fields that are training-time settings: ``init_weights`` may have been trained with other values."""
CONTEXT_FIELDS = ("block_size", "rope_theta", "rope_scaling")
"""``Config`` fields of a RoPE model that set its context length and positions, not the shapes of its weights:
``init_weights`` may differ in them, which is how a context is extended (a larger block_size and a rope_scaling)."""


def check_settings(
    learning_rate: float,
    min_lr: float,
    warmup_steps: int,
    optimizer: str,
    lora,
    init_weights,
    compile=None,
    loss_chunk_size=None,
) -> None:
    """Raise ConfigError for ``LitGPT`` settings that do not go together (named by their ``model.*`` keys)."""
    if compile == "auto":
        raise ConfigError(
            "model.compile auto is resolved by lit-gpt fit, which knows the run's length; in Python pass True or False"
        )
    if loss_chunk_size is not None and loss_chunk_size < 1:
        raise ConfigError(f"model.loss_chunk_size must be >= 1 token (or null), got {loss_chunk_size}")
    if not 0 <= min_lr <= learning_rate:
        raise ConfigError(f"need 0 <= model.min_lr <= model.learning_rate, got {min_lr} and {learning_rate}")
    if warmup_steps < 0:
        raise ConfigError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
    if lora is not None and init_weights is None:
        raise ConfigError("model.lora adapts a pretrained model: set model.init_weights (a .ckpt or a folder)")
    if optimizer not in ("adamw", "muon"):
        raise ConfigError(f"model.optimizer must be 'adamw' or 'muon', got {optimizer!r}")
    if optimizer == "muon" and lora is not None:
        raise ConfigError(
            "model.optimizer muon is not used with model.lora (not measured on low-rank adapters): train the "
            "adapters with model.optimizer adamw"
        )


def load_pretrained(path: str, config: Config, tokenizer: dict | None, lora: LoRA | None) -> tuple[GPT, dict | None]:
    """The model to train from the weights at ``path`` (any form ``lit_gpt.checkpoint.load_checkpoint`` reads, read
    once), and with ``lora`` the base's identity (``lit_gpt.lora.base_identity``), else None.

    The tensors are assigned to ``GPT(fine_tuning_config(...))`` built without a random initialisation: the
    checkpoint's architecture with this run's training-time settings (``TRAINING_FIELDS``, e.g. dropout) and, for a
    RoPE model, context (``CONTEXT_FIELDS``). With ``lora`` the weights are frozen and adapters added (their A matrices drawn from torch's global
    generator).

    Raises:
        ConfigError: as ``fine_tuning_config`` does, or if the checkpoint names a tokenizer other than ``tokenizer``
            (a spec; a checkpoint without one is not compared).
    """
    pretrained, theirs = load_checkpoint(path, require_tokenizer=False)
    config = fine_tuning_config(pretrained.config, config, path)
    if theirs is not None and tokenizer is not None and theirs.spec != tokenizer:
        raise ConfigError(
            f"model.init_weights {path} was trained with another tokenizer ({theirs.spec.get('name', 'char')!r}) than "
            "the data uses: set data.tokenizer to the one the weights were trained with"
        )
    model = build_model(config, pretrained.state_dict(), path)  # the same tensors, assigned: no copy
    if lora is None:
        return model, None
    base = base_identity(path, model)
    return add_adapters(model, lora), base


def fine_tuning_config(pretrained: Config, config: Config, path: str) -> Config:
    """The architecture that trains on weights of architecture ``pretrained``, given this run's ``config``: the
    pretrained one, with ``config``'s ``TRAINING_FIELDS`` and, for a RoPE model, its ``CONTEXT_FIELDS``.

    ``config`` must describe the same model, except that a RoPE model may train at another context (``block_size``,
    ``rope_theta``, ``rope_scaling``: its weights do not depend on the context length, so this is how a context is
    extended, e.g. with YaRN; a learned position table has one row per position), and that the tokenizer's
    ``vocab_size`` (which the command line links into ``config``) may be smaller than the model's embedding rows
    (``padded_vocab_size``; Hugging Face models often pad, e.g. Qwen2.5's 151,936 rows for 151,665 token ids): the
    model keeps its rows.

    Raises:
        ConfigError: naming each other difference, another ``block_size`` for learned positions, or a tokenizer
            with more ids than the model has rows.
    """
    rope = pretrained.position_embedding == "rope"
    if config.vocab_size > pretrained.padded_vocab_size:
        raise ConfigError(
            f"the tokenizer has {config.vocab_size} token ids but model.init_weights {path} has "
            f"{pretrained.padded_vocab_size} embedding rows: set data.tokenizer to the tokenizer the weights were "
            "trained with"
        )
    if config.block_size != pretrained.block_size and not rope:
        raise ConfigError(
            f"model.config.block_size {config.block_size}: model.init_weights {path} has a learned position table "
            f"of {pretrained.block_size} rows, so it trains at block_size {pretrained.block_size}"
        )
    context = CONTEXT_FIELDS if rope else ()
    ignore = (*TRAINING_FIELDS, *context, "vocab_size", "padding_multiple")
    if different := pretrained.differences(config, ignore=ignore):
        details = "; ".join(f"{k}: {getattr(pretrained, k)!r} there, {getattr(config, k)!r} here" for k in different)
        raise ConfigError(
            f"model.init_weights {path} has another architecture ({details}); set model.config to match it"
        )
    return pretrained.replace(**{k: getattr(config, k) for k in (*TRAINING_FIELDS, *context)})


def batch_flops(config: Config, batch: Batch, training: bool, lora: bool) -> int:
    """Model FLOPs of one (B, T) batch (``lit_gpt.flops.flops_per_token``): forward + backward in training, forward
    only in evaluation. With LoRA the backward pass computes input gradients only (the frozen weights need none), so
    training is 2 x forward; the adapters' own matmuls (about r / n_embd of the rest) are not counted."""
    B, T = batch[0].shape
    passes = (2 if lora else 3) if training else 1  # forward + backward, in forwards
    return B * T * passes * flops_per_token(config, T, training=False)


def fused_adamw(module: LightningModule) -> bool | None:
    """AdamW's ``fused`` for ``module``: True (one kernel for every parameter) on CPU and CUDA, None (PyTorch's
    choice) elsewhere and with 16-mixed's GradScaler, whose fused step would unscale internally, so Lightning could
    not clip unscaled gradients."""
    try:
        scaler = getattr(module.trainer.precision_plugin, "scaler", None)
    except (RuntimeError, AttributeError):  # not attached to a Trainer (a script or test calling us directly)
        scaler = None
    return True if module.device.type in ("cpu", "cuda") and scaler is None else None


class LitGPT(LightningModule):
    """Trains ``GPT(config)`` on batches ``(x, y)`` of int64 token ids, both (B, T).

    Args:
        config: the model's architecture; ``vocab_size`` is linked from the data module on the command line.
        tokenizer: the tokenizer spec, linked from the data module and stored in checkpoints for generation.
        learning_rate: peak AdamW learning rate.
        min_lr: learning rate at the end of the cosine decay.
        warmup_steps: optimizer steps of linear warmup.
        lr_decay_steps: optimizer step where the cosine reaches ``min_lr``; None means ``trainer.max_steps``.
        weight_decay: decoupled weight decay on linear-layer matrices (AdamW's and Muon's).
        betas: AdamW (beta1, beta2).
        eps: AdamW epsilon.
        optimizer: ``adamw`` for every parameter, or ``muon``: Muon (``lit_gpt.train.optim``: the same learning rate
            and weight decay carry over) for the 2-D projections inside the blocks and AdamW for the rest. Muon needs
            whole matrices: one device or DDP only (ConfigError under FSDP, ModelParallelStrategy or DeepSpeed).
        init_weights: start from the weights of any checkpoint form (``lit_gpt.checkpoint``) instead of a random
            init (fine-tuning): ``config``'s architecture as ``fine_tuning_config`` allows, and the data's tokenizer.
        lora: train LoRA adapters on the frozen ``init_weights`` instead of every weight (``lit_gpt.lora.LoRA``:
            ``r``, ``alpha``, ``dropout``, ``target_modules``); needs ``pip install -e ".[lora]"``.
        compile: run the blocks' training forward and backward through ``torch.compile`` (Inductor; on CPU it needs
            a C++ compiler; ``lit_gpt.train.compile.compile_blocks``). None or ``auto``: ``lit-gpt fit`` chooses from
            the machine and the run's length (``lit_gpt.train.hardware``); in Python, None means off and ``auto`` is
            a ConfigError (only ``lit-gpt fit`` knows the run to weigh).
        compile_mode: ``torch.compile``'s ``mode``: None, "reduce-overhead", "max-autotune" or
            "max-autotune-no-cudagraphs" (on CPU: Inductor's own C++ matmuls where they beat oneDNN, for small models).
        float32_matmul_precision: ``torch.set_float32_matmul_precision``, set at setup: "high" lets float32 matmuls
            use TF32 on NVIDIA GPUs since Ampere; "highest" keeps full float32 everywhere.
        loss_chunk_size: compute the output head and the loss this many tokens at a time, recomputed in the backward
            pass, so the (B, T, V) logits are never stored whole (``lit_gpt.train.loss``); None: all at once.
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
        optimizer: Literal["adamw", "muon"] = "adamw",
        init_weights: str | None = None,
        compile: bool | Literal["auto"] | None = None,
        compile_mode: str | None = None,
        float32_matmul_precision: Literal["highest", "high", "medium"] = "high",
        lora: LoRA | None = None,
        loss_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        check_settings(learning_rate, min_lr, warmup_steps, optimizer, lora, init_weights, compile, loss_chunk_size)
        self.save_hyperparameters()
        self.tokenizer, self.lora = tokenizer, lora
        # self.base: the identity of LoRA's base (path, weight hash), recorded in checkpoints; None without LoRA
        if init_weights is None:
            self.model, self.base = GPT(config), None
        else:
            self.model, self.base = load_pretrained(init_weights, config, tokenizer, lora)
        self.config = self.model.config  # with init_weights: its vocabulary rows, this run's block_size
        # The blocks' training forwards run compiled; evaluation, samples and checkpoints see the plain model
        self._compiled = compile_blocks(self.model, compile_mode) if compile else None
        self.val_loss = MeanMetric()
        self.corpus_losses = nn.ModuleList()  # one MeanMetric per corpus of a mixture (setup)
        self.val_corpora: list[tuple[str, float]] | None = None
        self.flops_per_batch: int | None = None
        self._grad_norm: torch.Tensor | None = None  # this optimizer step's (gradient_norm)
        self._parallelized = False

    def setup(self, stage: str) -> None:
        torch.set_float32_matmul_precision(self.hparams.float32_matmul_precision)
        # (name, weight) of each validation loader when the data module serves a mixture
        self.val_corpora = getattr(self.trainer.datamodule, "val_corpora", None)
        if self.val_corpora and len(self.corpus_losses) != len(self.val_corpora):
            self.corpus_losses = nn.ModuleList(MeanMetric() for _ in self.val_corpora)

    def configure_model(self) -> None:
        """Under Lightning's ``ModelParallelStrategy``, shard ``self.model`` over the strategy's device mesh: tensor
        parallelism and FSDP2 (``lit_gpt.train.parallel.parallelize``); once, however often Lightning calls this."""
        if self.device_mesh is not None and not self._parallelized:
            parallelize(self.model, self.device_mesh)
            self._parallelized = True
            if self._compiled is not None:  # a compiled forward would skip the FSDP2 root's hooks
                rank_zero_warn(
                    "model.compile is not applied under ModelParallelStrategy (not verified with FSDP2 and tensor "
                    "parallelism here); training runs eagerly"
                )
                eager_blocks(self.model)
                self._compiled = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        write_training_record(checkpoint, self.model, self.tokenizer, self.lora, self.base)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_resumed_optimizer(checkpoint, self.hparams.optimizer)
        restore_training_record(checkpoint, self.model, self.base)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T)."""
        return self.model(idx)

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        self.flops_per_batch = batch_flops(self.config, batch, training=True, lora=self.lora is not None)

    def on_validation_batch_start(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.flops_per_batch = batch_flops(self.config, batch, training=False, lora=self.lora is not None)

    on_test_batch_start = on_validation_batch_start

    def _logging_step(self) -> bool:
        """Whether this step's metrics reach the logger (every ``trainer.log_every_n_steps``-th step): ``self.log`` is
        called only then, skipping Lightning's bookkeeping on the others (the progress bar's loss updates as often)."""
        return (self.global_step + 1) % self.trainer.log_every_n_steps == 0

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = batch_loss(self.model, batch, self.hparams.loss_chunk_size)
        if self._logging_step():  # several devices: the mean over all of them (one all-reduce per logged step)
            self.log("train/loss", loss, prog_bar=True, sync_dist=self.trainer.world_size > 1)
        return loss

    def _evaluation_step(self, batch: Batch, stage: str, dataloader_idx: int) -> None:
        loss, targets = batch_loss(self.model, batch, self.hparams.loss_chunk_size), (batch[1] != IGNORE_INDEX).sum()
        if not self.val_corpora:
            self.val_loss.update(loss, weight=targets)
            self.log(f"{stage}/loss", self.val_loss, prog_bar=True)
            return
        metric = self.corpus_losses[dataloader_idx]
        metric.update(loss, weight=targets)
        self.log(f"{stage}/loss/{self.val_corpora[dataloader_idx][0]}", metric, add_dataloader_idx=False)

    def _log_perplexity(self, stage: str) -> None:
        """``{stage}/ppl`` = exp(``{stage}/loss``): the perplexity of the exact token-weighted mean loss, reduced
        across devices by the metric, with no second pass over the logits. For a mixture, ``{stage}/loss`` is logged
        here too: the weighted sum of the corpora's exact means."""
        # compute() is already reduced across devices; sync_dist only tells Lightning so (the mean of equal values)
        sync = self.trainer.world_size > 1
        if not self.val_corpora:
            self.log(f"{stage}/ppl", self.val_loss.compute().exp(), sync_dist=sync)
            return
        total = sum(weight * metric.compute() for (_, weight), metric in zip(self.val_corpora, self.corpus_losses))
        self.log(f"{stage}/loss", total, prog_bar=True, add_dataloader_idx=False, sync_dist=sync)
        self.log(f"{stage}/ppl", total.exp(), add_dataloader_idx=False, sync_dist=sync)

    def on_validation_epoch_end(self) -> None:
        self._log_perplexity("val")

    def on_test_epoch_end(self) -> None:
        self._log_perplexity("test")

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, "test", dataloader_idx)

    def configure_optimizers(self) -> dict:
        """``lit_gpt.train.optim``'s optimizer over the trainable parameters (with LoRA, the adapter matrices) and
        its cosine schedule, stepped per optimizer step and logged as ``train/lr``."""
        hp = self.hparams
        if hp.optimizer == "muon":
            check_muon_strategy(self.trainer.strategy)
        optimizer = build_optimizer(
            self.model,
            hp.optimizer,
            **{key: hp[key] for key in ("learning_rate", "weight_decay", "betas", "eps")},
            fused=fused_adamw(self),
            sharded=self.device_mesh is not None,
            keep_empty_groups=self.lora is not None,
        )
        decay_steps = hp.lr_decay_steps or self.trainer.max_steps
        schedule = cosine_schedule(optimizer, hp.learning_rate, hp.min_lr, hp.warmup_steps, decay_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": "train/lr"}}

    def on_after_backward(self) -> None:
        self._grad_norm = None  # the gradients changed

    def gradient_norm(self, optimizer: Optimizer) -> torch.Tensor:
        """``lit_gpt.train.parallel.gradient_norm`` of ``optimizer``'s gradients, computed once per optimizer step and
        shared by ``configure_gradient_clipping`` and ``lit_gpt.train.stability.LossGuard``."""
        if self._grad_norm is None:
            self._grad_norm = gradient_norm(optimizer, sharded=self.device_mesh is not None)
        return self._grad_norm

    def configure_gradient_clipping(
        self, optimizer: Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Log ``train/grad_norm`` (the gradients' global L2 norm before clipping), then clip with that norm as
        configured; FSDP1 and DeepSpeed clip through Lightning, which knows their shards."""
        if not owns_gradient_norm(self.trainer.strategy):
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        norm = self.gradient_norm(optimizer)
        if self._logging_step():
            self.log("train/grad_norm", norm)
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            clip_grad_norm_(optimizer, gradient_clip_val, norm, sharded=self.device_mesh is not None)
        elif gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
