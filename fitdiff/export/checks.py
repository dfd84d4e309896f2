"""Input conversion and validation shared by the avatar writers (arrays, meshes, maps, file names).

Every check raises before anything is written, with a message naming the argument.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["AvatarMesh", "AvatarMaps", "as_numpy", "check_mesh", "check_maps", "check_name", "resolve_target"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def as_numpy(value: Any, name: str, dtype: type) -> np.ndarray:
    """``value`` (array, tensor of any dtype and device, nested list) as a numpy array of ``dtype``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64 if value.is_floating_point() else torch.int64).numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array or tensor, got {type(value).__name__}") from err


def _check_shape(arr: np.ndarray, name: str, ndim: int, last: int | None = None) -> None:
    if arr.ndim != ndim or (last is not None and arr.shape[-1] != last):
        expected = f"({', '.join(['N'] * (ndim - 1))}, {last})" if last else f"{ndim}-d"
        raise ValueError(f"{name} must have shape {expected}, got {arr.shape}")


def _check_image(arr: np.ndarray, name: str, channels: tuple[int, ...]) -> None:
    if arr.ndim != 3 or arr.shape[0] not in channels or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ValueError(f"{name} must have shape (C, H, W) with C in {channels}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")


@dataclass(frozen=True)
class AvatarMesh:
    """A validated triangle mesh with a UV layout (float64 / int64 numpy arrays).

    Attributes:
        vertices: (V, 3) positions, mm. faces: (F, 3) 0-based, counter-clockwise seen from outside.
        uvs: (T, 2) in [0, 1], v = 0 at the bottom image row. uv_faces: (F, 3) 0-based into ``uvs``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    uv_faces: np.ndarray


@dataclass(frozen=True)
class AvatarMaps:
    """Validated reflectance maps, float64 (C, H, W), row 0 = top of the image.

    Attributes:
        diffuse: (3, H, W) albedo in [0, 1]. specular: (1 or 3, H, W) albedo in [0, 1].
        normals: (3, H, W) unit normals in [-1, 1] (renormalised here).
    """

    diffuse: np.ndarray
    specular: np.ndarray
    normals: np.ndarray


def check_mesh(vertices: Any, faces: Any, uvs: Any, uv_faces: Any | None = None) -> AvatarMesh:
    """Convert and check a mesh; ``uv_faces=None`` means one UV per vertex (``uv_faces = faces``)."""
    verts = as_numpy(vertices, "vertices", np.float64)
    tri = as_numpy(faces, "faces", np.int64)
    tex = as_numpy(uvs, "uvs", np.float64)
    _check_shape(verts, "vertices", 2, 3)
    _check_shape(tri, "faces", 2, 3)
    _check_shape(tex, "uvs", 2, 2)
    if uv_faces is None:
        if len(tex) != len(verts):
            raise ValueError(
                f"without uv_faces, uvs must have one row per vertex ({len(verts)}), got {len(tex)}"
            )
        tex_tri = tri.copy()
    else:
        tex_tri = as_numpy(uv_faces, "uv_faces", np.int64)
        _check_shape(tex_tri, "uv_faces", 2, 3)
    if tex_tri.shape != tri.shape:
        raise ValueError(f"uv_faces {tex_tri.shape} must match faces {tri.shape}")
    for arr, label, limit in ((tri, "faces", len(verts)), (tex_tri, "uv_faces", len(tex))):
        if arr.size and (arr.min() < 0 or arr.max() >= limit):
            raise ValueError(f"{label} indices must lie in [0, {limit}), got [{arr.min()}, {arr.max()}]")
    if not np.all(np.isfinite(verts)) or not np.all(np.isfinite(tex)):
        raise ValueError("vertices and uvs must be finite")
    return AvatarMesh(verts, tri, tex, tex_tri)


def check_maps(diffuse: Any, specular: Any, normals: Any) -> AvatarMaps:
    """Convert and check the three maps; normals are renormalised to unit length, and (near-)zero normals
    become +z (flat in tangent space) with a warning."""
    maps = {
        "diffuse": as_numpy(diffuse, "diffuse", np.float64),
        "specular": as_numpy(specular, "specular", np.float64),
        "normals": as_numpy(normals, "normals", np.float64),
    }
    _check_image(maps["diffuse"], "diffuse", (3,))
    _check_image(maps["specular"], "specular", (1, 3))
    _check_image(maps["normals"], "normals", (3,))
    normals = maps["normals"]
    length = np.linalg.norm(normals, axis=0, keepdims=True)
    degenerate = length[0] < 1e-6
    if degenerate.any():  # e.g. texels outside the UV charts: use the flat tangent-space normal
        logger.warning("normals: %d (near-)zero vectors replaced by +z", int(degenerate.sum()))
        normals = np.where(degenerate[None], np.array([0.0, 0.0, 1.0])[:, None, None], normals)
        length = np.where(degenerate[None], 1.0, length)
    return AvatarMaps(maps["diffuse"], maps["specular"], normals / length)


def check_name(base: str) -> str:
    """``base`` if it is a safe file base name (letters, digits, ``_-.``), else ValueError."""
    if not _NAME.match(base):
        raise ValueError(f"export name {base!r} must use only letters, digits, '_', '-' and '.'")
    return base


def resolve_target(path: str | os.PathLike[str], name: str, suffix: str) -> tuple[Path, str]:
    """Folder and base name from a directory, a path ending in ``suffix`` (e.g. ``.obj``), or a prefix."""
    text = os.fspath(path)
    target = Path(text)
    if target.is_dir() or text.endswith(("/", os.sep)):
        folder, base = target, name
    elif target.suffix.lower() == suffix:
        folder, base = target.parent, target.stem
    else:
        folder, base = target.parent, target.name
    return folder, check_name(base)
