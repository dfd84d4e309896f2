"""The result tables behind ``python evaluate.py table=NAME``.

- :mod:`~fitdiff.evaluation.table` — :class:`ResultTable`: rows of per-item metric values -> the one CSV
  layout every table shares (``method``, ``<metric>_mean``, ``<metric>_std``, counts) and Markdown.
- :mod:`~fitdiff.evaluation.conditioning` — :class:`ConditioningTable` (``table=conditioning``): baselines,
  unconditional and conditional samples against held-out photos, and the diversity report.
- :mod:`~fitdiff.evaluation.face_metrics` — per-photo shape, reflectance and identity errors.
- :mod:`~fitdiff.evaluation.baselines` — mean face, nearest training identity, linear probe.
- :mod:`~fitdiff.evaluation.diversity` — pairwise and nearest-training distances.

Names are imported on first use (the table writer does not load the diffusion stage).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Column": "table",
    "ResultTable": "table",
    "TableRow": "table",
    "summarize": "table",
    "ConditioningTable": "conditioning",
    "ConditioningResult": "conditioning",
    "FaceMetrics": "face_metrics",
    "FacePrediction": "face_metrics",
    "FaceSet": "faces",
    "load_faces": "faces",
    "LinearProbe": "baselines",
    "mean_face": "baselines",
    "nearest_identity": "baselines",
    "diversity_row": "diversity",
    "acceptance_checks": "checks",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"fitdiff.evaluation.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'fitdiff.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
