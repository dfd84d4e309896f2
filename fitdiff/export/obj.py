"""Avatar export: Wavefront OBJ + MTL + PNG texture maps, and a reader for the round trip.

Files written for ``name="avatar"`` (all in one folder, referenced by relative paths)::

    avatar.obj            v (mm), vt, optional vn, usemtl, f v/vt[/vn] (1-based, vertices before faces)
    avatar.mtl            newmtl avatar: Kd/Ks/Ns, map_Kd, map_Ks, norm and map_Bump -bm 1 (normal map)
    avatar_diffuse.png    RGB 8-bit diffuse albedo (linear values, as stored by the model)
    avatar_specular.png   8-bit specular albedo, grey or RGB
    avatar_normals.png    RGB tangent-space normal map encoded (n + 1) / 2, 16-bit (default) or 8-bit

Texture tensors are (C, H, W) with row 0 the TOP of the image, so with the OBJ convention (v = 0 at the
bottom row) they are written without flipping. Blender's and MeshLab's OBJ importers open these files;
Blender maps ``norm`` / ``map_Bump`` to a normal-map node.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

__all__ = ["export_obj", "load_obj", "read_texture", "read_normal_map"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_SHININESS = 60.0  # Blinn-Phong exponent written as Ns; the specular map carries the intensity


def _numpy(value: Any, name: str, dtype: type) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
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


def _resolve(path: str | os.PathLike[str], name: str) -> tuple[Path, str]:
    """Folder and base name from a directory, an ``.obj`` path, or a path prefix."""
    text = os.fspath(path)
    target = Path(text)
    if target.is_dir() or text.endswith(("/", os.sep)):
        folder, base = target, name
    elif target.suffix.lower() == ".obj":
        folder, base = target.parent, target.stem
    else:
        folder, base = target.parent, target.name
    if not _NAME.match(base):
        raise ValueError(f"export name {base!r} must use only letters, digits, '_', '-' and '.'")
    return folder, base


def _write_png(path: Path, image: np.ndarray, bits: int) -> None:
    """Write (C, H, W) values in [0, 1] as an 8- or 16-bit PNG (grey for C = 1, RGB for C = 3)."""
    hwc = np.clip(np.transpose(image, (1, 2, 0)), 0.0, 1.0)
    if bits == 8:
        data = np.round(hwc * 255.0).astype(np.uint8)
        Image.fromarray(data[..., 0] if data.shape[-1] == 1 else data).save(path)
        return
    data = np.round(hwc * 65535.0).astype(np.uint16)
    # Pillow writes 16-bit only for single-channel images; OpenCV writes 16-bit RGB PNGs (in BGR order).
    data = data[..., 0] if data.shape[-1] == 1 else np.ascontiguousarray(data[..., ::-1])
    if not cv2.imwrite(str(path), data):
        raise OSError(f"could not write {path}")


def read_texture(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an 8- or 16-bit PNG as float (C, H, W) in [0, 1], RGB order, row 0 = top."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise OSError(f"could not read image {path}")
    scale = 65535.0 if data.dtype == np.uint16 else 255.0
    if data.ndim == 2:
        data = data[..., None]
    elif data.shape[-1] == 3:
        data = data[..., ::-1]
    elif data.shape[-1] == 4:
        data = data[..., [2, 1, 0, 3]]
    return np.transpose(data.astype(np.float64) / scale, (2, 0, 1))


def read_normal_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a normal-map PNG written by :func:`export_obj` to unit vectors (3, H, W) in [-1, 1]."""
    encoded = read_texture(path)[:3]
    vectors = encoded * 2.0 - 1.0
    return vectors / np.maximum(np.linalg.norm(vectors, axis=0, keepdims=True), 1e-12)


def export_obj(
    path: str | os.PathLike[str],
    vertices: Any,
    faces: Any,
    uvs: Any,
    uv_faces: Any,
    diffuse: Any,
    specular: Any,
    normals: Any,
    name: str = "avatar",
    *,
    vertex_normals: Any | None = None,
    normals_bits: int = 16,
) -> dict[str, Path]:
    """Write an avatar as OBJ + MTL + PNG maps.

    Args:
        path: a folder (existing, or ending in a separator; files are named ``{name}.*``), a path ending
            in ``.obj`` (its stem becomes the name), or a prefix such as ``out/face`` (name ``face``).
        vertices: (V, 3) positions in mm.
        faces: (F, 3) 0-based vertex indices, counter-clockwise seen from outside.
        uvs: (T, 2) texture coordinates in [0, 1], v = 0 at the bottom of the image.
        uv_faces: (F, 3) 0-based indices into ``uvs``.
        diffuse: (3, H, W) diffuse albedo in [0, 1].
        specular: (1, H, W) or (3, H, W) specular albedo in [0, 1].
        normals: (3, H, W) tangent-space unit normals in [-1, 1].
        name: base name of the files (letters, digits, ``_-.``).
        vertex_normals: optional (V, 3) unit normals written as ``vn`` (faces then use v/vt/vn).
        normals_bits: 16 (default) or 8 bits per channel for the normal map.

    Returns:
        Paths keyed ``obj``, ``mtl``, ``diffuse``, ``specular``, ``normals``.
    """
    folder, base = _resolve(path, name)
    verts = _numpy(vertices, "vertices", np.float64)
    tri = _numpy(faces, "faces", np.int64)
    tex = _numpy(uvs, "uvs", np.float64)
    tex_tri = _numpy(uv_faces, "uv_faces", np.int64)
    _check_shape(verts, "vertices", 2, 3)
    _check_shape(tri, "faces", 2, 3)
    _check_shape(tex, "uvs", 2, 2)
    _check_shape(tex_tri, "uv_faces", 2, 3)
    if tex_tri.shape != tri.shape:
        raise ValueError(f"uv_faces {tex_tri.shape} must match faces {tri.shape}")
    for arr, label, limit in ((tri, "faces", len(verts)), (tex_tri, "uv_faces", len(tex))):
        if arr.size and (arr.min() < 0 or arr.max() >= limit):
            raise ValueError(f"{label} indices must lie in [0, {limit}), got [{arr.min()}, {arr.max()}]")
    if not np.all(np.isfinite(verts)) or not np.all(np.isfinite(tex)):
        raise ValueError("vertices and uvs must be finite")
    maps = {
        "diffuse": _numpy(diffuse, "diffuse", np.float64),
        "specular": _numpy(specular, "specular", np.float64),
        "normals": _numpy(normals, "normals", np.float64),
    }
    _check_image(maps["diffuse"], "diffuse", (3,))
    _check_image(maps["specular"], "specular", (1, 3))
    _check_image(maps["normals"], "normals", (3,))
    if normals_bits not in (8, 16):
        raise ValueError(f"normals_bits must be 8 or 16, got {normals_bits}")
    vn = None
    if vertex_normals is not None:
        vn = _numpy(vertex_normals, "vertex_normals", np.float64)
        if vn.shape != verts.shape:
            raise ValueError(f"vertex_normals must have shape {verts.shape}, got {vn.shape}")

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "obj": folder / f"{base}.obj",
        "mtl": folder / f"{base}.mtl",
        "diffuse": folder / f"{base}_diffuse.png",
        "specular": folder / f"{base}_specular.png",
        "normals": folder / f"{base}_normals.png",
    }
    _write_png(paths["diffuse"], maps["diffuse"], 8)
    _write_png(paths["specular"], maps["specular"], 8)
    _write_png(paths["normals"], (maps["normals"] + 1.0) / 2.0, normals_bits)
    paths["mtl"].write_text(
        "\n".join(
            [
                f"# FitDiff avatar material for {base}.obj",
                f"newmtl {base}",
                "Ka 0.000000 0.000000 0.000000",
                "Kd 1.000000 1.000000 1.000000",
                "Ks 1.000000 1.000000 1.000000",
                f"Ns {_SHININESS:.6f}",
                "d 1.000000",
                "illum 2",
                f"map_Kd {paths['diffuse'].name}",
                f"map_Ks {paths['specular'].name}",
                f"norm {paths['normals'].name}",
                f"map_Bump -bm 1.000000 {paths['normals'].name}",
                "",
            ]
        )
    )
    with open(paths["obj"], "w") as stream:
        stream.write(f"# FitDiff avatar: {len(verts)} vertices, {len(tri)} triangles, units mm\n")
        stream.write(f"mtllib {paths['mtl'].name}\n")
        stream.write(f"o {base}\n")
        np.savetxt(stream, verts, fmt="v %.6f %.6f %.6f")
        np.savetxt(stream, tex, fmt="vt %.6f %.6f")
        if vn is not None:
            np.savetxt(stream, vn, fmt="vn %.6f %.6f %.6f")
        stream.write(f"usemtl {base}\ns 1\n")
        if vn is None:
            corners = np.stack([tri, tex_tri], -1).reshape(len(tri), 6) + 1
            np.savetxt(stream, corners, fmt="f %d/%d %d/%d %d/%d")
        else:
            corners = np.stack([tri, tex_tri, tri], -1).reshape(len(tri), 9) + 1
            np.savetxt(stream, corners, fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    logger.info("exported %s (%d vertices, %d faces)", paths["obj"], len(verts), len(tri))
    return paths


def _index(token: str, count: int) -> int:
    value = int(token)
    return value - 1 if value > 0 else count + value  # OBJ: 1-based, negative = relative to the end


def _read_mtl(path: Path) -> dict[str, Path]:
    maps: dict[str, Path] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("map_Kd", "map_Ks", "norm", "map_Bump", "bump"):
            maps[parts[0]] = (path.parent / parts[-1]).resolve()
    return maps


def load_obj(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an OBJ (as written by :func:`export_obj`; polygons are fan-triangulated).

    Returns:
        dict with ``vertices`` (V, 3) float64, ``faces`` (F, 3) int64 0-based, ``uvs`` (T, 2),
        ``uv_faces`` (F, 3) (empty when absent), ``vertex_normals`` (N, 3) and ``vertex_normal_faces`` (F, 3)
        (``vn`` records, empty when absent), ``mtllib`` path or None, ``materials`` {map keyword: absolute path} from the MTL
        (``map_Kd``, ``map_Ks``, ``norm``, ``map_Bump``).
    """
    path = Path(path)
    verts: list[list[float]] = []
    tex: list[list[float]] = []
    nrm: list[list[float]] = []
    faces: list[list[int]] = []
    tex_faces: list[list[int]] = []
    nrm_faces: list[list[int]] = []
    mtllib: Path | None = None
    with open(path) as stream:
        for number, line in enumerate(stream, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            key = parts[0]
            try:
                if key == "v":
                    verts.append([float(x) for x in parts[1:4]])
                elif key == "vt":
                    tex.append([float(x) for x in parts[1:3]])
                elif key == "vn":
                    nrm.append([float(x) for x in parts[1:4]])
                elif key == "mtllib":
                    mtllib = path.parent / " ".join(parts[1:])
                elif key == "f":
                    corners = [corner.split("/") for corner in parts[1:]]
                    for i in range(1, len(corners) - 1):
                        tri = (corners[0], corners[i], corners[i + 1])
                        faces.append([_index(c[0], len(verts)) for c in tri])
                        if all(len(c) > 1 and c[1] for c in tri):
                            tex_faces.append([_index(c[1], len(tex)) for c in tri])
                        if all(len(c) > 2 and c[2] for c in tri):
                            nrm_faces.append([_index(c[2], len(nrm)) for c in tri])
            except (ValueError, IndexError) as err:
                raise ValueError(f"{path}:{number}: malformed {key!r} line: {line.strip()!r}") from err
    result: dict[str, Any] = {
        "vertices": np.asarray(verts, dtype=np.float64).reshape(-1, 3),
        "faces": np.asarray(faces, dtype=np.int64).reshape(-1, 3),
        "uvs": np.asarray(tex, dtype=np.float64).reshape(-1, 2),
        "uv_faces": np.asarray(tex_faces, dtype=np.int64).reshape(-1, 3),
        "vertex_normals": np.asarray(nrm, dtype=np.float64).reshape(-1, 3),
        "vertex_normal_faces": np.asarray(nrm_faces, dtype=np.int64).reshape(-1, 3),
        "mtllib": mtllib,
        "materials": _read_mtl(mtllib) if mtllib is not None and mtllib.is_file() else {},
    }
    return result
