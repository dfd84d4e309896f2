"""Fits of the held-out photos shared by the fitting tables: run once per preset and condition, reused.

The reconstruction, robustness, reflectance, shape and ablation tables all fit the same held-out photos
with fitting presets (``experiments/fitting/``). :func:`fit_photos` fits every photo of a
:class:`FitSetup` with one preset (photo ``i`` always draws its noise from the generator seeded from
``(seed, i)``, batch by batch) and keeps the outcome in the setup's cache, batch by batch, keyed by
everything that decides a batch's fits: the preset's full description, the photo condition (clean or a
corruption), where the landmarks come from (:mod:`fitdiff.evaluation.landmark_source`), the seed and the
batch's photos. Setups of one checkpoint may share one cache (their photo sets differ only in length),
so the first batch of a shorter photo list is the longer list's. ``evaluate.py table=all`` gives all its
tables one setup, so the guided fits of the reconstruction table are the predictions of the reflectance
and shape tables and, when both take the same landmarks, the clean rows of the robustness table, instead
of being sampled again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fitdiff.evaluation.face_metrics import FacePrediction
from fitdiff.evaluation.faces import FaceSet
from fitdiff.evaluation.fit_metrics import FitMetrics
from fitdiff.evaluation.landmark_source import LandmarkSource
from fitdiff.evaluation.sampling import sample_generators
from fitdiff.evaluation.table import RowAccumulator

__all__ = ["FitSetup", "FitOutcome", "fit_photos", "photo_batches", "FIT_STREAM"]

#: generator stream of the fits (:func:`~fitdiff.evaluation.sampling.derive_seed`)
FIT_STREAM = 2

Corruption = Callable[[FaceSet, list[int]], torch.Tensor]


@dataclass
class FitSetup:
    """What every row of a fitting table shares: photos, pipeline, scene, guiding recognizer, scoring.

    Attributes:
        photos: the held-out photos (with landmarks, meta and ground truth).
        pipeline: the checkpoint's :class:`~fitdiff.ldm.pipeline.FitDiffPipeline`.
        scene: the face scene of its shape model; guide: the guiding (and conditioning) recognizer.
        metrics: the scorer of the fits; lpips_state: what the LPIPS column used, for the headers.
        info: the checkpoint's :class:`~fitdiff.evaluation.checkpoints.CheckpointInfo`.
        cache: the fits made so far (:func:`fit_photos`) and other results keyed by the photos they are
            of (may be shared by setups of one checkpoint).
    """

    photos: FaceSet
    pipeline: Any
    scene: Any
    guide: Any
    metrics: FitMetrics
    lpips_state: str
    info: Any = None
    cache: dict[Any, Any] = field(default_factory=dict)


@dataclass
class FitOutcome:
    """One preset's fits of every photo of a setup.

    Attributes:
        metrics: metric name -> (N,) per-photo values (:class:`FitMetrics`; with detected landmarks also
            ``face_found``, 1 where the detector found the face).
        prediction: the N fitted faces on the CPU (coefficients and maps).
        first: the first batch's :class:`~fitdiff.fitting.Reconstruction` (for the image grids).
        first_photos: the photos that batch saw (corrupted or clean), (b, 3, H, W).
    """

    metrics: dict[str, np.ndarray]
    prediction: FacePrediction
    first: Any
    first_photos: torch.Tensor


def photo_batches(n: int, batch_size: int) -> list[list[int]]:
    """Consecutive photo indices in batches of ``batch_size`` (the last may be shorter)."""
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def _key(cfg: Any, condition: str, landmarks: str, seed: int, keys: list[str]) -> tuple[str, str]:
    """Cache key of one batch's fits: the preset's full description, the condition, the landmark source,
    the seed and the photos of the batch (a batch's fits depend on nothing else)."""
    return ("fit", json.dumps({"preset": cfg.describe(), "condition": condition, "landmarks": landmarks,
                               "seed": seed, "photos": keys}, sort_keys=True, default=str))


def fit_photos(setup: FitSetup, cfg: Any, seed: int, batch_size: int, bar: Any = None,
               corrupt: Corruption | None = None, condition: str = "clean",
               landmarks: LandmarkSource | None = None) -> FitOutcome:
    """Every photo of ``setup`` fitted with preset ``cfg`` (a :class:`~fitdiff.fitting.FitConfig`), batch
    by batch; a batch fitted before (same preset, condition, landmarks, seed and photos) is taken from the cache.

    Args:
        seed: base seed of the per-photo generators; batch_size: photos fitted together.
        bar: a progress bar advanced by the photos fitted (not by cached ones).
        corrupt: ``corrupt(part, batch) -> photos`` shown to the fit instead of the clean ones (the
            scores are always against the clean photo); ``condition`` names it in the cache key.
        landmarks: where each fit's landmarks come from (default: the dataset's).
    """
    landmarks = landmarks or LandmarkSource()
    acc = RowAccumulator()
    faces: list[FacePrediction] = []
    first, first_photos = None, None
    reconstructor = None
    for batch in photo_batches(len(setup.photos), batch_size):
        part = setup.photos.subset(batch)
        key = _key(cfg, condition, landmarks.key, seed, part.keys)
        if key not in setup.cache:
            if reconstructor is None:
                from fitdiff.fitting import Reconstructor

                reconstructor = Reconstructor(setup.pipeline, setup.scene, setup.guide, cfg)
            seen = part.image if corrupt is None else corrupt(part, batch)
            points, found = landmarks(seen, part.landmarks)
            generators = sample_generators(seed, batch, 1, stream=FIT_STREAM)
            result = reconstructor(seen, points, generator=generators)
            scores = setup.metrics(result, part.image, part.landmarks, part.shape, part.diffuse)
            if found is not None:
                scores = {**scores, "face_found": found.double()}
            face = result.face
            predicted = FacePrediction(face.shape.detach().float().cpu(),
                                       *(face.maps[m].detach().float().cpu() for m in ("diffuse", "specular", "normals")))
            setup.cache[key] = (scores, predicted, result, seen.detach().cpu())
        scores, predicted, result, seen = setup.cache[key]
        acc.add(scores)
        faces.append(predicted)
        if first is None:
            first, first_photos = result, seen
        if bar is not None:
            bar.update(len(batch))
    prediction = FacePrediction(*(torch.cat([getattr(f, name) for f in faces])
                                  for name in ("shape", "diffuse", "specular", "normals")))
    metrics = {name: np.concatenate(parts) for name, parts in acc.values.items()}
    return FitOutcome(metrics, prediction, first, first_photos)
