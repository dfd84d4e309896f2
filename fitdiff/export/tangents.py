"""Tangent frames for export: per-vertex glTF attributes and object- to tangent-space normal maps.

Both use the renderer's frames (:func:`fitdiff.render.mesh.tangent_frames`): tangent T along +u,
bitangent B along +v (v = 0 at the bottom image row, i.e. B points up the texture image), normal N; per
vertex, B = cross(N, T) * w with w = +1 or -1 (mirrored UVs). glTF's TANGENT attribute is (T, w) with
exactly this rule and its normal textures are +X right, +Y up the image, so a viewer given these
tangents shades with the renderer's frame, and one that recomputes MikkTSpace tangents gets a frame
that differs only by MikkTSpace's own weighting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from fitdiff.export.checks import AvatarMesh
from fitdiff.render.interpolate import interpolate_face_attributes
from fitdiff.render.mesh import tangent_frames
from fitdiff.render.rasterizer import rasterize

__all__ = ["VertexFrames", "SplitVertices", "vertex_frames", "split_uv_seams", "object_to_tangent_normals"]

_DEGENERATE = 1e-8


@dataclass(frozen=True)
class VertexFrames:
    """Unit tangent (V, 3), handedness w (V,) in {-1, +1} and unit normal (V, 3) of every vertex."""

    tangents: np.ndarray
    handedness: np.ndarray
    normals: np.ndarray


@dataclass(frozen=True)
class SplitVertices:
    """A mesh re-indexed so each vertex has one position and one UV (what glTF needs).

    Attributes:
        vertex: (N,) index of each new vertex into the original vertices.
        uv: (N,) index of each new vertex into the original UVs.
        faces: (F, 3) triangles over the new vertices (same order and winding as the input).
    """

    vertex: np.ndarray
    uv: np.ndarray
    faces: np.ndarray


def split_uv_seams(mesh: AvatarMesh) -> SplitVertices:
    """One new vertex per distinct (vertex, uv) corner pair, sorted by vertex then uv index; vertices no
    triangle uses are dropped. A mesh with ``uv_faces == faces`` using all vertices keeps its order."""
    n_uvs = max(len(mesh.uvs), 1)
    keys = mesh.faces * n_uvs + mesh.uv_faces
    unique, inverse = np.unique(keys.reshape(-1), return_inverse=True)
    return SplitVertices(unique // n_uvs, unique % n_uvs, inverse.reshape(mesh.faces.shape).astype(np.int64))


def _frames_tensor(mesh: AvatarMesh) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The renderer's (T, B, N) per vertex, each (V, 3) float64."""
    t, b, n = tangent_frames(
        torch.from_numpy(mesh.vertices)[None],
        torch.from_numpy(mesh.faces),
        torch.from_numpy(mesh.uvs),
        torch.from_numpy(mesh.uv_faces),
    )
    return t[0], b[0], n[0]


def _any_perpendicular(n: np.ndarray) -> np.ndarray:
    """A unit vector perpendicular to each unit row of (N, 3) ``n``."""
    helper = np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    p = np.cross(n, helper)
    return p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), _DEGENERATE)


def vertex_frames(mesh: AvatarMesh) -> VertexFrames:
    """The renderer's tangent frame of every vertex as glTF wants it (unit T, w = +-1, unit N).

    Vertices without a usable frame (no triangle, zero-area or zero-UV-area triangles only) get N = +z
    and any T perpendicular to N, so every exported tangent is unit length as the specification requires.
    """
    t, b, n = (x.numpy() for x in _frames_tensor(mesh))
    bad_n = np.linalg.norm(n, axis=1) < 0.5
    n = np.where(bad_n[:, None], [[0.0, 0.0, 1.0]], n)
    bad_t = (np.linalg.norm(t, axis=1) < 0.5) | bad_n
    t = np.where(bad_t[:, None], _any_perpendicular(n), t)
    w = np.where(np.einsum("ij,ij->i", np.cross(n, t), b) < 0.0, -1.0, 1.0)
    return VertexFrames(tangents=t, handedness=w, normals=n)


def object_to_tangent_normals(mesh: AvatarMesh, normals: np.ndarray) -> np.ndarray:
    """Re-express an object-space normal UV map in the renderer's tangent space (and glTF's).

    Each texel centre is located on the mesh by rasterising the triangles in UV space; the frame there is
    the barycentric blend of the corners' (T, B, N), as the renderer interpolates it, and the tangent-
    space normal is the direction n_t with normalize(x T + y B + z N) = n_object. Texels outside the UV
    charts take the frame of the nearest covered texel, so bilinear filtering across chart borders stays
    consistent.

    Args:
        mesh: the mesh the map belongs to (mm, UVs with v = 0 at the bottom row).
        normals: (3, H, W) unit object-space normals, row 0 = top of the image.

    Returns:
        (3, H, W) unit tangent-space normals (x along +u, y along +v, z along the surface normal).
    """
    if normals.ndim != 3 or normals.shape[0] != 3:
        raise ValueError(f"normals must be (3, H, W), got {normals.shape}")
    height, width = normals.shape[1:]
    t, b, n = _frames_tensor(mesh)
    uv = torch.from_numpy(mesh.uvs)
    xy = torch.stack([uv[:, 0] * width, (1.0 - uv[:, 1]) * height], -1)[None]
    frags = rasterize(
        xy, torch.ones(1, len(uv), dtype=xy.dtype), torch.from_numpy(mesh.uv_faces), (height, width),
        perspective=False, cull_backfaces=False, znear=0.5, zfar=2.0,
    )  # fmt: skip
    per_texel = interpolate_face_attributes(frags, torch.cat([t, b, n], -1), torch.from_numpy(mesh.faces))
    frames = np.zeros((height * width, 9))
    frames[frags.pixel_index.numpy()] = per_texel.numpy()
    covered = frags.pix_to_face[0].numpy() >= 0
    if not covered.any():
        raise ValueError(f"no texel of the {height}x{width} map lies inside the mesh's UV triangles")
    if not covered.all():
        nearest = ndimage.distance_transform_edt(~covered, return_distances=False, return_indices=True)
        frames = frames.reshape(height, width, 9)[nearest[0], nearest[1]].reshape(-1, 9)
    basis = frames.reshape(-1, 3, 3).transpose(0, 2, 1)  # columns T, B, N
    target = normals.reshape(3, -1).T
    det = np.linalg.det(basis)
    usable = np.abs(det) > _DEGENERATE
    out = np.tile([0.0, 0.0, 1.0], (len(target), 1))
    if usable.any():
        out[usable] = np.linalg.solve(basis[usable], target[usable][..., None])[..., 0]
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), _DEGENERATE)
    return out.T.reshape(3, height, width)
