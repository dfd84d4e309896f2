"""Mesh maths shared by the renderer and the shape models: face / vertex normals and tangent frames.

All functions are batched over meshes that share one triangle list, differentiable, and follow the
device and dtype of ``vertices``. Conventions: triangles counter-clockwise seen from outside, so face
normals point outwards by the right-hand rule; tangents follow +u and bitangents +v of the UV layout.

Internally values are laid out vertex- and face-major, (V, B, C) and (F, B, C), so that gathering
triangle corners and summing faces onto vertices index the first axis: on CPU ``index_select`` /
``index_add_`` along dim 0 run 5-10x faster than along dim 1, forward and backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["face_normals", "vertex_normals", "tangent_frames"]

_EPS = 1e-12


def _check(vertices: torch.Tensor, faces: torch.Tensor) -> None:
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(faces.shape)}")


def _corners(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three corner positions of every triangle, each (F, B, 3) (face-major, see module notes)."""
    batch, n_vertices, _ = vertices.shape
    rows = vertices.transpose(0, 1).reshape(n_vertices, batch * 3)
    gathered = rows.index_select(0, faces.t().reshape(-1))  # corner-major: all corners 0, then 1, then 2
    return gathered.view(3, faces.shape[0], batch, 3).unbind(0)


def _face_cross(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(F, B, 3) cross products (v1 - v0) x (v2 - v0): direction = normal, length = 2 x area."""
    v0, v1, v2 = _corners(vertices, faces)
    return _cross(v1 - v0, v2 - v0)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit outward normals of each triangle.

    Args:
        vertices: (B, V, 3) positions.
        faces: (F, 3) long vertex indices, counter-clockwise seen from outside.

    Returns:
        (B, F, 3) unit vectors (zero-area triangles give a zero vector).
    """
    _check(vertices, faces)
    return F.normalize(_face_cross(vertices, faces), dim=-1, eps=_EPS).transpose(0, 1)


def _scatter_to_vertices(per_face: torch.Tensor, faces: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """Sum an (F, B, C) per-face quantity onto the three corners of each face -> (V, B, C)."""
    n_faces, batch, channels = per_face.shape
    rows = per_face.reshape(n_faces, batch * channels)
    out = rows.new_zeros(n_vertices, batch * channels)
    for corner in range(3):
        out.index_add_(0, faces[:, corner], rows)
    return out.view(n_vertices, batch, channels)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product over the last axis; written out because torch.cross is slow on CPU for (B, F, 3)."""
    ax, ay, az = a.unbind(-1)
    bx, by, bz = b.unbind(-1)
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=-1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Args:
        vertices: (B, V, 3) positions.
        faces: (F, 3) long vertex indices, counter-clockwise seen from outside.

    Returns:
        (B, V, 3) unit normals; vertices used by no triangle get a zero vector.
    """
    _check(vertices, faces)
    summed = _scatter_to_vertices(_face_cross(vertices, faces), faces, vertices.shape[1])
    return F.normalize(summed, dim=-1, eps=_EPS).transpose(0, 1)


def tangent_frames(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    uv_faces: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-vertex tangent frames (T, B, N) for tangent-space normal mapping.

    The tangent is the surface direction of increasing u and the bitangent that of increasing v, solved
    per triangle from its UV parametrisation, accumulated on vertices with area weighting, then
    Gram-Schmidt orthogonalised against the vertex normal. A vertex that appears with several UVs (a seam)
    averages the frames of its corners. The bitangent is rebuilt as N x T and flipped where the UV layout
    is mirrored so that it keeps pointing along +v.

    Args:
        vertices: (B, V, 3) positions.
        faces: (F, 3) long vertex indices.
        uvs: (T, 2) texture coordinates in [0, 1] (v = 0 at the bottom of the image).
        uv_faces: (F, 3) long indices into ``uvs``.

    Returns:
        tangents, bitangents, normals: each (B, V, 3), unit length.
    """
    _check(vertices, faces)
    if uv_faces.shape != faces.shape:
        raise ValueError(f"uv_faces {tuple(uv_faces.shape)} must match faces {tuple(faces.shape)}")
    if uvs.dim() != 2 or uvs.shape[-1] != 2:
        raise ValueError(f"uvs must be (T, 2), got {tuple(uvs.shape)}")
    p0, p1, p2 = _corners(vertices, faces)
    uv = uvs.to(vertices.dtype)
    t0, t1, t2 = uv.index_select(0, uv_faces.reshape(-1)).view(-1, 3, 2).unbind(1)
    e1, e2 = p1 - p0, p2 - p0  # (F, B, 3)
    d1, d2 = (t1 - t0).unsqueeze(1), (t2 - t0).unsqueeze(1)  # (F, 1, 2)
    # Solve [e1; e2] = [[du1, dv1], [du2, dv2]] [T; B]; multiplying by det keeps weights area-proportional
    # and avoids dividing by tiny UV areas.
    det = d1[..., 0:1] * d2[..., 1:2] - d2[..., 0:1] * d1[..., 1:2]  # (F, 1, 1) signed 2x UV area
    sign = torch.where(det < 0, -1.0, 1.0).to(vertices.dtype)
    tan_face = e1 * (d2[..., 1:2] * sign) - e2 * (d1[..., 1:2] * sign)
    bit_face = e2 * (d1[..., 0:1] * sign) - e1 * (d2[..., 0:1] * sign)
    normal_face = _cross(e1, e2)

    # one scatter for the three per-face vectors
    summed = _scatter_to_vertices(torch.cat([normal_face, tan_face, bit_face], -1), faces, vertices.shape[1])
    normals = F.normalize(summed[..., 0:3], dim=-1, eps=_EPS)
    tangent, bitangent = summed[..., 3:6], summed[..., 6:9]

    tangent = F.normalize(tangent - (tangent * normals).sum(-1, keepdim=True) * normals, dim=-1, eps=_EPS)
    rebuilt = _cross(normals, tangent)
    handed = torch.where((rebuilt * bitangent).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(vertices.dtype)
    return tangent.transpose(0, 1), (rebuilt * handed).transpose(0, 1), normals.transpose(0, 1)
