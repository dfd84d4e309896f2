"""Wavefront OBJ + MTL + PNG texture maps of an avatar, and a reader for the round trip.

Files written for ``name="avatar"`` (all in one folder, referenced by relative paths)::

    avatar.obj            v (mm), vt, optional vn, usemtl, f v/vt[/vn] (1-based, vertices before faces)
    avatar.mtl            newmtl avatar: Kd/Ks/Ns, map_Kd, map_Ks, norm and map_Bump -bm 1 (normal map)
    avatar_diffuse.png    RGB 8-bit diffuse albedo, sRGB-encoded (default) or raw linear values
    avatar_specular.png   8-bit specular albedo, grey or RGB, encoded like the diffuse map
    avatar_normals.png    RGB tangent-space normal map encoded (n + 1) / 2, 16-bit (default) or 8-bit

Colour maps are sRGB-encoded by default because Blender's and three.js' OBJ/MTL importers decode
``map_Kd`` / ``map_Ks`` as sRGB colour textures; the shading then sees the model's linear albedo. The MTL
records the choice in a ``# colour_encoding`` comment that :func:`load_obj` returns.

Texture tensors are (C, H, W) with row 0 the TOP of the image, so with the OBJ convention (v = 0 at the
bottom row) they are written without flipping. Blender's and MeshLab's OBJ importers open these files;
Blender maps ``norm`` / ``map_Bump`` to a normal-map node.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from fitdiff.export.checks import AvatarMesh, as_numpy, check_maps, check_mesh, resolve_target
from fitdiff.export.images import COLOUR_ENCODINGS, encode_png, linear_to_srgb
from fitdiff.io import atomic_write_bytes, atomic_write_text

__all__ = ["export_obj", "load_obj", "DEFAULT_SHININESS"]

logger = logging.getLogger(__name__)

#: Blinn-Phong exponent written as Ns: the face scene's default (fitdiff.face.scene.DEFAULT_SHININESS),
#: the lobe the training photos were rendered with; the specular map carries the intensity.
DEFAULT_SHININESS = 24.0
_ENCODING_TAG = "# colour_encoding"


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
    colour_encoding: str = "srgb",
    shininess: float = DEFAULT_SHININESS,
) -> dict[str, Path]:
    """Write an avatar as OBJ + MTL + PNG maps (each file written atomically).

    Args:
        path: a folder (existing, or ending in a separator; files are named ``{name}.*``), a path ending
            in ``.obj`` (its stem becomes the name), or a prefix such as ``out/face`` (name ``face``).
        vertices: (V, 3) positions in mm.
        faces: (F, 3) 0-based vertex indices, counter-clockwise seen from outside.
        uvs: (T, 2) texture coordinates in [0, 1], v = 0 at the bottom of the image.
        uv_faces: (F, 3) 0-based indices into ``uvs`` (None: ``faces``, one UV per vertex).
        diffuse: (3, H, W) linear diffuse albedo in [0, 1].
        specular: (1, H, W) or (3, H, W) linear specular albedo in [0, 1].
        normals: (3, H, W) tangent-space unit normals in [-1, 1] (x along +u, y along +v, z outward).
        name: base name of the files (letters, digits, ``_-.``).
        vertex_normals: optional (V, 3) unit normals written as ``vn`` (faces then use v/vt/vn).
        normals_bits: 16 (default) or 8 bits per channel for the normal map.
        colour_encoding: ``"srgb"`` (default) or ``"linear"``: how the diffuse and specular PNGs store
            the albedo (see the module docstring).
        shininess: Blinn-Phong exponent written as ``Ns``.

    Returns:
        Paths keyed ``obj``, ``mtl``, ``diffuse``, ``specular``, ``normals``.
    """
    folder, base = resolve_target(path, name, ".obj")
    mesh = check_mesh(vertices, faces, uvs, uv_faces)
    maps = check_maps(diffuse, specular, normals)
    if normals_bits not in (8, 16):
        raise ValueError(f"normals_bits must be 8 or 16, got {normals_bits}")
    if colour_encoding not in COLOUR_ENCODINGS:
        raise ValueError(f"colour_encoding must be one of {COLOUR_ENCODINGS}, got {colour_encoding!r}")
    vn = None
    if vertex_normals is not None:
        vn = as_numpy(vertex_normals, "vertex_normals", np.float64)
        if vn.shape != mesh.vertices.shape:
            raise ValueError(f"vertex_normals must have shape {mesh.vertices.shape}, got {vn.shape}")
    encode = linear_to_srgb if colour_encoding == "srgb" else (lambda x: x)

    paths = {
        "obj": folder / f"{base}.obj",
        "mtl": folder / f"{base}.mtl",
        "diffuse": folder / f"{base}_diffuse.png",
        "specular": folder / f"{base}_specular.png",
        "normals": folder / f"{base}_normals.png",
    }
    atomic_write_bytes(paths["diffuse"], encode_png(encode(maps.diffuse), 8))
    atomic_write_bytes(paths["specular"], encode_png(encode(maps.specular), 8))
    atomic_write_bytes(paths["normals"], encode_png((maps.normals + 1.0) / 2.0, normals_bits))
    mtl = [
        f"# FitDiff avatar material for {base}.obj",
        f"{_ENCODING_TAG} {colour_encoding}",
        f"newmtl {base}",
        "Ka 0.000000 0.000000 0.000000",
        "Kd 1.000000 1.000000 1.000000",
        "Ks 1.000000 1.000000 1.000000",
        f"Ns {float(shininess):.6f}",
        "d 1.000000",
        "illum 2",
        f"map_Kd {paths['diffuse'].name}",
        f"map_Ks {paths['specular'].name}",
        f"norm {paths['normals'].name}",
        f"map_Bump -bm 1.000000 {paths['normals'].name}",
        "",
    ]
    atomic_write_text(paths["mtl"], "\n".join(mtl))
    atomic_write_text(paths["obj"], _obj_text(base, paths["mtl"].name, mesh, vn))
    logger.info("exported %s (%d vertices, %d faces)", paths["obj"], len(mesh.vertices), len(mesh.faces))
    return paths


def _obj_text(base: str, mtl_name: str, mesh: AvatarMesh, vn: np.ndarray | None) -> str:
    stream = io.StringIO()
    stream.write(f"# FitDiff avatar: {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles, units mm\n")
    stream.write(f"mtllib {mtl_name}\n")
    stream.write(f"o {base}\n")
    np.savetxt(stream, mesh.vertices, fmt="v %.6f %.6f %.6f")
    np.savetxt(stream, mesh.uvs, fmt="vt %.6f %.6f")
    if vn is not None:
        np.savetxt(stream, vn, fmt="vn %.6f %.6f %.6f")
    stream.write(f"usemtl {base}\ns 1\n")
    tri, tex_tri = mesh.faces, mesh.uv_faces
    if vn is None:
        corners = np.stack([tri, tex_tri], -1).reshape(len(tri), 6) + 1
        np.savetxt(stream, corners, fmt="f %d/%d %d/%d %d/%d")
    else:
        corners = np.stack([tri, tex_tri, tri], -1).reshape(len(tri), 9) + 1
        np.savetxt(stream, corners, fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    return stream.getvalue()


def _index(token: str, count: int) -> int:
    value = int(token)
    return value - 1 if value > 0 else count + value  # OBJ: 1-based, negative = relative to the end


def _read_mtl(path: Path) -> tuple[dict[str, Path], str | None]:
    maps: dict[str, Path] = {}
    encoding = None
    for line in path.read_text().splitlines():
        if line.startswith(_ENCODING_TAG):
            encoding = line[len(_ENCODING_TAG) :].strip() or None
            continue
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("map_Kd", "map_Ks", "norm", "map_Bump", "bump"):
            maps[parts[0]] = (path.parent / parts[-1]).resolve()
    return maps, encoding


def load_obj(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an OBJ (as written by :func:`export_obj`; polygons are fan-triangulated).

    Returns:
        dict with ``vertices`` (V, 3) float64, ``faces`` (F, 3) int64 0-based, ``uvs`` (T, 2),
        ``uv_faces`` (F, 3) (empty when absent), ``vertex_normals`` (N, 3) and ``vertex_normal_faces``
        (F, 3) (``vn`` records, empty when absent), ``mtllib`` path or None, ``materials`` {map keyword:
        absolute path} from the MTL (``map_Kd``, ``map_Ks``, ``norm``, ``map_Bump``), and
        ``colour_encoding`` (``"srgb"``, ``"linear"`` or None when the MTL does not say: pass
        ``srgb=colour_encoding == "srgb"`` to :func:`fitdiff.export.read_texture`).
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
    materials, encoding = _read_mtl(mtllib) if mtllib is not None and mtllib.is_file() else ({}, None)
    return {
        "vertices": np.asarray(verts, dtype=np.float64).reshape(-1, 3),
        "faces": np.asarray(faces, dtype=np.int64).reshape(-1, 3),
        "uvs": np.asarray(tex, dtype=np.float64).reshape(-1, 2),
        "uv_faces": np.asarray(tex_faces, dtype=np.int64).reshape(-1, 3),
        "vertex_normals": np.asarray(nrm, dtype=np.float64).reshape(-1, 3),
        "vertex_normal_faces": np.asarray(nrm_faces, dtype=np.int64).reshape(-1, 3),
        "mtllib": mtllib,
        "materials": materials,
        "colour_encoding": encoding,
    }
