"""Lightning callbacks of the training stack (``experiments/callbacks/``).

- :class:`LastCheckpoint` — ``checkpoints/last.ckpt`` written at intervals, at the end of every run and
  on Ctrl-C / SIGTERM, atomically.
- :class:`StepProgressBar` — a rich progress bar that counts steps out of ``trainer.max_steps`` when a
  run is bounded by steps rather than epochs.
"""

from fitdiff.callbacks.checkpoint import LastCheckpoint
from fitdiff.callbacks.progress import StepProgressBar

__all__ = ["LastCheckpoint", "StepProgressBar"]
