"""Evaluation metrics and the perceptual distance, below the model packages (imports no face/, ldm/,
fitting/ or autoencoder/ code).

- :mod:`~fitdiff.metrics.lpips`: ``build_lpips`` (LPIPS VGG with the ``lpips_vgg16`` asset backbone) and
  ``PerceptualLoss`` (per-sample LPIPS of [-1, 1] maps, 1 or 3 channels).
- :mod:`~fitdiff.metrics.angular`: ``angular_error`` (per texel, radians or degrees),
  ``mean_angular_error`` (over valid texels) and the ``MeanAngularError`` metric.
- :mod:`~fitdiff.metrics.identity`: ``cosine_similarity`` of identity embeddings, in [-1, 1].
- :mod:`~fitdiff.metrics.auroc`: ``roc_auc`` (exact ROC-AUC through torchmetrics, ties count one half).
- :mod:`~fitdiff.metrics.shape`: ``vertex_rmse`` (mm), ``similarity_procrustes`` / ``procrustes_align``
  (Umeyama, closed form), ``shape_error`` and the ``ShapeError`` metric.
- :mod:`~fitdiff.metrics.reflectance`: ``reflectance_errors`` (per-map PSNR, SSIM, LPIPS, MAE and the
  normals angular error, one value per face).

Names are imported from their modules on first use, so ``fitdiff.metrics.identity`` stays light (no
torchmetrics import) for the face toolkit.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "build_lpips": "lpips",
    "PerceptualLoss": "lpips",
    "angular_error": "angular",
    "mean_angular_error": "angular",
    "MeanAngularError": "angular",
    "cosine_similarity": "identity",
    "roc_auc": "auroc",
    "vertex_rmse": "shape",
    "similarity_procrustes": "shape",
    "procrustes_align": "shape",
    "shape_error": "shape",
    "ShapeError": "shape",
    "reflectance_errors": "reflectance",
    "map_metric_names": "reflectance",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"fitdiff.metrics.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'fitdiff.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
