"""The reflectance table: per-map errors of every method's predicted UV maps against the ground truth.

``python evaluate.py table=reflectance ckpts=[CKPT]`` (``experiments/table/reflectance.yaml``) scores the
diffuse, specular and normal maps of the rows of :mod:`fitdiff.evaluation.prediction_table` (mean face,
nearest training identity, unconditional, conditional unguided, guided, optimisation fitter) on the
held-out photos with :func:`fitdiff.metrics.reflectance.reflectance_errors`: PSNR (dB), SSIM, LPIPS and
MAE per map, and the mean angular error of the normals (degrees). Writes ``reflectance.{csv,md}``.
"""

from __future__ import annotations

from typing import Any

import torch

from fitdiff.evaluation.face_metrics import FacePrediction
from fitdiff.evaluation.faces import MAP_NAMES, FaceSet
from fitdiff.evaluation.fit_runs import FitSetup
from fitdiff.evaluation.prediction_table import PredictionTable
from fitdiff.evaluation.table import Column
from fitdiff.metrics.reflectance import reflectance_errors

__all__ = ["ReflectanceTable", "COLUMNS"]


def _columns() -> tuple[Column, ...]:
    out = []
    for m in MAP_NAMES:
        if m == "normals":
            out.append(Column("normals_angle_deg", "normals angle (deg)", "{:.2f}"))
        out += [Column(f"{m}_psnr", f"{m} PSNR (dB)", "{:.2f}"), Column(f"{m}_ssim", f"{m} SSIM", "{:.3f}"),
                Column(f"{m}_lpips", f"{m} LPIPS", "{:.3f}"), Column(f"{m}_mae", f"{m} MAE", "{:.4f}")]
    return tuple(out)


COLUMNS: tuple[Column, ...] = _columns()


class ReflectanceTable(PredictionTable):
    """``experiments/table/reflectance.yaml``: the arguments of
    :class:`~fitdiff.evaluation.prediction_table.PredictionTable` (``lpips: false`` drops the LPIPS
    columns)."""

    title = "Reflectance"
    plot_metrics = (("diffuse_psnr", True), ("specular_psnr", True), ("normals_angle_deg", False), ("diffuse_ssim", True))
    columns = COLUMNS

    def __init__(self, *args: Any, name: str = "reflectance", **kwargs: Any) -> None:
        super().__init__(*args, name=name, **kwargs)

    def score(self, setup: FitSetup, prediction: FacePrediction, photos: FaceSet) -> dict[str, torch.Tensor]:
        device = setup.scene.model.mean.device
        pred = {m: getattr(prediction, m).to(device) for m in MAP_NAMES}
        truth = {m: getattr(photos, m).to(device) for m in MAP_NAMES}
        return reflectance_errors(pred, truth, setup.metrics.lpips if self.lpips else None)

    def header_lines(self, setup: FitSetup) -> list[str]:
        return ["per map: PSNR (dB, data range 1) and SSIM (window 11, sigma 1.5) by torchmetrics, LPIPS of the "
                "maps in [-1, 1], MAE in [0, 1] units; normals scored as colours (n + 1) / 2 and by the mean angle "
                "over valid texels (degrees); predicted albedos clamped to [0, 1], normals renormalised",
                f"map LPIPS: {setup.lpips_state}"]
