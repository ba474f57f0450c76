"""LitGPT: the LightningModule that owns a ``GPT`` and the training policy around it.

Policy: next-token cross-entropy; AdamW (Loshchilov & Hutter 2019) with weight decay on the matrices of the
linear layers only (not on norms, biases or embeddings), or with ``optimizer="muon"`` Muon for the matrices inside the
blocks and AdamW for the rest (``lit_gpt.train.optim``); a learning rate that warms up linearly for
``warmup_steps`` optimizer steps, then follows a cosine from ``learning_rate`` down to ``min_lr`` at
``lr_decay_steps`` (default: the trainer's ``max_steps``) and stays there.
Logged: ``train/loss`` and ``train/grad_norm`` (before clipping) every ``trainer.log_every_n_steps`` steps;
``val/loss`` (the exact token-weighted mean over the validation split, reduced across devices by torchmetrics) and
``val/ppl`` = exp(val/loss) per validation. With a mixture of corpora (the data module's ``val_corpora``: one
validation loader per corpus), ``val/loss/<name>`` is each corpus's exact mean and ``val/loss`` their sum
weighted by the mixture's weights (``lit_gpt.data.mixture`` says why). The learning rate is logged by Lightning's
LearningRateMonitor (as ``train/lr/decay`` and ``train/lr/no_decay``, one per parameter group, and
``train/lr/muon`` with Muon), tokens/s, FLOP/s and MFU by ``lit_gpt.train.callbacks.ThroughputMonitor`` (from
``flops_per_batch``).
Speed: ``compile`` runs the training forward and backward through ``torch.compile`` (evaluation stays eager); AdamW is
fused on CPU and CUDA; the gradient norm is computed once per step, with no host synchronisation.

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

import math
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from lit_gpt.checkpoint import CHECKPOINT_FORMAT, load_model, load_tokenizer
from lit_gpt.config import Config
from lit_gpt.data.windows import IGNORE_INDEX
from lit_gpt.errors import ConfigError
from lit_gpt.lora import LoRA, add_adapters, base_identity
from lit_gpt.flops import flops_per_token
from lit_gpt.model import GPT
from lit_gpt.train.optim import MuonWithAdamW, check_muon_strategy, split_parameters
from lit_gpt.train.parallel import clip_grads_with_norm_, parallelize, total_norm


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
        weight_decay: decoupled weight decay on linear-layer matrices (AdamW's and Muon's).
        betas: AdamW (beta1, beta2).
        eps: AdamW epsilon.
        optimizer: ``adamw`` for every parameter, or ``muon``: Muon (``torch.optim.Muon`` with
            ``adjust_lr_fn="match_rms_adamw"``, so the same learning rate and weight decay carry over) for the 2-D
            projections inside the blocks and AdamW for embeddings, head, norms and biases. Muon needs whole matrices:
            one device or DDP only (ConfigError under FSDP, ModelParallelStrategy or DeepSpeed).
        init_weights: start from the weights of a ``.ckpt``, a ``lit-gpt export`` folder or a Hugging Face Llama /
            GPT-2 folder (fine-tuning) instead of a random init; its architecture must equal ``config``'s, and its
            tokenizer the data's.
        lora: train LoRA adapters on the frozen ``init_weights`` instead of every weight (``lit_gpt.lora.LoRA``:
            ``r``, ``alpha``, ``dropout``, ``target_modules``); needs ``pip install -e ".[lora]"``.
        compile: run training and evaluation forward passes through ``torch.compile`` (Inductor; on CPU it needs
            a C++ compiler). The first steps are slower while it compiles; checkpoints are unaffected. None (the
            default): ``lit-gpt fit`` chooses from the machine (``lit_gpt.train.hardware``); built directly in
            Python, None means off.
        compile_mode: ``torch.compile``'s ``mode``: None (default), "reduce-overhead", "max-autotune" or
            "max-autotune-no-cudagraphs" (on CPU the latter picks Inductor's own C++ matmul kernels where they beat
            oneDNN, faster for small models).
        float32_matmul_precision: ``torch.set_float32_matmul_precision`` for this process, set at setup: "high" lets
            float32 matmuls use TF32 on NVIDIA GPUs since Ampere (bf16-mixed runs only keep float32 for a few ops);
            "highest" keeps full float32 everywhere.
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
        compile: bool | None = None,
        compile_mode: str | None = None,
        float32_matmul_precision: Literal["highest", "high", "medium"] = "high",
        lora: LoRA | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= min_lr <= learning_rate:
            raise ConfigError(f"need 0 <= model.min_lr <= model.learning_rate, got {min_lr} and {learning_rate}")
        if warmup_steps < 0:
            raise ConfigError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
        if lora is not None and init_weights is None:
            raise ConfigError("model.lora adapts a pretrained model: set model.init_weights (a .ckpt or a folder)")
        if optimizer not in ("adamw", "muon"):
            raise ConfigError(f"model.optimizer must be 'adamw' or 'muon', got {optimizer!r}")
        if optimizer == "muon" and lora is not None:
            raise ConfigError("model.optimizer muon is not used with model.lora (not measured on low-rank adapters): "
                              "train the adapters with --model.optimizer adamw")  # fmt: skip
        self.save_hyperparameters()
        self.config, self.tokenizer = config, tokenizer
        self.lora, self.base = lora, None  # LoRA: the settings, and the base's identity (set by _load_weights)
        self.model = GPT(config)
        if init_weights is not None:
            self._load_weights(init_weights)
        # Training calls ``self._compiled`` when ``compile`` is set, else ``self.model``. ``self.model`` stays the
        # plain module (evaluation, generation, text samples and checkpoints use it): compiling the bound method
        # registers no second module, so state-dict keys have no ``_orig_mod.`` prefix and no second copy. Evaluation
        # runs eagerly: in eval mode and on its batch shapes a compiled forward would compile twice more (~5 s each on
        # a CPU) to save ~15% of a validation (bench/validation_cost.py, docs/benchmarks.md).
        self._compiled = torch.compile(self.model.forward, dynamic=False, mode=compile_mode) if compile else None
        self.val_loss = MeanMetric()
        self.corpus_losses = nn.ModuleList()  # one MeanMetric per corpus of a mixture (setup)
        self.val_corpora: list[tuple[str, float]] | None = None

    def _load_weights(self, path: str) -> None:
        pretrained = load_model(path)
        try:
            tokenizer = load_tokenizer(path).spec
        except ConfigError:  # a Hugging Face folder without a tokenizer lit_gpt knows: nothing to compare
            tokenizer = None
        ignore = {"dropout", "init", "gradient_checkpointing"}  # training-time settings, free to differ
        theirs, ours = pretrained.config.to_dict(), self.config.to_dict()
        different = [
            f"{k}: {theirs[k]!r} there, {ours[k]!r} here" for k in ours if k not in ignore and theirs[k] != ours[k]
        ]
        if different:
            raise ConfigError(f"model.init_weights {path} has another architecture ({'; '.join(different)}); "
                              "set model.config to match it")  # fmt: skip
        if tokenizer is not None and self.tokenizer is not None and tokenizer != self.tokenizer:
            name = tokenizer.get("name", "char")
            raise ConfigError(f"model.init_weights {path} was trained with another tokenizer ({name!r}) than the data "
                              "uses: set data.tokenizer to the one the weights were trained with")  # fmt: skip
        self.model.load_state_dict(pretrained.state_dict())
        if self.lora is not None:  # freeze the base and add the adapters (lit_gpt.lora)
            self.base = base_identity(path, self.model)
            add_adapters(self.model, self.lora)

    def setup(self, stage: str) -> None:
        torch.set_float32_matmul_precision(self.hparams.float32_matmul_precision)
        # (name, weight) of each validation loader when the data module serves a mixture
        self.val_corpora = getattr(self.trainer.datamodule, "val_corpora", None)
        if self.val_corpora and len(self.corpus_losses) != len(self.val_corpora):
            self.corpus_losses = nn.ModuleList(MeanMetric() for _ in self.val_corpora)

    _parallelized = False

    def configure_model(self) -> None:
        """Under Lightning's ``ModelParallelStrategy``, shard ``self.model`` over the strategy's device mesh: tensor
        parallelism and FSDP2 (``lit_gpt.train.parallel.parallelize``); once, however often Lightning calls this."""
        if self.device_mesh is not None and not self._parallelized:
            parallelize(self.model, self.device_mesh)
            self._parallelized = True
            if self._compiled is not None:  # a compiled forward would skip the FSDP2 root's hooks
                rank_zero_warn("model.compile is not applied under ModelParallelStrategy (not verified with FSDP2 and "
                               "tensor parallelism here); training runs eagerly")  # fmt: skip
                self._compiled = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A plain, versioned record that lit_gpt.checkpoint reads: the model can be rebuilt without Lightning.
        record = {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "tokenizer": self.tokenizer}
        if self.lora is not None:  # the adapters and the base's identity, not a second copy of the base
            record["lora"] = {**self.lora.to_dict(), "base": self.base}
            adapters = {f"model.{name}" for name, param in self.model.named_parameters() if param.requires_grad}
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k in adapters or not k.startswith("model.")}
        checkpoint["lit_gpt"] = record
        # Dropout draws from torch's global generators, which Lightning does not checkpoint: with them a resumed run
        # draws the same masks as an uninterrupted one (the data loaders have their own generators).
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state()  # this rank's device

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("optimizer", "adamw")  # older checkpoints: AdamW
        if "optimizer_states" in checkpoint and saved != self.hparams.optimizer:
            raise ConfigError(f"cannot resume a run trained with model.optimizer {saved} with model.optimizer "
                              f"{self.hparams.optimizer}: set --model.optimizer {saved}, or start a new run from its "
                              "weights with --model.init_weights")  # fmt: skip
        if self.lora is not None:
            self._restore_base(checkpoint)
        states = checkpoint.get("rng_states", {})
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state(states["cuda"])

    def _restore_base(self, checkpoint: dict) -> None:
        """Before Lightning loads a LoRA checkpoint's state dict (adapters only): check that it was trained on the
        base this run loaded (``init_weights``), then fill the frozen base weights in from the model."""
        record = checkpoint.get("lit_gpt", {}).get("lora")
        if record is None:
            raise ConfigError("this run trains LoRA adapters (model.lora) but the checkpoint has none: resume it "
                              "without model.lora, or start from its weights with model.init_weights")  # fmt: skip
        if record["base"]["sha256"] != self.base["sha256"]:
            raise ConfigError(f"the checkpoint's adapters were trained on the base at {record['base']['path']}, not on "
                              f"model.init_weights {self.base['path']} (different weights): resume with that base")
        state = checkpoint["state_dict"]
        for name, tensor in self.model.state_dict().items():
            state.setdefault(f"model.{name}", tensor)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T)."""
        return self.model(idx)

    _flops_per_batch: int | None = None

    @property
    def flops_per_batch(self) -> int | None:
        """Model FLOPs of the latest (B, T) batch on this device: forward + backward in training, forward only in
        validation and test (``lit_gpt.model.flops_per_token``); None before the first batch. With LoRA the backward
        pass computes input gradients only (the frozen weights need none), so training is 2 x forward; the
        adapters' own matmuls (about r / n_embd of the rest) are not counted.

        ``lit_gpt.train.callbacks.ThroughputMonitor`` reads it for FLOP/s and MFU. The
        batch-start hooks record it, so the last, smaller validation batch is counted exactly.
        """
        return self._flops_per_batch

    def _count_flops(self, batch: tuple[torch.Tensor, torch.Tensor], training: bool) -> None:
        B, T = batch[0].shape
        passes = (2 if self.lora is not None else 3) if training else 1  # forward + backward, in forwards
        self._flops_per_batch = B * T * passes * flops_per_token(self.config, T, training=False)

    def on_train_batch_start(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._count_flops(batch, training=True)

    def on_validation_batch_start(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int,
                                  dataloader_idx: int = 0) -> None:  # fmt: skip
        self._count_flops(batch, training=False)

    on_test_batch_start = on_validation_batch_start

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)

    def _logging_step(self) -> bool:
        """Whether this optimizer step's per-step metrics reach the logger: every ``trainer.log_every_n_steps``-th
        step, as Lightning writes them. Calling ``self.log`` only then saves ~1 ms of Lightning bookkeeping per step
        (bench/train_throughput.py on a CPU), so the progress bar's loss also updates at that rate."""
        return (self.global_step + 1) % self.trainer.log_every_n_steps == 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self._loss((self._compiled or self.model)(x), y)
        if self._logging_step():  # several devices: the mean over all of them (one all-reduce per logged step)
            self.log("train/loss", loss, prog_bar=True, sync_dist=self.trainer.world_size > 1)
        return loss

    def _evaluation_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, dataloader_idx: int) -> None:
        x, y = batch
        loss, targets = self._loss(self.model(x), y), (y != IGNORE_INDEX).sum()
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

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> None:  # fmt: skip
        self._evaluation_step(batch, "val", dataloader_idx)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, "test", dataloader_idx)

    def configure_optimizers(self):
        hp = self.hparams
        muon = hp.optimizer == "muon"
        if muon:
            check_muon_strategy(self.trainer.strategy)
        split = split_parameters(self.model, muon)  # trainable parameters only: with LoRA, the adapter matrices
        groups = [  # named: LearningRateMonitor logs train/lr/muon (with Muon), train/lr/decay and train/lr/no_decay
            {"params": split[name], "weight_decay": hp.weight_decay if name != "no_decay" else 0.0, "name": name}
            for name in ("muon", "decay", "no_decay")
            if split[name] or (self.lora is not None and name != "muon")  # LoRA: the tags of full training
        ]
        if self.device_mesh is not None:  # AdamW's fused and foreach kernels take DTensors or tensors, not both
            groups = _split_by_tensor_kind(groups)
        # The fused kernel updates every parameter in one pass (CPU and CUDA); elsewhere PyTorch picks foreach. Not
        # with 16-mixed's GradScaler: a fused step unscales internally, so Lightning could not clip unscaled grads.
        fused = True if self.device.type in ("cpu", "cuda") and self._grad_scaler() is None else None
        adamw = dict(lr=hp.learning_rate, betas=hp.betas, eps=hp.eps, fused=fused)
        if muon:
            muon_groups = [group for group in groups if group["name"] == "muon"]
            adamw_groups = [group for group in groups if group["name"] != "muon"]
            optimizer = MuonWithAdamW(muon_groups, adamw_groups, weight_decay=hp.weight_decay, **adamw)
        else:
            optimizer = torch.optim.AdamW(groups, **adamw)
        decay_steps = self.hparams.lr_decay_steps or self.trainer.max_steps
        if decay_steps is None or decay_steps < 0:
            raise ConfigError("set trainer.max_steps (or model.lr_decay_steps): the cosine schedule needs a horizon")
        base = self.hparams.learning_rate
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_at(step, base, self.hparams.min_lr, self.hparams.warmup_steps, decay_steps) / base,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": "train/lr"}}

    def _grad_scaler(self):
        """The GradScaler of a ``16-mixed`` run, or None (other precisions, or no Trainer attached yet)."""
        try:
            plugin = self.trainer.precision_plugin
        except (RuntimeError, AttributeError):  # not attached to a Trainer (a script or test calling us directly)
            return None
        return getattr(plugin, "scaler", None)

    _grad_norm: torch.Tensor | None = None

    def on_after_backward(self) -> None:
        self._grad_norm = None  # the gradients changed

    def gradient_norm(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """The global L2 norm of the gradients of ``optimizer``'s parameters on this device, a 0-dim float tensor.

        Computed once per optimizer step (after the last backward) and shared by ``configure_gradient_clipping`` and
        ``lit_gpt.train.stability.LossGuard``; no host synchronisation.
        """
        if self._grad_norm is None:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            # sharded (DTensor) gradients under ModelParallelStrategy: each mesh's norm reduced over that mesh
            sharded = self.device_mesh is not None
            self._grad_norm = total_norm(grads) if sharded else torch.nn.utils.get_total_norm(grads)
        return self._grad_norm

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:  # fmt: skip
        """Log ``train/grad_norm``, the global L2 norm of the gradients before clipping, then clip as configured.

        With one device or DDP every rank holds the whole gradient, and under ``ModelParallelStrategy`` (FSDP2, tensor
        parallelism) the norm of the sharded gradients is reduced over their meshes (``lit_gpt.train.parallel``), so
        the norm is computed once here and reused for norm clipping. FSDP1 and DeepSpeed clip through Lightning,
        which knows their shards.
        """
        if type(self.trainer.strategy) not in (SingleDeviceStrategy, DDPStrategy, ModelParallelStrategy):
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = self.gradient_norm(optimizer)
        if self._logging_step():
            self.log("train/grad_norm", norm)
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            if self.device_mesh is not None:
                clip_grads_with_norm_([p.grad for p in params], gradient_clip_val, norm)
            else:
                torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm)
        elif gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)


def _split_by_tensor_kind(groups: list[dict]) -> list[dict]:
    """Each parameter group split into its sharded (``DTensor``) and plain parameters, empty parts dropped; the
    sharded part keeps the group's name, the plain one gets ``_whole`` appended (tensor parallelism leaves
    embeddings and norms whole)."""
    from torch.distributed.tensor import DTensor

    split = []
    for group in groups:
        for suffix, keep in (("", True), ("_whole", False)):
            params = [p for p in group["params"] if isinstance(p, DTensor) == keep]
            if params:
                split.append({**group, "params": params, "name": group["name"] + suffix})
    return split
