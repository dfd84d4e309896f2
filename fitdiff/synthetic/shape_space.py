"""The synthetic dataset's face shape model: the procedural PCA model without its similarity part.

A single photo cannot tell a face's absolute size, position or orientation from the camera's distance,
framing and the head pose, and face recognizers align crops by a similarity transform anyway; 3D face
models built from scans likewise remove them (generalised Procrustes alignment) before PCA. The
procedural model (:func:`fitdiff.face.template.make_procedural_shape_model`) puts about a quarter of its
per-vertex variance into exactly these directions (uniform scaling above all), which no embedding of a
photo can carry. :func:`observable_shape_model` projects its deformation fields onto the complement of
the 7 similarity directions about the mean shape (3 translations, 3 infinitesimal rotations, uniform
scale), diagonalises the result again and rescales it to the per-vertex RMS of the source model's
first ``K`` components (6.9 mm for the default 50), so the same amount of shape variation lies in
directions a photo shows: proportions, local shape and depth.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.face.template import make_procedural_shape_model

__all__ = ["SHAPE_SPACES", "similarity_basis", "similarity_fraction", "observable_shape_model"]

log = logging.getLogger(__name__)

#: names of the synthetic shape models: "observable" (this module, the default) and "procedural"
SHAPE_SPACES = ("observable", "procedural")
_EXTRA_SOURCE_COMPONENTS = 16  # source components beyond K, so K remain after removing 7 directions


def similarity_basis(mean: np.ndarray) -> np.ndarray:
    """(3V, 7) orthonormal basis of the infinitesimal similarity transforms of a (V, 3) mesh: translations
    along x, y, z, rotations about the axes through the centroid, and uniform scaling about it (flattened
    vertex-major, as ``vertices.reshape(-1)``)."""
    points = np.asarray(mean, dtype=np.float64)
    centred = points - points.mean(0)
    fields = []
    for axis in range(3):
        translation = np.zeros_like(centred)
        translation[:, axis] = 1.0
        fields.append(translation)
    for axis in range(3):
        omega = np.zeros(3)
        omega[axis] = 1.0
        fields.append(np.cross(omega, centred))
    fields.append(centred)
    basis, _ = np.linalg.qr(np.stack([f.reshape(-1) for f in fields], axis=1))
    return basis


def similarity_fraction(model: PCAShapeModel) -> float:
    """Fraction of the model's per-vertex variance that lies in similarity directions (in [0, 1])."""
    displacements = _displacements(model)
    basis = similarity_basis(model.mean.detach().cpu().double().numpy())
    return float(((displacements @ basis) ** 2).sum() / (displacements**2).sum())


def _displacements(model: PCAShapeModel) -> np.ndarray:
    """(K, 3V) one-standard-deviation displacement of each component, mm."""
    comps = model.components.detach().cpu().double().numpy().reshape(model.n_components, -1)
    return comps * model.std.detach().cpu().double().numpy()[:, None]


def observable_shape_model(n_vertices: int = 5000, n_components: int = 50, seed: int = 0) -> PCAShapeModel:
    """The procedural shape model with the similarity directions removed (see the module docstring).

    Args:
        n_vertices, seed: of the procedural template and its covariance (see
            :func:`fitdiff.face.template.make_procedural_shape_model`).
        n_components: K; built from ``K + 16`` procedural components.

    Returns:
        A :class:`PCAShapeModel` with orthonormal components, each orthogonal to every similarity
        direction, std sorted in decreasing order, ``model_id`` ``"procedural-observable-v1-{V}v-{K}k-s{seed}"``.
    """
    source = make_procedural_shape_model(n_vertices, n_components + _EXTRA_SOURCE_COMPONENTS, seed)
    mean = source.mean.detach().cpu().double().numpy()
    displacements = _displacements(source)
    basis = similarity_basis(mean)
    projected = displacements - (displacements @ basis) @ basis.T
    _, singular, vt = np.linalg.svd(projected, full_matrices=False)
    components, std = vt[:n_components], singular[:n_components]
    if std[-1] <= 1e-9 * std[0]:
        raise RuntimeError(f"observable shape model: n_components={n_components} exceeds the basis rank")
    target = (source.std.detach().cpu().double().numpy()[:n_components] ** 2).sum()
    std = std * math.sqrt(target / (std**2).sum())
    # Deterministic sign: the largest-magnitude coordinate of each component is positive.
    peak = components[np.arange(n_components), np.argmax(np.abs(components), axis=1)]
    components = components * np.where(peak < 0, -1.0, 1.0)[:, None]
    n_vert = mean.shape[0]
    log.debug("observable shape model: V=%d K=%d, %.2f mm RMS", n_vert, n_components, math.sqrt(target / n_vert))
    return PCAShapeModel(
        mean=source.mean,
        components=torch.from_numpy(components.reshape(n_components, n_vert, 3)).to(source.mean.dtype),
        std=torch.from_numpy(std).to(source.mean.dtype),
        faces=source.faces,
        uvs=source.uvs,
        uv_faces=source.uv_faces,
        landmarks_68=source.landmarks_68,
        landmarks_5=source.landmarks_5,
        model_id=f"procedural-observable-v1-{n_vert}v-{n_components}k-s{seed}",
    )
