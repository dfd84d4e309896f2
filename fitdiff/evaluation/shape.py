"""The shape table: per-vertex error of every method's predicted mesh, raw, after similarity Procrustes,
and per facial region.

``python evaluate.py table=shape ckpts=[CKPT]`` (``experiments/table/shape.yaml``) scores the shape
coefficients of the rows of :mod:`fitdiff.evaluation.prediction_table` on the held-out photos:

=====================  ==========================================================================
``shape_mm``           RMS per-vertex distance to the ground-truth mesh in the model frame, mm
``procrustes_mm``      the same after the similarity transform (scale, rotation, translation) that
                       best aligns the prediction to the ground truth (closed form)
``<region>_mm``        RMS over the vertices of one region (nose, eyes, mouth, cheeks:
                       :func:`fitdiff.face.regions.face_regions`), after that alignment
=====================  ==========================================================================

Writes ``shape.{csv,md}``.
"""

from __future__ import annotations

from typing import Any

import torch

from fitdiff.evaluation.face_metrics import FacePrediction
from fitdiff.evaluation.faces import FaceSet
from fitdiff.evaluation.fit_runs import FitSetup
from fitdiff.evaluation.prediction_table import PredictionTable
from fitdiff.evaluation.table import Column
from fitdiff.face.regions import REGIONS, face_regions
from fitdiff.metrics.shape import procrustes_align, vertex_rmse

__all__ = ["ShapeTable", "COLUMNS"]

COLUMNS: tuple[Column, ...] = (
    Column("shape_mm", "shape (mm)", "{:.2f}"),
    Column("procrustes_mm", "after Procrustes (mm)", "{:.2f}"),
    *(Column(f"{r}_mm", f"{r} (mm)", "{:.2f}") for r in REGIONS),
)


class ShapeTable(PredictionTable):
    """``experiments/table/shape.yaml``: the arguments of
    :class:`~fitdiff.evaluation.prediction_table.PredictionTable`."""

    title = "Shape"
    plot_metrics = (("shape_mm", False), ("procrustes_mm", False), ("nose_mm", False), ("eyes_mm", False), ("mouth_mm", False), ("cheeks_mm", False))
    columns = COLUMNS

    def __init__(self, *args: Any, name: str = "shape", **kwargs: Any) -> None:
        super().__init__(*args, name=name, **kwargs)

    def _regions(self, setup: FitSetup) -> dict[str, torch.Tensor]:
        if "regions" not in setup.cache:
            setup.cache["regions"] = face_regions(setup.scene.model)
        return setup.cache["regions"]

    @torch.no_grad()
    def score(self, setup: FitSetup, prediction: FacePrediction, photos: FaceSet) -> dict[str, torch.Tensor]:
        model = setup.scene.model
        device = model.mean.device
        pred = model(prediction.shape.to(device).float()).double()
        truth = model(photos.shape.to(device).float()).double()
        aligned = procrustes_align(pred, truth)
        out = {"shape_mm": vertex_rmse(pred, truth), "procrustes_mm": vertex_rmse(aligned, truth)}
        for region, mask in self._regions(setup).items():
            out[f"{region}_mm"] = vertex_rmse(aligned[:, mask], truth[:, mask])
        return {k: v.cpu() for k, v in out.items()}

    def header_lines(self, setup: FitSetup) -> list[str]:
        counts = ", ".join(f"{r} {int(m.sum())}" for r, m in self._regions(setup).items())
        return [f"shape model {setup.scene.model.model_id!r} ({setup.scene.model.n_vertices} vertices); regions grown "
                f"around its 68 landmark vertices (vertices: {counts}); region errors after the similarity "
                "Procrustes alignment of the whole mesh"]
