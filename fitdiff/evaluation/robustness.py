"""The robustness table: fits of corrupted photos, scored against the clean ones.

``python evaluate.py table=robustness ckpts=[CKPT]`` fits the held-out photos of the reconstruction
table once clean and once under each corruption of :mod:`fitdiff.evaluation.corruptions` (occluder,
strong side light, Gaussian noise, JPEG) with each preset of ``table.presets`` (guided FitDiff and the
optimisation fitter by default). The fit sees the corrupted photo, with the dataset's landmarks or, with
``table.landmarks=detected``, the landmarks the synthetic face detector finds on the corrupted photo
(:mod:`fitdiff.evaluation.landmark_source`: then a corruption reaches the landmark term too); shape error, identity similarity (evaluation recognizer, against the **clean** photo) and
the other :class:`~fitdiff.evaluation.fit_metrics.FitMetrics` columns are measured as in the
reconstruction table. Rows are ``<preset> / <condition>``; a section lists each preset's degradation
(corrupted minus clean, mean over the corruptions) of shape error and identity similarity, and whether
the first preset (guided FitDiff) degrades less than the others on both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fitdiff.config.errors import ConfigError
from fitdiff.evaluation.corruptions import CORRUPTIONS, gaussian_noise, jpeg, occluder, side_light
from fitdiff.evaluation.reconstruction import COLUMNS, ReconstructionResult, ReconstructionTable
from fitdiff.evaluation.table import ResultTable, TableRow

__all__ = ["RobustnessTable"]

log = logging.getLogger(__name__)

_LABELS = {"clean": "clean", "occluder": "occluder 20%", "side_light": "side light", "noise": "noise 0.1",
           "jpeg": "JPEG q20"}


class RobustnessTable(ReconstructionTable):
    """``experiments/table/robustness.yaml``; arguments of :class:`ReconstructionTable` plus
    ``corruptions`` (a subset of :data:`~fitdiff.evaluation.corruptions.CORRUPTIONS`); the image grids show
    the first preset under every condition."""

    title = "Robustness"
    plot_metrics = (("identity_eval", True), ("photo_l1", False), ("shape_rmse_mm", False))

    def __init__(self, *args: Any, corruptions: Sequence[str] = CORRUPTIONS,
                 presets: Sequence[str] = ("guided_eps", "optimize"), name: str = "robustness", **kwargs: Any) -> None:
        kwargs.pop("mean_face", None)  # no baseline row: the degradation check compares the presets
        super().__init__(*args, presets=presets, name=name, mean_face=False, **kwargs)
        unknown = sorted(set(corruptions) - set(CORRUPTIONS))
        if not corruptions:
            raise ConfigError("table.corruptions: name at least one corruption")
        if unknown:
            raise ConfigError(f"table.corruptions: unknown {', '.join(unknown)} (known: {', '.join(CORRUPTIONS)})")
        self.corruptions = list(corruptions)

    def _corrupt(self, name: str, scene: Any) -> Any:
        if name == "clean":
            return None
        if name == "occluder":
            return lambda part, batch: occluder(part.image, part.landmarks, batch, self.seed)
        if name == "noise":
            return lambda part, batch: gaussian_noise(part.image, batch, self.seed)
        if name == "jpeg":
            return lambda part, batch: jpeg(part.image)

        def relight(part: Any, batch: list[int]) -> Any:
            if part.meta is None:
                raise ConfigError("the side-light corruption re-renders the ground truth: it needs meta.json")
            return side_light(scene, part.image.to(self.device), part.meta, part.shape, part.maps).cpu()

        return relight

    def run(self, out_dir: str | Path, setup: Any = None) -> ReconstructionResult:
        out_dir = Path(out_dir)
        setup = setup or self.setup()
        presets = self._rows()
        conditions = ["clean", *self.corruptions]
        bar = tqdm(total=len(presets) * len(conditions) * len(setup.photos), desc="robustness table",
                   disable=not self.progress, dynamic_ncols=True)
        rows: list[TableRow] = []
        for label, cfg in presets:
            for condition in conditions:
                rows.append(self.fit_row(setup, cfg, f"{label} / {_LABELS[condition]}", bar,
                                         self._corrupt(condition, setup.scene), condition))
        bar.close()
        table = ResultTable(rows, [c for c in COLUMNS if c.key in setup.metrics.names], counts=self.counts)
        header = self._header(setup.photos, presets, setup.lpips_state)
        source = "the dataset's landmarks" if self.landmarks.detector is None else "landmarks detected on it"
        header.insert(1, "conditions: clean, " + ", ".join(_LABELS[c] for c in self.corruptions) + " (fit on the "
                      f"corrupted photo with {source}; scored against the clean photo)")
        section = self._degradation(table, [label for label, _ in presets], conditions)
        csv_path, md_path, markdown = table.write(out_dir, self.name, title=self.title, header=header,
                                                  sections=[section])
        log.info("wrote %s, %s", csv_path, md_path)
        conditions_and_corruptions = [(c, self._corrupt(c, setup.scene)) for c in conditions]
        return self.result(table, markdown, [csv_path, md_path], out_dir, setup, presets[:1],
                           conditions_and_corruptions)

    @staticmethod
    def _degradation(table: ResultTable, labels: list[str], conditions: list[str]) -> str:
        records = {r["method"]: r for r in table.records()}
        lines = ["### Degradation (corrupted minus clean, mean over the corruptions)", "",
                 "| method | shape (mm) | identity (eval) |", "|---|:---:|:---:|"]
        deltas = {}
        for label in labels:
            clean = records[f"{label} / clean"]
            shape = [float(records[f"{label} / {_LABELS[c]}"]["shape_rmse_mm_mean"]) - float(clean["shape_rmse_mm_mean"])
                     for c in conditions[1:]]
            ident = [float(records[f"{label} / {_LABELS[c]}"]["identity_eval_mean"]) - float(clean["identity_eval_mean"])
                     for c in conditions[1:]]
            deltas[label] = (sum(shape) / len(shape), sum(ident) / len(ident))
            lines.append(f"| {label} | {deltas[label][0]:+.2f} | {deltas[label][1]:+.3f} |")
        first, others = labels[0], labels[1:]
        if others:
            less = all(deltas[first][0] < deltas[o][0] and deltas[first][1] > deltas[o][1] for o in others)
            lines += ["", f"- {first} degrades less than {', '.join(others)} on both shape and identity: "
                      f"{'yes' if less else 'no'}"]
        return "\n".join(lines) + "\n"

