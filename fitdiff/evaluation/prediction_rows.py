"""The faces every method predicts for the held-out photos: the baseline rows of the reflectance and
shape tables, each a :class:`~fitdiff.evaluation.face_metrics.FacePrediction` over the N photos.

=============================  ==========================================================================
``mean face``                  zero shape coefficients, per-texel mean training maps
``nearest training identity``  ground truth of the training sample whose embedding is closest to the
                               photo's stored ``id.npy`` (cosine)
``unconditional``              one sample per photo with the null embedding (the unguided preset's
                               sampler; photo ``i`` starts from the same noise as its fits)
``<preset label>``             the fitted faces of each fitting preset (:mod:`fitdiff.evaluation.fit_runs`)
=============================  ==========================================================================

The training faces and the unconditional samples are cached on the :class:`FitSetup`, so the tables of
one ``table=all`` run load and sample them once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fitdiff.evaluation.baselines import mean_face, nearest_identity
from fitdiff.evaluation.face_metrics import FacePrediction
from fitdiff.evaluation.faces import FaceSet, load_faces
from fitdiff.evaluation.fit_runs import FIT_STREAM, FitSetup, fit_photos, photo_batches
from fitdiff.evaluation.sampling import sample_faces, sample_generators

__all__ = ["BASELINES", "training_faces", "baseline_predictions", "unconditional_prediction", "method_predictions"]

#: the rows that need no fitting, in table order
BASELINES: tuple[str, ...] = ("mean face", "nearest training identity", "unconditional")


def training_faces(setup: FitSetup, data_dir: str | Path) -> FaceSet:
    """The train split's ground truth (no photos), loaded once per setup."""
    key = ("train faces", str(data_dir))
    if key not in setup.cache:
        setup.cache[key] = load_faces(data_dir, ["train"], with_photos=False)
    return setup.cache[key]


def baseline_predictions(setup: FitSetup, data_dir: str | Path) -> dict[str, FacePrediction]:
    """``mean face`` and ``nearest training identity`` for every photo of ``setup``."""
    train = training_faces(setup, data_dir)
    n = len(setup.photos)
    nearest, _ = nearest_identity(train, setup.photos.identity)
    return {"mean face": mean_face(train, n), "nearest training identity": nearest}


@torch.no_grad()
def unconditional_prediction(setup: FitSetup, sampler: Any, seed: int, batch_size: int) -> FacePrediction:
    """One unconditional sample per photo (null embedding, CFG off), photo ``i`` from generator
    ``(seed, i)`` of the fits' stream; cached per sampler, seed and batch size."""
    key = ("unconditional", repr(sampler.describe()), seed, batch_size, tuple(setup.photos.keys))
    if key not in setup.cache:
        parts = [sample_faces(setup.pipeline, sampler, sample_generators(seed, batch, 1, stream=FIT_STREAM), None, 1.0)
                 for batch in photo_batches(len(setup.photos), batch_size)]
        setup.cache[key] = FacePrediction(*(torch.cat([getattr(p, name) for p in parts])
                                            for name in ("shape", "diffuse", "specular", "normals")))
    return setup.cache[key]


def method_predictions(setup: FitSetup, data_dir: str | Path, presets: Sequence[tuple[str, Any]], seed: int,
                       batch_size: int, bar: Any = None, landmarks: Any = None) -> dict[str, FacePrediction]:
    """Row label -> the N predicted faces: the :data:`BASELINES`, then every ``(label, preset)`` (fitted
    with the landmarks of ``landmarks``, a :class:`~fitdiff.evaluation.landmark_source.LandmarkSource`;
    default the dataset's).

    The unconditional row samples with the first sampling preset's sampler (the checkpoint's DDIM
    schedule when every preset is the optimisation fitter).
    """
    out = baseline_predictions(setup, data_dir)
    samplers = [cfg.sampler for _, cfg in presets if cfg.sampler is not None]
    if samplers:
        out["unconditional"] = unconditional_prediction(setup, samplers[0], seed, batch_size)
    for label, cfg in presets:
        out[label] = fit_photos(setup, cfg, seed, batch_size, bar, landmarks=landmarks).prediction
    return out
