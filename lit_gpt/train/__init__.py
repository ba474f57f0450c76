"""The Lightning layer, the only code that imports Lightning: ``module`` (``LitGPT``: steps and hooks), ``optim``
(optimizers and the LR schedule), ``parallel`` (FSDP2 and tensor parallelism, the gradient norm and clipping),
``resume`` (which checkpoint a run resumes from), ``hardware`` (settings chosen from the machine), ``datamodule``
(``TokenDataModule``, ``TextDataModule``), ``streaming`` (``StreamingTextDataModule``), ``callbacks`` (throughput and
MFU, text samples, the HParams tab), ``stability`` (``LossGuard``), ``logger``, ``lr_find`` (the learning-rate range
test) and ``lightning_cli`` (the ``LightningCLI`` that ``lit-gpt fit|validate|test`` runs)."""
