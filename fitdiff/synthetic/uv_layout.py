"""Where the face lies in UV space: per-texel positions on the mean shape, and landmark anchors.

Procedural reflectance maps are drawn in the frontal frame of the shape model (millimetres, +x the
subject's left, +y up; see :mod:`fitdiff.face.template`), so facial features land where the mesh has
them whatever its UV chart looks like: every texel is tagged with the mean-shape surface point that
maps to it, and features are placed relative to the mean shape's 68 landmarks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

from fitdiff.face.shape_model import PCAShapeModel

__all__ = ["UVLayout", "texel_uvs", "uv_layout"]

log = logging.getLogger(__name__)


def texel_uvs(resolution: int) -> np.ndarray:
    """(R, R, 2) UV coordinates of texel centres; row 0 is the top of the image (v near 1)."""
    centres = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution
    uu, vv = np.meshgrid(centres, 1.0 - centres)
    return np.stack([uu, vv], axis=-1)


@dataclass(frozen=True)
class UVLayout:
    """The shape model's mean face sampled on an R x R texel grid.

    Attributes:
        resolution: R, texels per side.
        position: (R, R, 3) mean-shape surface point of each texel, mm (row 0 = top of the map).
        covered: (R, R) bool, texel centre inside some UV triangle (others take the nearest value).
        landmarks: (68, 3) mean-shape landmark positions, mm.
        mm_per_texel: median surface distance between horizontally adjacent texels, mm.
        model_id: id of the shape model the layout was computed from.
    """

    resolution: int
    position: np.ndarray
    covered: np.ndarray
    landmarks: np.ndarray
    mm_per_texel: float
    model_id: str

    @property
    def x(self) -> np.ndarray:
        """(R, R) frontal x in mm (subject's left positive)."""
        return self.position[..., 0]

    @property
    def y(self) -> np.ndarray:
        """(R, R) frontal y in mm (up positive)."""
        return self.position[..., 1]

    def landmark_xy(self, index: int | slice | list[int]) -> np.ndarray:
        """Frontal (x, y) of landmark(s) ``index`` (iBUG-68 order), mm."""
        return self.landmarks[index, :2]


def uv_layout(model: PCAShapeModel, resolution: int) -> UVLayout:
    """Sample the mean shape of ``model`` at the centres of an R x R UV grid.

    Positions are interpolated linearly inside each UV triangle (a Delaunay triangulation of the UV
    vertices, which equals the mesh's own for the single-chart procedural template); texels outside the
    chart take the nearest vertex's position.
    """
    if resolution < 4:
        raise ValueError(f"uv resolution must be at least 4, got {resolution}")
    mean = model.mean.detach().cpu().double().numpy().reshape(-1, 3)
    uv_index = model.uv_faces.detach().cpu().numpy().reshape(-1)
    vert_index = model.faces.detach().cpu().numpy().reshape(-1)
    uvs = model.uvs.detach().cpu().double().numpy()
    # One position per UV vertex (a UV vertex on a seam maps to a single mesh vertex).
    uv_pos = np.zeros((len(uvs), 3))
    uv_pos[uv_index] = mean[vert_index]
    used = np.zeros(len(uvs), dtype=bool)
    used[uv_index] = True
    uvs, uv_pos = uvs[used], uv_pos[used]
    grid = texel_uvs(resolution).reshape(-1, 2)
    linear = LinearNDInterpolator(uvs, uv_pos)(grid)
    covered = np.isfinite(linear).all(axis=1)
    if not covered.all():
        linear[~covered] = NearestNDInterpolator(uvs, uv_pos)(grid[~covered])
    position = linear.reshape(resolution, resolution, 3)
    step = np.linalg.norm(np.diff(position, axis=1), axis=-1)
    landmarks = mean[model.landmarks_68.detach().cpu().numpy()]
    log.debug("uv layout R=%d: %.1f%% covered", resolution, 100.0 * covered.mean())
    return UVLayout(
        resolution=resolution,
        position=position,
        covered=covered.reshape(resolution, resolution),
        landmarks=landmarks,
        mm_per_texel=float(np.median(step)),
        model_id=model.model_id,
    )
