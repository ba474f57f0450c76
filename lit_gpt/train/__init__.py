"""The Lightning layer, the only code that imports Lightning: ``module`` (``LitGPT``), ``datamodule``
(``TokenDataModule``, ``TextDataModule``), ``streaming`` (``StreamingTextDataModule``),
``callbacks`` (throughput and MFU, text samples, the HParams tab), ``stability``
(``LossGuard``), ``lr_find`` (the learning-rate range test) and ``lightning_cli`` (the ``LightningCLI`` that
``lit-gpt fit|validate|test`` runs)."""
