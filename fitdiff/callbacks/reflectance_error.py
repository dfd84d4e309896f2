"""Reflectance-map errors of benchmark fits during diffusion training.

Every ``every_n_validations`` validations the fixed validation photos are reconstructed with each method
(default: ``unguided`` and ``guided``, short presets; see :mod:`fitdiff.callbacks.validation_fits` for
the cadence, the shared fits and DDP) and the fitted UV maps are compared with the ground truth by
:func:`fitdiff.metrics.reflectance.reflectance_errors`, logged as ``bench/<method>/<metric>`` (means over
photos), for ``<metric>`` in :func:`~fitdiff.metrics.reflectance.map_metric_names`:
``diffuse_{psnr,ssim,lpips,mae}``, ``specular_{psnr,ssim,lpips,mae}``, ``normals_angle_deg`` and
``normals_{psnr,ssim,lpips,mae}`` (PSNR in dB, SSIM in [-1, 1], MAE in [0, 1] units, the angle in
degrees; ``*_lpips`` only with ``lpips: true``), and ``bench/reflectance_error_seconds`` (the callback's
wall-clock cost, s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fitdiff.callbacks.validation_fits import ValidationFits

__all__ = ["ReflectanceErrorCallback"]


class ReflectanceErrorCallback(ValidationFits):
    """Log ``bench/<method>/<map>_<metric>`` per-map errors of the fits (module docstring).

    Args:
        lpips: add the ``*_lpips`` metrics (VGG LPIPS; a random backbone, with a warning, without the
            ``lpips_vgg16`` asset: not comparable with published values).
        The others: :class:`~fitdiff.callbacks.validation_fits.ValidationFits`.
    """

    name = "reflectance_error"

    def __init__(self, data_dir: str, split: str = "val", n_photos: int = 4, every_n_validations: int = 1,
                 methods: Mapping[str, str] | None = None, preset_overrides: Sequence[str] | None = None,
                 seed: int = 0, recognizer_weights: str | None = None, ema: bool = True, lpips: bool = True) -> None:
        super().__init__(data_dir, split, n_photos, every_n_validations, methods, preset_overrides, seed,
                         recognizer_weights, ema)
        self.lpips = bool(lpips)
        self._perceptual: Any = None

    def score(self, photos: Any, scene: Any, fit: Any) -> dict[str, torch.Tensor]:
        from fitdiff.metrics.reflectance import reflectance_errors

        device = fit.latent.device
        if self.lpips and self._perceptual is None:
            from fitdiff.metrics.lpips import PerceptualLoss

            self._perceptual = PerceptualLoss()
        perceptual = self._perceptual.to(device) if self.lpips else None
        return reflectance_errors(fit.face.maps, photos.maps, lpips=perceptual)

    def metric_name(self, method: str, metric: str) -> str:
        return f"bench/{method}/{metric}"
