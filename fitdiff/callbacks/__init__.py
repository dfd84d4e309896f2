"""Lightning callbacks of the training stack (``experiments/callbacks/``).

- :class:`LastCheckpoint` — ``checkpoints/last.ckpt`` written at intervals, at the end of every run and
  on Ctrl-C / SIGTERM, atomically.
- :class:`StepProgressBar` — a rich progress bar that counts steps out of ``trainer.max_steps`` when a
  run is bounded by steps rather than epochs.
- :class:`SampleGrid` — grids of diffusion samples (conditional beside ground truth, unconditional) as
  maps and renders, every N validations.
"""

from fitdiff.callbacks.checkpoint import LastCheckpoint
from fitdiff.callbacks.progress import StepProgressBar
from fitdiff.callbacks.sample_grid import SampleGrid

__all__ = ["LastCheckpoint", "SampleGrid", "StepProgressBar"]
