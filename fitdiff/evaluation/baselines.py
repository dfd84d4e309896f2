"""Baselines of the conditioning table: what the identity embedding gives without a generative model.

- :func:`mean_face`: zero shape coefficients (the model's mean mesh) and the per-texel mean of the
  training maps (the mean normal renormalised): what a model that ignores the photo predicts.
- :func:`nearest_identity`: the training sample whose embedding is most cosine-similar to the photo's
  ``id.npy``, its ground-truth shape and maps (retrieval).
- :class:`LinearProbe`: ridge regressions from the embedding to the shape coefficients and to each map,
  fitted on the training split, the penalty of each chosen by cross-validation over training subjects
  (:func:`fitdiff.metrics.probe.fit_ridge_cv`, folds by subject). The shape targets are scaled by each
  component's std, so the penalty is chosen for the per-vertex error in mm (the components are
  orthonormal); predicted normals are renormalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fitdiff.evaluation.face_metrics import FacePrediction
from fitdiff.evaluation.faces import MAP_NAMES, FaceSet
from fitdiff.metrics.probe import DEFAULT_ALPHAS, RidgeProbe, fit_ridge_cv

__all__ = ["mean_face", "nearest_identity", "nearest_indices", "LinearProbe"]


def mean_face(train: FaceSet, n: int) -> FacePrediction:
    """``n`` copies of the mean face of ``train`` (zero coefficients, mean maps)."""
    diffuse = train.diffuse.double().mean(0, keepdim=True).float()
    specular = train.specular.double().mean(0, keepdim=True).float()
    normals = F.normalize(train.normals.double().mean(0, keepdim=True), dim=1).float()
    shape = torch.zeros(1, train.shape.shape[1])
    return FacePrediction(shape, diffuse, specular, normals).repeat(n)


def nearest_indices(train_identity: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """(M,) index into the N training embeddings of the most cosine-similar one to each of M queries
    (ties: the lowest index)."""
    a = F.normalize(identity.double(), dim=1)
    b = F.normalize(train_identity.double(), dim=1)
    return (a @ b.T).argmax(1)


def nearest_identity(train: FaceSet, identity: torch.Tensor) -> tuple[FacePrediction, torch.Tensor]:
    """The ground truth of the nearest training sample by embedding, and its (M,) indices."""
    index = nearest_indices(train.identity, identity)
    return FacePrediction(
        train.shape[index], train.diffuse[index], train.specular[index], train.normals[index]
    ), index


class LinearProbe:
    """Ridge regressions embedding -> shape and embedding -> each map, fitted on a training :class:`FaceSet`.

    Args:
        train: the training faces (embeddings, shape, maps, subjects).
        shape_std: (K,) std of each shape component in mm (the shape model's ``std``): scales the shape
            targets for the cross-validation; None = coefficients as they are.
        alphas: candidate penalties; folds: cross-validation folds (by subject; at most the number of
            subjects); seed: fold assignment.

    Attributes:
        alphas: target name -> the chosen penalty.
    """

    def __init__(
        self,
        train: FaceSet,
        shape_std: torch.Tensor | None = None,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        subjects = np.asarray(train.subjects)
        folds = max(2, min(int(folds), len(np.unique(subjects))))
        x = train.identity.double().numpy()
        self.shape_scale = (
            torch.ones(train.shape.shape[1])
            if shape_std is None
            else shape_std.detach().cpu()[: train.shape.shape[1]]
        ).double()
        self.map_shapes = {name: tuple(getattr(train, name).shape[1:]) for name in MAP_NAMES}
        self.probes: dict[str, RidgeProbe] = {}
        targets = {"shape": (train.shape.double() * self.shape_scale).numpy()}
        for name in MAP_NAMES:
            targets[name] = getattr(train, name).reshape(len(train), -1).double().numpy()
        for name, y in targets.items():
            self.probes[name] = fit_ridge_cv(x, y, alphas=alphas, groups=subjects, folds=folds, seed=seed)
        self.alphas = {name: probe.alpha for name, probe in self.probes.items()}

    def predict(self, identity: torch.Tensor) -> FacePrediction:
        """Predictions for (M, D) embeddings."""
        x = identity.detach().cpu().double()
        shape = (self.probes["shape"].predict(x) / self.shape_scale).float()
        maps = {
            name: self.probes[name].predict(x).float().reshape(-1, *self.map_shapes[name])
            for name in MAP_NAMES
        }
        return FacePrediction(
            shape,
            maps["diffuse"].clamp(0, 1),
            maps["specular"].clamp(0, 1),
            F.normalize(maps["normals"], dim=1),
        )
