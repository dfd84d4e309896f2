"""A callback the DDP tests load in their training subprocesses (``tests/`` is put on PYTHONPATH)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class SaveRankState(L.Callback):
    """At the end of training, every rank saves its module's state dict to ``out_dir/rank<r>.pt``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, self.out_dir / f"rank{trainer.global_rank}.pt")
