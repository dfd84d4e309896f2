"""Lightning callbacks of the training stack (``experiments/callbacks/``).

- :class:`LastCheckpoint` — ``checkpoints/last.ckpt`` written at intervals, at the end of every run and
  on Ctrl-C / SIGTERM, atomically, the replaced one kept as ``last-prev.ckpt``.
- :class:`ResumeState` — the random generators' states and the W&B run id in every checkpoint, for an
  exact resume (added to every training run by ``fitdiff.tasks``; :mod:`fitdiff.callbacks.resume`).
- :class:`StepProgressBar` — a rich progress bar that counts steps out of ``trainer.max_steps`` when a
  run is bounded by steps rather than epochs.
- :class:`SampleGrid` — grids of diffusion samples (conditional beside ground truth, unconditional) as
  maps and renders, every N validations.
- :class:`IdentitySimilarityCallback` — identity (evaluation recognizer) and shape error of unguided and
  guided fits of fixed validation photos, every N validations (``bench/identity_eval/<method>``).
- :class:`ReflectanceErrorCallback` — per-map PSNR / SSIM / LPIPS / MAE and normal angle of the same fits
  against the ground-truth UV maps (``bench/<method>/<metric>``); the two share their fits
  (:mod:`fitdiff.callbacks.validation_fits`).
"""

from fitdiff.callbacks.checkpoint import LastCheckpoint
from fitdiff.callbacks.identity_similarity import IdentitySimilarityCallback
from fitdiff.callbacks.progress import StepProgressBar
from fitdiff.callbacks.reflectance_error import ReflectanceErrorCallback
from fitdiff.callbacks.resume import ResumeState
from fitdiff.callbacks.sample_grid import SampleGrid

__all__ = ["IdentitySimilarityCallback", "LastCheckpoint", "ReflectanceErrorCallback", "ResumeState", "SampleGrid",
           "StepProgressBar"]
