"""Identity of benchmark fits during diffusion training, judged by the evaluation recognizer.

Every ``every_n_validations`` validations the fixed validation photos are reconstructed with each method
(default: ``unguided`` conditional sampling and ``guided`` eps-rule guidance, short presets; see
:mod:`fitdiff.callbacks.validation_fits` for the cadence, the shared fits and DDP) and logged as

- ``bench/identity_eval/<m>``: mean cosine similarity, in [-1, 1], of the evaluation recognizer's
  embeddings of the fit's render (fitted camera and lights, over the photo) and of the photo; that
  recognizer never conditions or guides;
- ``bench/shape_mm/<m>``: mean RMS per-vertex distance to the ground-truth mesh, mm (no alignment);
- ``bench/identity_similarity_seconds``: the callback's wall-clock cost, s.

The scores are those of :class:`~fitdiff.evaluation.fit_metrics.FitMetrics` (the reconstruction table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fitdiff.callbacks.validation_fits import ValidationFits, load_recognizer

__all__ = ["IdentitySimilarityCallback"]

#: FitMetrics key -> logged metric
_METRICS = {"identity_eval": "identity_eval", "shape_rmse_mm": "shape_mm"}


class IdentitySimilarityCallback(ValidationFits):
    """Log ``bench/identity_eval/<method>`` and ``bench/shape_mm/<method>`` (module docstring).

    Args:
        eval_recognizer_weights: the evaluation recognizer (default ``<data_dir>/eval_recognizer.safetensors``).
        The others: :class:`~fitdiff.callbacks.validation_fits.ValidationFits`.
    """

    name = "identity_similarity"

    def __init__(self, data_dir: str, split: str = "val", n_photos: int = 4, every_n_validations: int = 1,
                 methods: Mapping[str, str] | None = None, preset_overrides: Sequence[str] | None = None,
                 seed: int = 0, recognizer_weights: str | None = None, eval_recognizer_weights: str | None = None,
                 ema: bool = True) -> None:
        super().__init__(data_dir, split, n_photos, every_n_validations, methods, preset_overrides, seed,
                         recognizer_weights, ema)
        self.eval_recognizer_weights = Path(eval_recognizer_weights or self.data_dir / "eval_recognizer.safetensors")
        self._judge: Any = None

    def required_files(self) -> dict[Path, tuple[str, str]]:
        return {**super().required_files(),
                self.eval_recognizer_weights: ("evaluation recognizer",
                                               f"callbacks.{self.name}.eval_recognizer_weights")}

    def score(self, photos: Any, scene: Any, fit: Any) -> dict[str, torch.Tensor]:
        from fitdiff.evaluation.fit_metrics import FitMetrics

        if self._judge is None:
            self._judge = load_recognizer(self.eval_recognizer_weights)
        metrics = FitMetrics(scene, self._judge.to(fit.latent.device))
        scores = metrics(fit, photos.image, photos.landmarks, photos.shape, photos.diffuse)
        return {name: scores[key] for key, name in _METRICS.items()}

    def metric_name(self, method: str, metric: str) -> str:
        return f"bench/{metric}/{method}"
