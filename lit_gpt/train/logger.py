"""``TensorBoardLogger``: Lightning's, without the ``epoch`` scalar.

Lightning adds ``epoch`` to every logged step. lit_gpt trains by steps from an endless stream of batches, so it is
always 0: a flat card that TensorBoard sorts first, above the loss curves. Everything else is Lightning's.
"""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` (same arguments) that drops the ``epoch`` metric."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({name: value for name, value in metrics.items() if name != "epoch"}, step)
