"""One call that writes an avatar in every export format: OBJ + MTL + PNG maps and a binary glTF."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fitdiff.export.checks import AvatarMaps, check_maps, check_mesh, check_name
from fitdiff.export.gltf import NORMAL_SPACES, export_glb
from fitdiff.export.obj import DEFAULT_SHININESS, export_obj
from fitdiff.export.tangents import object_to_tangent_normals, vertex_frames

__all__ = ["export_avatar", "MAP_KEYS", "FORMATS"]

MAP_KEYS = ("diffuse", "specular", "normals")
FORMATS = ("obj", "glb")


def _single(value: Any, key: str) -> Any:
    """(C, H, W) from a map given as (C, H, W) or a batch of one (1, C, H, W)."""
    shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
    if len(shape) == 4:
        if shape[0] != 1:
            raise ValueError(f"maps[{key!r}] holds a batch of {shape[0]}; export one avatar at a time")
        return value[0]
    return value


def export_avatar(
    out_dir: str | os.PathLike[str],
    name: str,
    vertices: Any,
    faces: Any,
    uvs: Any,
    maps: Mapping[str, Any],
    *,
    uv_faces: Any | None = None,
    normal_space: str = "tangent",
    formats: Sequence[str] = FORMATS,
    vertex_normals: bool = True,
    obj_normals_bits: int = 16,
    glb_normals_bits: int = 8,
    metres_per_unit: float = 1e-3,
    shininess: float = DEFAULT_SHININESS,
) -> dict[str, Path]:
    """Write one avatar as ``{name}.obj`` + ``.mtl`` + ``_diffuse/_specular/_normals.png`` and ``{name}.glb``.

    Conventions: :mod:`fitdiff.export.obj` (mm, v up, sRGB-encoded colour maps) and
    :mod:`fitdiff.export.gltf` (metres, t down, sRGB colour maps, supplied tangents). An object-space
    normal map is converted once to tangent space, so both formats carry the same tangent-space map.

    Args:
        out_dir: folder to write into (created if missing).
        name: base name of the files (letters, digits, ``_-.``), e.g. ``sample_003``.
        vertices: (V, 3) positions in mm, e.g. ``PCAShapeModel(shape)[0]``.
        faces: (F, 3) 0-based vertex indices, counter-clockwise seen from outside.
        uvs: (T, 2) texture coordinates in [0, 1], v = 0 at the bottom of the image.
        maps: ``diffuse`` (3, H, W) and ``specular`` (1 or 3, H, W) linear albedo in [0, 1], ``normals``
            (3, H, W) unit vectors in [-1, 1]; tensors or arrays, a leading batch dimension of 1 allowed.
        uv_faces: (F, 3) indices into ``uvs``; None means one UV per vertex (``faces``).
        normal_space: ``"tangent"`` or ``"object"``: the space of ``maps["normals"]``.
        formats: which of ``"obj"``, ``"glb"`` to write.
        vertex_normals: write the renderer's vertex normals as OBJ ``vn`` records.
        obj_normals_bits, glb_normals_bits: bits per channel of the normal-map PNG in each format.
        metres_per_unit: glTF scale from the vertex unit to metres.
        shininess: Blinn-Phong exponent (OBJ ``Ns`` and the glTF roughness).

    Returns:
        Paths keyed ``obj``, ``mtl``, ``diffuse``, ``specular``, ``normals`` (OBJ set) and ``glb``.
    """
    check_name(name)
    missing = [key for key in MAP_KEYS if key not in maps]
    if missing:
        raise KeyError(f"maps needs keys {list(MAP_KEYS)}; missing {missing}")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    if normal_space not in NORMAL_SPACES:
        raise ValueError(f"normal_space must be one of {NORMAL_SPACES}, got {normal_space!r}")
    mesh = check_mesh(vertices, faces, uvs, uv_faces)
    checked = check_maps(*(_single(maps[key], key) for key in MAP_KEYS))
    if normal_space == "object":
        checked = AvatarMaps(
            checked.diffuse, checked.specular, object_to_tangent_normals(mesh, checked.normals)
        )
    args = (
        mesh.vertices,
        mesh.faces,
        mesh.uvs,
        mesh.uv_faces,
        checked.diffuse,
        checked.specular,
        checked.normals,
    )
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if "obj" in formats:
        vn = None
        if vertex_normals:
            vn = vertex_frames(mesh).normals
        paths.update(
            export_obj(
                folder,
                *args,
                name=name,
                vertex_normals=vn,
                normals_bits=obj_normals_bits,
                shininess=shininess,
            )
        )
    if "glb" in formats:
        paths["glb"] = export_glb(
            folder, *args, name=name, normals_bits=glb_normals_bits, metres_per_unit=metres_per_unit,
            shininess=shininess,
        )  # fmt: skip
    return paths
