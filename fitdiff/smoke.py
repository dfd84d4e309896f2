"""A tiny model for smoke-testing the training stack (trainer, loggers, checkpoints, DDP, sweeps).

It logs the same metric names as the real stages (``train/loss``, ``val/loss``, ``test/loss``) so that
checkpoint monitoring, ``optimized_metric`` and logger output can be exercised in seconds on a CPU. Its
optimiser and learning-rate schedule are ``_partial_`` config nodes built in ``configure_optimizers``,
the pattern every stage follows (``experiments/model/smoke.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from fitdiff.optim import build_optimizer, build_scheduler, config_node

#: default optimiser node: plain SGD
DEFAULT_OPTIMIZER: dict[str, Any] = {"_target_": "torch.optim.SGD", "lr": 0.1}


class SmokeModel(BoringModel):
    """Lightning's one-layer demo model (32 -> 2 features, random data) with metric logging.

    Args:
        optimizer: ``_partial_`` node of the optimiser (default SGD, lr 0.1).
        scheduler: ``_partial_`` node of the learning-rate schedule, stepped once per optimiser step
            (``fitdiff.optim``); ``None`` keeps the rate constant.
    """

    def __init__(self, optimizer: Mapping[str, Any] | None = None, scheduler: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        optimizer = config_node(optimizer if optimizer is not None else DEFAULT_OPTIMIZER, "torch.optim.SGD",
                                partial=True)
        scheduler = None if scheduler is None else config_node(scheduler, "fitdiff.optim.constant", partial=True)
        self.save_hyperparameters()
        probe = [torch.nn.Parameter(torch.zeros(1))]  # a bad node fails here, before any data is read
        build_scheduler(scheduler, build_optimizer(optimizer, probe))

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

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.hparams.optimizer, self.parameters())
        scheduler = build_scheduler(self.hparams.scheduler, optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
