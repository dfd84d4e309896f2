"""An avatar as one binary glTF 2.0 file (``.glb``): mesh, UVs, normals, tangents and a PBR material.

Conventions (what a viewer such as Blender or three.js receives):

- Units and frame: glTF positions are metres, so the model's millimetres are scaled by
  ``metres_per_unit`` (default 1e-3). The project frame (+y up, the face looks toward +z, right-handed)
  is glTF's own (+Y up, an asset's front faces +Z), so no rotation is applied. Triangles keep their
  counter-clockwise winding (glTF front faces).
- Vertices: glTF has one index per vertex, so vertices on UV seams are split into one vertex per
  (position, uv) pair (:func:`fitdiff.export.tangents.split_uv_seams`); unused vertices are dropped.
- UVs: glTF puts the texture origin at the TOP-left (t down) whereas ours is OBJ's bottom-left (v up):
  TEXCOORD_0 = (u, 1 - v). Images are stored row 0 = top in both, so they are not flipped.
- NORMAL and TANGENT are the renderer's area-weighted vertex normals and UV tangent frames with the
  handedness in TANGENT.w (:mod:`fitdiff.export.tangents`): viewers shade the normal map in the frame the
  model's renderer used instead of recomputing MikkTSpace tangents.
- Material (metallic-roughness, metallicFactor 0):
  baseColorTexture = diffuse albedo, sRGB-encoded as glTF requires (viewers decode it back to the model's
  linear albedo); normalTexture = the tangent-space normal map, (n + 1) / 2 linear (+X = +u, +Y = up the
  image, +Z = out of the surface: the glTF convention and ours), object-space maps converted first;
  ``KHR_materials_specular``: specularColorTexture = specular albedo (sRGB-encoded, as the extension
  requires), specularColorFactor = ``specular_color_factor`` (default 2: dielectric F0 = 0.04 x 2 x
  specular albedo, the extension's "reflectance" conversion, so albedo 0.5 gives glTF's default F0 of
  0.04), specularFactor 1. roughnessFactor defaults to the GGX roughness matching the scene's
  Blinn-Phong exponent s: alpha = sqrt(2 / (s + 2)) and roughness = sqrt(alpha) (0.527 for s = 24).
  Viewers without the extension show glTF's default F0 of 0.04.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from fitdiff.export.checks import AvatarMaps, AvatarMesh, check_maps, check_mesh, resolve_target
from fitdiff.export.glb import ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, BufferBuilder, pack_glb
from fitdiff.export.images import encode_png, linear_to_srgb
from fitdiff.export.obj import DEFAULT_SHININESS
from fitdiff.export.tangents import object_to_tangent_normals, split_uv_seams, vertex_frames
from fitdiff.io import atomic_write_bytes

__all__ = ["export_glb", "glb_document", "roughness_from_shininess", "SPECULAR_EXTENSION", "NORMAL_SPACES"]

logger = logging.getLogger(__name__)

SPECULAR_EXTENSION = "KHR_materials_specular"
NORMAL_SPACES = ("tangent", "object")
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_TRIANGLES = 4


def roughness_from_shininess(shininess: float) -> float:
    """glTF roughness whose GGX lobe matches a Blinn-Phong exponent: sqrt(sqrt(2 / (shininess + 2)))."""
    if not shininess > 0:
        raise ValueError(f"shininess must be > 0, got {shininess}")
    return math.sqrt(math.sqrt(2.0 / (shininess + 2.0)))


def glb_document(
    mesh: AvatarMesh,
    maps: AvatarMaps,
    name: str,
    *,
    metres_per_unit: float = 1e-3,
    normals_bits: int = 8,
    specular_color_factor: float = 2.0,
    roughness: float,
    double_sided: bool = False,
) -> tuple[dict[str, Any], bytes]:
    """The glTF JSON document and BIN buffer of a validated mesh with tangent-space maps (see the module
    docstring for every convention)."""
    split = split_uv_seams(mesh)
    frames = vertex_frames(mesh)
    positions = (mesh.vertices[split.vertex] * metres_per_unit).astype(np.float32)
    tangents = np.concatenate([frames.tangents, frames.handedness[:, None]], axis=1)[split.vertex]
    uv = mesh.uvs[split.uv]
    texcoords = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1)
    index_type = np.uint16 if len(positions) < 65535 else np.uint32  # 65535: the primitive-restart value

    buffer = BufferBuilder()
    attributes = {
        "POSITION": buffer.add_accessor(positions, ARRAY_BUFFER, bounds=True),
        "NORMAL": buffer.add_accessor(frames.normals[split.vertex].astype(np.float32), ARRAY_BUFFER),
        "TANGENT": buffer.add_accessor(tangents.astype(np.float32), ARRAY_BUFFER),
        "TEXCOORD_0": buffer.add_accessor(texcoords.astype(np.float32), ARRAY_BUFFER),
    }
    indices = buffer.add_accessor(split.faces.reshape(-1).astype(index_type), ELEMENT_ARRAY_BUFFER)
    specular = maps.specular if maps.specular.shape[0] == 3 else np.repeat(maps.specular, 3, axis=0)
    pngs = {
        "diffuse": encode_png(linear_to_srgb(maps.diffuse), 8),
        "specular": encode_png(linear_to_srgb(specular), 8),
        "normals": encode_png((maps.normals + 1.0) / 2.0, normals_bits),
    }
    images = [
        {"name": f"{name}_{key}", "mimeType": "image/png", "bufferView": buffer.add_view(data)}
        for key, data in pngs.items()
    ]
    texture = {key: {"index": i} for i, key in enumerate(pngs)}
    material: dict[str, Any] = {
        "name": name,
        "pbrMetallicRoughness": {
            "baseColorTexture": texture["diffuse"],
            "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
            "metallicFactor": 0.0,
            "roughnessFactor": float(roughness),
        },
        "normalTexture": {**texture["normals"], "scale": 1.0},
        "extensions": {
            SPECULAR_EXTENSION: {
                "specularFactor": 1.0,
                "specularColorFactor": [float(specular_color_factor)] * 3,
                "specularColorTexture": texture["specular"],
            }
        },
        "doubleSided": bool(double_sided),
    }
    document: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "FitDiff avatar export"},
        "extensionsUsed": [SPECULAR_EXTENSION],
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [
            {
                "name": name,
                "primitives": [
                    {"attributes": attributes, "indices": indices, "material": 0, "mode": _TRIANGLES}
                ],
            }
        ],
        "materials": [material],
        "samplers": [
            {
                "magFilter": _LINEAR,
                "minFilter": _LINEAR_MIPMAP_LINEAR,
                "wrapS": _CLAMP_TO_EDGE,
                "wrapT": _CLAMP_TO_EDGE,
            }
        ],
        "textures": [{"sampler": 0, "source": i, "name": image["name"]} for i, image in enumerate(images)],
        "images": images,
        "accessors": buffer.accessors,
        "bufferViews": buffer.buffer_views,
        "extras": {
            "units": "m",
            "metres_per_model_unit": float(metres_per_unit),
            "model_units": "mm",
            "frame": "+y up, face toward +z",
            "normal_map": "tangent space, +x along +u, +y up the image, +z out of the surface",
            "colour_maps": "sRGB-encoded linear albedo",
        },
    }
    return document, buffer.data


def export_glb(
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
    normal_space: str = "tangent",
    metres_per_unit: float = 1e-3,
    normals_bits: int = 8,
    specular_color_factor: float = 2.0,
    roughness: float | None = None,
    shininess: float = DEFAULT_SHININESS,
    double_sided: bool = False,
) -> Path:
    """Write an avatar as one binary glTF 2.0 file (written atomically).

    Args:
        path: a folder (existing, or ending in a separator; the file is ``{name}.glb``), a path ending in
            ``.glb``, or a prefix such as ``out/face`` (-> ``out/face.glb``).
        vertices: (V, 3) positions in mm (scaled to metres, see ``metres_per_unit``).
        faces: (F, 3) 0-based vertex indices, counter-clockwise seen from outside.
        uvs: (T, 2) texture coordinates in [0, 1], v = 0 at the bottom of the image.
        uv_faces: (F, 3) 0-based indices into ``uvs`` (None: ``faces``, one UV per vertex).
        diffuse: (3, H, W) linear diffuse albedo in [0, 1], row 0 = top.
        specular: (1 or 3, H, W) linear specular albedo in [0, 1].
        normals: (3, H, W) unit normals in [-1, 1], in ``normal_space``.
        name: name of the scene, node, mesh and material, and the file's base name.
        normal_space: ``"tangent"`` (the dataset's and renderer's default) or ``"object"`` (converted to
            tangent space with the exported frames).
        metres_per_unit: scale from the vertices' unit to metres (1e-3 for mm).
        normals_bits: 8 (default, what browsers decode) or 16 bits per channel for the normal map.
        specular_color_factor: dielectric F0 = 0.04 x factor x specular albedo (clamped to 1 by viewers).
        roughness: glTF roughnessFactor in [0, 1]; None derives it from ``shininess``.
        shininess: Blinn-Phong exponent the maps were rendered with (for the default roughness).
        double_sided: render back faces too (the face mesh is an open surface).

    Returns:
        The path of the ``.glb`` file.
    """
    folder, base = resolve_target(path, name, ".glb")
    mesh = check_mesh(vertices, faces, uvs, uv_faces)
    maps = check_maps(diffuse, specular, normals)
    if normal_space not in NORMAL_SPACES:
        raise ValueError(f"normal_space must be one of {NORMAL_SPACES}, got {normal_space!r}")
    if normals_bits not in (8, 16):
        raise ValueError(f"normals_bits must be 8 or 16, got {normals_bits}")
    if not metres_per_unit > 0:
        raise ValueError(f"metres_per_unit must be > 0, got {metres_per_unit}")
    if not specular_color_factor >= 0:
        raise ValueError(f"specular_color_factor must be >= 0, got {specular_color_factor}")
    rough = roughness_from_shininess(shininess) if roughness is None else float(roughness)
    if not 0.0 <= rough <= 1.0:
        raise ValueError(f"roughness must lie in [0, 1], got {rough}")
    if normal_space == "object":
        maps = AvatarMaps(maps.diffuse, maps.specular, object_to_tangent_normals(mesh, maps.normals))
    document, binary = glb_document(
        mesh, maps, base, metres_per_unit=metres_per_unit, normals_bits=normals_bits,
        specular_color_factor=specular_color_factor, roughness=rough, double_sided=double_sided,
    )  # fmt: skip
    target = atomic_write_bytes(folder / f"{base}.glb", pack_glb(document, binary))
    logger.info("exported %s (%d vertices, %d faces)", target, len(mesh.vertices), len(mesh.faces))
    return target
