"""Convert an LSFM-style MATLAB shape model (.mat) into a :class:`PCAShapeModel` ``.npz``.

Expected .mat fields (MATLAB v5 format, read with ``scipy.io.loadmat``; a v7.3/HDF5 file must be
re-saved with ``save(..., '-v7')`` first):

``mean``
    (3V,) in any of the shapes (3V,), (1, 3V), (3V, 1), interleaved x0 y0 z0 x1 ..., or (V, 3); mm.
``components``
    (3V, K) column-orthonormal, or (K, 3V) row-orthonormal (the layout is found from V). Columns that
    are orthogonal but not unit length are normalised and their norms folded into the std.
``eigenvalues``
    (K,) variances of the coefficients in mm^2 (converted to std = sqrt(eigenvalues)).
``trilist``
    (F, 3) or (3, F) triangle vertex indices, 0- or 1-based: an index equal to V, or no index 0, means
    1-based. Winding is made counter-clockwise seen from outside (flipped if most normals point inward).
optional ``uv`` (or ``uvs``, ``texcoords``, ``tcoords``)
    (V, 2) or (2, V) per-vertex texture coordinates in [0, 1], v = 0 at the bottom of the image, used
    with ``trilist``; ``uv_trilist`` (F, 3) optionally gives separate UV triangles (same index base as
    ``trilist``). Without UVs a cylindrical unwrap about the vertical axis is computed.
optional ``landmarks_68`` (or ``landmarks``, ``lm68``) and ``landmarks_5``
    vertex indices in the same index base as ``trilist``; 68 in iBUG order, 5 in ArcFace order. Without
    ``landmarks_5`` it is derived from the 68 (eye centres, nose tip 30, mouth corners 48 and 54).
    LSFM's public release carries no landmark indices: pass them with ``--landmarks68 FILE`` (a text file
    of 68 0-based indices) or the ``landmarks_68`` argument.

Other fields (``n_training_samples``, MATLAB headers) are ignored. The converter does not reorient the
model: it must already be in the project frame (+y up, looking toward +z, millimetres); a warning is
logged when the landmarks say otherwise.

Command line::

    python -m fitdiff.face.lsfm INPUT.mat OUTPUT.npz [--components K] [--model-id ID] [--landmarks68 FILE]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io

from fitdiff.data.landmarks import IBUG68_TO_ARCFACE5, five_from_68

from .shape_model import PCAShapeModel, ShapeModelError

__all__ = ["convert_lsfm_mat", "read_lsfm_mat", "cylindrical_uvs", "main"]

logger = logging.getLogger(__name__)

_UV_KEYS = ("uv", "uvs", "texcoords", "tcoords")
_LM68_KEYS = ("landmarks_68", "landmarks", "lm68")


def _field(mat: dict, keys: Sequence[str], path: Path, required: bool = True) -> np.ndarray | None:
    for key in keys:
        if key in mat:
            return np.asarray(mat[key])
    if required:
        found = sorted(k for k in mat if not k.startswith("__"))
        names = " or ".join(repr(k) for k in keys)
        raise ShapeModelError(f"{path}: missing field {names}; fields present: {found}")
    return None


def _mean_vertices(mean: np.ndarray, path: Path) -> np.ndarray:
    if mean.ndim == 2 and mean.shape[1] == 3 and mean.shape[0] != 1:
        return mean.astype(np.float64)
    flat = mean.reshape(-1) if mean.ndim == 1 or 1 in mean.shape else None
    if flat is None or flat.size % 3:
        raise ShapeModelError(
            f"{path}: field 'mean' must be (3V,), (1, 3V), (3V, 1) or (V, 3), got {mean.shape}"
        )
    return flat.reshape(-1, 3).astype(np.float64)


def _index_array(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.number) or np.any(arr != np.round(arr)):
        raise ShapeModelError(f"{path}: field {key!r} must hold integer indices")
    return np.round(arr).astype(np.int64)


def _triangles(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    arr = _index_array(arr, path, key)
    if arr.ndim == 2 and arr.shape[1] != 3 and arr.shape[0] == 3:
        arr = arr.T
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ShapeModelError(f"{path}: field {key!r} must be (F, 3) or (3, F), got {arr.shape}")
    return arr


def _index_base(trilist: np.ndarray, n_vertices: int, path: Path) -> int:
    low, high = int(trilist.min()), int(trilist.max())
    if low < 0 or high > n_vertices or (low == 0 and high == n_vertices):
        raise ShapeModelError(
            f"{path}: field 'trilist' indices span [{low}, {high}], invalid for {n_vertices} vertices"
        )
    return 1 if (high == n_vertices or low >= 1) else 0


def _outward_score(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Area-weighted mean of normal . (centroid - mesh centre): > 0 when the winding is outward."""
    p0, p1, p2 = (vertices[faces[:, i]] for i in range(3))
    cross = np.cross(p1 - p0, p2 - p0)
    centre = vertices.mean(0)
    return float(((cross * ((p0 + p1 + p2) / 3 - centre)).sum(1)).sum())


def cylindrical_uvs(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cylindrical UV unwrap about the vertical (+y) axis through the vertex centroid.

    u follows the azimuth (0 at the front, +z; increasing toward +x), v follows height (v = 0 at the
    bottom), scaled together by arc length so the chart keeps the surface's aspect ratio, and centred in
    [0, 1]. Triangles crossing the back seam get duplicated UVs, so the chart has no wrap-around faces.

    Args:
        vertices: (V, 3) mm.
        faces: (F, 3) vertex indices.

    Returns:
        uvs (T, 2) in [0, 1] with T >= V (the first V rows belong to the vertices), uv_faces (F, 3).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    centre = vertices.mean(0)
    dx, dz = vertices[:, 0] - centre[0], vertices[:, 2] - centre[2]
    theta = np.arctan2(dx, dz)  # (V,) in (-pi, pi], 0 toward +z
    uv_faces = np.asarray(faces, dtype=np.int64).copy()
    corner_theta = theta[uv_faces]
    crossing = np.flatnonzero(corner_theta.max(1) - corner_theta.min(1) > math.pi)
    extra_theta: list[float] = []
    extra_y: list[float] = []
    if crossing.size:
        remap: dict[int, int] = {}
        for face in crossing:
            for corner in range(3):
                vertex = int(uv_faces[face, corner])
                if theta[vertex] < 0:
                    if vertex not in remap:
                        remap[vertex] = len(vertices) + len(extra_theta)
                        extra_theta.append(theta[vertex] + 2 * math.pi)
                        extra_y.append(vertices[vertex, 1])
                    uv_faces[face, corner] = remap[vertex]
    all_theta = np.concatenate([theta, np.asarray(extra_theta)])
    all_y = np.concatenate([vertices[:, 1], np.asarray(extra_y)])
    radius = float(np.median(np.hypot(dx, dz)))
    u_raw, v_raw = all_theta * radius, all_y
    span = max(np.ptp(u_raw), np.ptp(v_raw), 1e-12)
    u = (u_raw - u_raw.min()) / span + (1.0 - np.ptp(u_raw) / span) / 2
    v = (v_raw - v_raw.min()) / span + (1.0 - np.ptp(v_raw) / span) / 2
    uvs = np.clip(np.stack([u, v], 1), 0.0, 1.0)
    t = uvs[uv_faces]
    signed = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (
        t[:, 1, 1] - t[:, 0, 1]
    )
    flipped = int((signed <= 0).sum())
    if flipped:
        logger.warning("cylindrical UV unwrap: %d of %d triangles are flipped or degenerate", flipped, len(t))
    return uvs, uv_faces


def _landmarks_5_from_68(vertices: np.ndarray, lm68: np.ndarray) -> np.ndarray:
    """ArcFace 5-point vertex indices from iBUG-68 indices by :data:`IBUG68_TO_ARCFACE5`: a single-point
    group keeps its vertex, a group's mean (eye centre) takes the nearest vertex."""
    targets = five_from_68(vertices[lm68])
    indices = [
        int(lm68[group[0]]) if len(group) == 1 else int(np.argmin(((vertices - target) ** 2).sum(1)))
        for group, target in zip(IBUG68_TO_ARCFACE5, targets)
    ]
    return np.array(indices, dtype=np.int64)


def read_lsfm_mat(
    mat_path: str | os.PathLike[str],
    model_id: str = "lsfm",
    n_components: int | None = None,
    landmarks_68: Sequence[int] | np.ndarray | None = None,
) -> PCAShapeModel:
    """Read an LSFM-style .mat (fields in the module docstring) into a :class:`PCAShapeModel`.

    Args:
        mat_path: the .mat file.
        model_id: identifier stored with the model (shards and checkpoints record it).
        n_components: keep the first K components (all when None).
        landmarks_68: 0-based iBUG-68 vertex indices overriding / supplying the file's.

    Raises:
        ShapeModelError: a field is missing or malformed; the message names the file and the field.
    """
    path = Path(mat_path)
    if not path.is_file():
        raise FileNotFoundError(f"LSFM .mat file not found: {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError as err:  # MATLAB v7.3 files are HDF5
        raise ShapeModelError(f"{path}: MATLAB v7.3 (HDF5) file; re-save it with save(..., '-v7')") from err
    except (ValueError, OSError) as err:
        raise ShapeModelError(f"{path}: not a readable MATLAB .mat file ({err})") from err

    mean = _mean_vertices(_field(mat, ["mean"], path), path)
    n_vertices = len(mean)
    comps = np.asarray(_field(mat, ["components"], path), dtype=np.float64)
    if comps.ndim != 2 or 3 * n_vertices not in comps.shape:
        raise ShapeModelError(
            f"{path}: field 'components' must be (3V, K) or (K, 3V) with 3V = {3 * n_vertices}, got {comps.shape}"
        )
    if comps.shape[0] != 3 * n_vertices:
        comps = comps.T
    eigenvalues = np.asarray(_field(mat, ["eigenvalues"], path), dtype=np.float64).reshape(-1)
    if eigenvalues.shape[0] != comps.shape[1]:
        raise ShapeModelError(
            f"{path}: field 'eigenvalues' has {eigenvalues.shape[0]} entries but 'components' has {comps.shape[1]}"
        )
    if np.any(eigenvalues <= 0) or not np.all(np.isfinite(eigenvalues)):
        raise ShapeModelError(f"{path}: field 'eigenvalues' must be positive finite variances (mm^2)")
    keep = comps.shape[1] if n_components is None else int(n_components)
    if not 1 <= keep <= comps.shape[1]:
        raise ShapeModelError(f"{path}: n_components={n_components} outside [1, {comps.shape[1]}]")
    comps, std = comps[:, :keep], np.sqrt(eigenvalues[:keep])
    norms = np.linalg.norm(comps, axis=0)
    if np.any(np.abs(norms - 1.0) > 1e-3):
        logger.warning(
            "%s: components are not unit length (%.4g..%.4g); normalising", path, norms.min(), norms.max()
        )
        comps, std = comps / norms, std * norms

    trilist = _triangles(_field(mat, ["trilist"], path), path, "trilist")
    base = _index_base(trilist, n_vertices, path)
    faces = trilist - base

    uv = _field(mat, _UV_KEYS, path, required=False)
    if uv is not None:
        uv = uv.astype(np.float64)
        if uv.ndim == 2 and uv.shape[1] != 2 and uv.shape[0] == 2:
            uv = uv.T
        uv_tri = _field(mat, ["uv_trilist"], path, required=False)
        uv_faces = faces.copy() if uv_tri is None else _triangles(uv_tri, path, "uv_trilist") - base
        if uv.ndim != 2 or uv.shape[1] != 2 or (uv_tri is None and uv.shape[0] != n_vertices):
            raise ShapeModelError(f"{path}: UV field must be (V, 2) or (2, V) per vertex, got {uv.shape}")
    else:
        uv, uv_faces = cylindrical_uvs(mean, faces)

    if _outward_score(mean, faces) < 0:
        logger.warning("%s: triangles wind clockwise seen from outside; flipping them", path)
        faces, uv_faces = faces[:, [0, 2, 1]], uv_faces[:, [0, 2, 1]]

    if landmarks_68 is not None:
        lm68 = np.asarray(landmarks_68, dtype=np.int64).reshape(-1)
        lm_base = 0
    else:
        raw = _field(mat, _LM68_KEYS, path, required=False)
        if raw is None:
            raise ShapeModelError(
                f"{path}: missing field 'landmarks_68' (68 iBUG landmark vertex indices); add it to the .mat "
                "or pass them with --landmarks68 FILE (68 0-based indices)"
            )
        lm68 = _index_array(raw, path, "landmarks_68").reshape(-1)
        lm_base = base
    lm68 = lm68 - lm_base
    if lm68.shape != (68,) or lm68.min() < 0 or lm68.max() >= n_vertices:
        raise ShapeModelError(
            f"{path}: field 'landmarks_68' must hold 68 vertex indices in [{lm_base}, {n_vertices + lm_base}), "
            f"got shape {lm68.shape} range [{lm68.min() + lm_base}, {lm68.max() + lm_base}]"
        )
    raw5 = _field(mat, ["landmarks_5"], path, required=False)
    lm5 = (
        _landmarks_5_from_68(mean, lm68)
        if raw5 is None or landmarks_68 is not None
        else _index_array(raw5, path, "landmarks_5").reshape(-1) - base
    )
    _check_frame(mean, lm68, path)

    return PCAShapeModel(
        mean=mean,
        components=comps.T.reshape(keep, n_vertices, 3),
        std=std,
        faces=faces,
        uvs=uv,
        uv_faces=uv_faces,
        landmarks_68=lm68,
        landmarks_5=lm5,
        model_id=model_id,
        source=str(path),
    )


def _check_frame(mean: np.ndarray, lm68: np.ndarray, path: Path) -> None:
    """Warn when the landmarks contradict the project frame (+y up, looking toward +z, +x subject's left)."""
    pts = mean[lm68]
    eyes_y = pts[36:48, 1].mean()
    problems = []
    if not pts[30, 2] > pts[36:48, 2].mean():
        problems.append("nose tip is not in front (+z) of the eyes")
    if not eyes_y > pts[48:68, 1].mean():
        problems.append("eyes are not above (+y) the mouth")
    if not pts[36:42, 0].mean() < pts[42:48, 0].mean():
        problems.append("subject's right eye (landmarks 36-41) is not on -x")
    width = np.ptp(pts[:17, 0])
    if not 60.0 < width < 300.0:
        problems.append(f"jaw width {width:.3g} does not look like millimetres")
    if problems:
        logger.warning("%s: model may not be in the project frame: %s", path, "; ".join(problems))


def convert_lsfm_mat(
    mat_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    model_id: str = "lsfm",
    n_components: int | None = None,
    landmarks_68: Sequence[int] | np.ndarray | None = None,
) -> Path:
    """Convert ``mat_path`` (see the module docstring) and save it as a shape-model ``.npz``; returns its path."""
    model = read_lsfm_mat(mat_path, model_id=model_id, n_components=n_components, landmarks_68=landmarks_68)
    out = model.save(out_path)
    logger.info("wrote %s: V=%d K=%d F=%d", out, model.n_vertices, model.n_components, len(model.faces))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m fitdiff.face.lsfm", description="Convert an LSFM .mat shape model to fitdiff's .npz."
    )
    parser.add_argument("input", type=Path, help="LSFM .mat file")
    parser.add_argument("output", type=Path, help="output .npz")
    parser.add_argument("--components", type=int, default=None, help="keep the first K components")
    parser.add_argument("--model-id", default="lsfm", help="model identifier stored in the file")
    parser.add_argument(
        "--landmarks68", type=Path, default=None, help="text file of 68 0-based vertex indices"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    landmarks = None
    if args.landmarks68 is not None:
        landmarks = np.loadtxt(args.landmarks68, dtype=np.int64).reshape(-1)
    try:
        convert_lsfm_mat(args.input, args.output, args.model_id, args.components, landmarks)
    except (ShapeModelError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
