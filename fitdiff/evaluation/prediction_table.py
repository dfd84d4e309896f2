"""Tables that score the faces each method predicts for the held-out photos against their ground truth.

:class:`PredictionTable` is the common part of the reflectance and shape tables: the photos and the
checkpoint of :class:`~fitdiff.evaluation.reconstruction.ReconstructionTable`, the rows of
:mod:`fitdiff.evaluation.prediction_rows` (mean face, nearest training identity, unconditional, then one
row per fitting preset: conditional unguided, guided, optimisation fitter), and one ``score`` per
subclass turning (N) predictions into per-photo metric values. The fits are those of the
reconstruction table (shared in ``table=all``), so the rows of every table are the same faces.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fitdiff.evaluation.face_metrics import FacePrediction
from fitdiff.evaluation.faces import FaceSet
from fitdiff.evaluation.fit_runs import FitSetup, photo_batches
from fitdiff.evaluation.prediction_rows import BASELINES, method_predictions
from fitdiff.evaluation.reconstruction import ReconstructionResult, ReconstructionTable
from fitdiff.evaluation.table import Column, ResultTable, RowAccumulator

__all__ = ["PredictionTable"]

log = logging.getLogger(__name__)


class PredictionTable(ReconstructionTable):
    """Arguments of :class:`ReconstructionTable` (``mean_face`` is always on: the baselines are rows
    here); default presets ``unguided``, ``guided_eps``, ``optimize``. Subclasses set ``title``,
    ``columns`` and ``score``."""

    title = "Predictions"
    columns: tuple[Column, ...] = ()

    def __init__(self, *args: Any, presets: Sequence[str] = ("unguided", "guided_eps", "optimize"),
                 **kwargs: Any) -> None:
        kwargs.pop("mean_face", None)
        super().__init__(*args, presets=presets, mean_face=False, **kwargs)

    def score(self, setup: FitSetup, prediction: FacePrediction, photos: FaceSet) -> dict[str, torch.Tensor]:
        """Metric name -> (B,) values of B predictions of ``photos``."""
        raise NotImplementedError

    def header_lines(self, setup: FitSetup) -> list[str]:
        """Lines the subclass adds under the shared header (what its columns mean)."""
        return []

    def run(self, out_dir: str | Path, setup: FitSetup | None = None) -> ReconstructionResult:
        """Predict and score every row, write ``<name>.{csv,md}`` into ``out_dir``."""
        out_dir = Path(out_dir)
        setup = setup or self.setup()
        presets = self._rows()
        bar = tqdm(total=len(presets) * len(setup.photos), desc=f"{self.name} table", disable=not self.progress,
                   dynamic_ncols=True)
        predictions = method_predictions(setup, self.data_dir, presets, self.seed, self.batch_size, bar,
                                         self.landmarks)
        bar.close()
        rows = []
        for label, prediction in predictions.items():
            acc = RowAccumulator()
            for batch in photo_batches(len(setup.photos), max(self.batch_size, 16)):
                acc.add(self.score(setup, _subset(prediction, batch), setup.photos.subset(batch)))
            rows.append(acc.row(label))
        table = ResultTable(rows, self.columns, counts=["n_photos"])
        shared = self._header(setup.photos, presets, setup.lpips_state)
        # photos, manifest and checkpoint lines, then this table's own, then one line per fitted row
        header = [*shared[:3], self.landmarks.describe(), f"rows {', '.join(repr(b) for b in BASELINES)}: baselines (no fitting; the "
                  "unconditional row samples the null embedding with the first sampling preset's sampler)",
                  *self.header_lines(setup), *(line for line in shared if line.startswith("row "))]
        csv_path, md_path, markdown = table.write(out_dir, self.name, title=self.title, header=header)
        log.info("wrote %s, %s", csv_path, md_path)
        return ReconstructionResult(table, markdown, [csv_path, md_path], name=self.name, title=self.title,
                                    plot_metrics=self.plot_metrics)


def _subset(prediction: FacePrediction, index: list[int]) -> FacePrediction:
    idx = torch.as_tensor(index, dtype=torch.long)
    return FacePrediction(*(getattr(prediction, n).index_select(0, idx)
                            for n in ("shape", "diffuse", "specular", "normals")))
