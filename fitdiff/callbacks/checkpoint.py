"""``checkpoints/last.ckpt``: the latest training state, whatever ends the run.

:class:`LastCheckpoint` writes one file, replaced in place, so that
``ckpt_path=<run>/checkpoints/last.ckpt`` always resumes from where a run stopped:

- every ``every_n_train_steps`` optimiser steps (``None``: at the end of every training epoch);
- at the end of ``fit``, whatever ended it (``max_steps``, ``max_epochs``, ``max_time``, early stopping);
- when ``fit`` is interrupted by Ctrl-C (``KeyboardInterrupt``) or SIGTERM (Lightning's ``on_exception``).

Each write goes to a temporary file in the same folder, renamed over the old checkpoint when complete:
an interruption during a write leaves the previous checkpoint intact. The checkpoint it replaces is kept
as ``<filename>-prev.ckpt`` (renamed, no copy): when ``last.ckpt`` cannot be read (a disk that filled up,
a copy cut short), ``ckpt_path=last`` falls back to it (:mod:`fitdiff.callbacks.resume`).

:class:`AtomicCheckpointIO` makes every other checkpoint write (Lightning's ``ModelCheckpoint``,
``trainer.save_checkpoint``) atomic on local disks in the same way; ``fitdiff.tasks`` installs it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fitdiff.io import atomic_write

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "PREVIOUS_SUFFIX", "previous_checkpoint"]

log = logging.getLogger(__name__)

#: the file name suffix (before ``.ckpt``) of the checkpoint that the latest one replaced
PREVIOUS_SUFFIX = "-prev"


def previous_checkpoint(path: str | Path) -> Path:
    """``<dir>/<name>-prev.ckpt``: where :class:`LastCheckpoint` keeps the checkpoint ``path`` replaced."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PREVIOUS_SUFFIX}{path.suffix}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint I/O, writing local files atomically (temporary file, fsync, rename).

    Lightning's own writer fills the destination in place on local disks (or moves a temporary file from
    another file system, a copy), so an interrupted write leaves a truncated checkpoint. Paths with a URL
    scheme (``s3://`` ...) are written by Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local files")
        with atomic_write(path, "wb") as handle:
            torch.save(checkpoint, handle)


class LastCheckpoint(L.Callback):
    """Keep ``dirpath/<filename>.ckpt`` the latest training state (see the module docstring).

    Args:
        dirpath: folder of the checkpoint (created when needed).
        filename: file name without the ``.ckpt`` extension.
        every_n_train_steps: also save every this many optimiser steps (``trainer.global_step``, >= 1);
            ``None`` saves at the end of every training epoch instead.
        keep_previous: keep the replaced checkpoint as ``<filename>-prev.ckpt`` (twice the disk space).
    """

    def __init__(self, dirpath: str, filename: str = "last", every_n_train_steps: int | None = None,
                 keep_previous: bool = True) -> None:
        super().__init__()
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1 or None, got {every_n_train_steps}")
        if not filename or Path(filename).name != filename:
            raise ValueError(f"filename must be a plain file name, got {filename!r}")
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.every_n_train_steps = every_n_train_steps
        self.keep_previous = bool(keep_previous)
        self.last_saved_step: int | None = None  #: global step of the latest write (None: none yet)

    # ------------------------------------------------------------------------------------------ triggers

    def _skip(self, trainer: L.Trainer) -> bool:
        return bool(trainer.fast_dev_run) or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = self.every_n_train_steps
        step = trainer.global_step
        if n and step > 0 and step % n == 0 and step != self.last_saved_step and not self._skip(trainer):
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_train_steps is None and not self._skip(trainer):
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # always: validation or callbacks may have changed the state since an in-loop write at this step
        if not self._skip(trainer):
            self.save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or self._skip(trainer):
            return
        try:
            # no barrier: the other ranks may be stopped anywhere; rank 0 writes what it has
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            self._write(trainer, lambda tmp: trainer.strategy.save_checkpoint(checkpoint, tmp))
        except Exception:  # never hide the interruption behind a failed save
            log.exception("could not write %s after %s", self.path, type(exception).__name__)
            return
        if trainer.is_global_zero:
            log.warning("%s at step %d: saved %s", type(exception).__name__, trainer.global_step, self.path)

    # ------------------------------------------------------------------------------------------ writing

    def save(self, trainer: L.Trainer) -> Path:
        """Write the trainer's state to :attr:`path` (call on every rank: it ends with a barrier)."""
        self._write(trainer, lambda tmp: trainer.save_checkpoint(tmp, weights_only=False))
        return self.path

    def _write(self, trainer: L.Trainer, save: Any) -> None:
        """``save(tmp)`` then, on rank 0, rename :attr:`path` to its ``-prev`` name and ``tmp`` onto it."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        save(str(tmp))
        if trainer.is_global_zero:
            if self.keep_previous and self.path.is_file():
                os.replace(self.path, previous_checkpoint(self.path))
            os.replace(tmp, self.path)
        self.last_saved_step = trainer.global_step
