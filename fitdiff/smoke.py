"""A tiny model for smoke-testing the training stack (trainer, loggers, checkpoints, DDP, sweeps).

It logs the same metric names as the real stages (``train/loss``, ``val/loss``, ``test/loss``) so that
checkpoint monitoring, ``optimized_metric`` and logger output can be exercised in seconds on a CPU.
"""

from __future__ import annotations

import torch
from lightning.pytorch.demos.boring_classes import BoringModel


class SmokeModel(BoringModel):
    """Lightning's one-layer demo model (32 -> 2 features, random data) with metric logging.

    Args:
        lr: SGD learning rate.
    """

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self.loss(self(batch))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), prog_bar=True, sync_dist=True)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("test/loss", self._loss(batch), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
