"""The shape model a synthetic dataset was built with, from the dataset folder alone.

Later stages (auxiliary losses, evaluation, sampling) need the very PCA model whose coefficients the
shards hold. A synthetic build records its configuration in ``synthetic.json``; this rebuilds the model
from it and checks the model id against the manifest's, so a changed generator is caught, not silently
used::

    shape_model: {_target_: fitdiff.synthetic.dataset_shape_model, data_dir: data/synthetic}
"""

from __future__ import annotations

import json
from pathlib import Path

from fitdiff.data.manifest import MANIFEST_NAME
from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.synthetic.config import REPORT_FILE, shape_model_from_config

__all__ = ["dataset_shape_model"]


def dataset_shape_model(data_dir: str | Path) -> PCAShapeModel:
    """The PCA shape model of the synthetic dataset in ``data_dir`` (its ``synthetic.json`` and manifest)."""
    data_dir = Path(data_dir)
    report = data_dir / REPORT_FILE
    if not report.is_file():
        raise FileNotFoundError(f"{report}: not a synthetic dataset folder (python data_prep/make_synthetic.py "
                                f"--out {data_dir})")
    cfg = json.loads(report.read_text())["config"]
    model = shape_model_from_config(cfg)
    manifest = data_dir / MANIFEST_NAME
    if manifest.is_file():
        recorded = json.loads(manifest.read_text()).get("shape_model")
        if recorded and recorded != model.model_id:
            raise ValueError(f"{data_dir}: the manifest's shape model {recorded!r} is not the one its "
                             f"synthetic.json rebuilds ({model.model_id!r})")
    return model
