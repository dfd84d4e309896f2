"""A rich progress bar that counts training steps when a run is bounded by ``max_steps``.

Lightning's bar counts the batches of the current epoch and titles it ``Epoch N/max_epochs - 1``; a run
bounded by steps (``max_steps`` set, ``max_epochs`` unset, as with resampled WebDataset shards) then shows
``Epoch 10/-2`` and a bar that restarts every epoch. :class:`StepProgressBar` shows one bar over the whole
run instead: ``global_step`` out of ``max_steps``. Runs bounded by epochs keep Lightning's display.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

__all__ = ["StepProgressBar"]


class StepProgressBar(RichProgressBar):
    """:class:`~lightning.pytorch.callbacks.RichProgressBar` over optimiser steps for step-bounded runs.

    Step-bounded: ``trainer.max_steps > 0`` and ``trainer.max_epochs`` unset (``None`` / ``-1``). The
    bar's total is then ``max_steps`` and its position ``trainer.global_step`` (a resumed run starts
    where the checkpoint left off); it is not reset between epochs. Arguments as for RichProgressBar.
    """

    def by_steps(self, trainer: L.Trainer | None = None) -> bool:
        """Whether ``trainer`` (default: the attached one) is bounded by steps rather than epochs."""
        trainer = trainer if trainer is not None else self.trainer
        return trainer.max_steps > 0 and trainer.max_epochs in (None, -1)

    @property
    def total_train_batches(self) -> int | float:
        if self.by_steps():
            return self.trainer.max_steps
        return super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if not self.by_steps():
            return super()._get_train_description(current_epoch)
        return f"{'Step':{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.by_steps(trainer) or self.train_progress_bar_id is None:
            super().on_train_epoch_start(trainer, pl_module)
        if self.by_steps(trainer) and self.train_progress_bar_id is not None:
            self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.by_steps(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
