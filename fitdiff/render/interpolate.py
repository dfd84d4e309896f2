"""Barycentric interpolation of per-vertex and per-corner attributes at rasterised pixels."""

from __future__ import annotations

import torch

from fitdiff.render.fragments import Fragments

__all__ = ["interpolate_vertex_attributes", "interpolate_face_attributes"]


def _blend(table: torch.Tensor, corner_rows: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """sum_i bary[:, i] * table[corner_rows[:, i]] for (R, C) table, (N, 3) rows, (N, 3) weights -> (N, C)."""
    bary = bary.to(table.dtype)
    out = None
    for i in range(3):
        term = table.index_select(0, corner_rows[:, i]) * bary[:, i : i + 1]
        out = term if out is None else out + term
    assert out is not None
    return out


def interpolate_vertex_attributes(fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at every packed pixel.

    Args:
        fragments: rasteriser output for meshes with V vertices.
        attributes: (B, V, C) per-vertex values (positions, normals, colours, ...).

    Returns:
        (N, C) perspective-correct interpolated values, differentiable w.r.t. ``attributes`` and the
        barycentrics (hence vertex positions and camera).
    """
    if attributes.dim() != 3 or attributes.shape[0] != fragments.batch_size:
        raise ValueError(f"attributes must be ({fragments.batch_size}, V, C), got {tuple(attributes.shape)}")
    flat = attributes.reshape(-1, attributes.shape[-1])
    if fragments.num_packed and int(fragments.vertex_index.max()) >= flat.shape[0]:
        raise ValueError(f"attributes {tuple(attributes.shape)} has fewer vertices than the rasterised mesh")
    return _blend(flat, fragments.vertex_index, fragments.bary)


def interpolate_face_attributes(
    fragments: Fragments, values: torch.Tensor, value_faces: torch.Tensor
) -> torch.Tensor:
    """Interpolate attributes indexed per triangle corner, e.g. UVs with seams.

    Args:
        fragments: rasteriser output.
        values: (T, C) shared by the batch, or (B, T, C) per mesh.
        value_faces: (F, 3) long indices into ``values`` for each triangle corner.

    Returns:
        (N, C) interpolated values at every packed pixel.
    """
    if value_faces.dim() != 2 or value_faces.shape[-1] != 3:
        raise ValueError(f"value_faces must be (F, 3), got {tuple(value_faces.shape)}")
    idx = value_faces.to(fragments.face_index.device).index_select(0, fragments.face_index)  # (N, 3)
    if values.dim() == 2:
        flat = values
    elif values.dim() == 3 and values.shape[0] == fragments.batch_size:
        flat = values.reshape(-1, values.shape[-1])
        idx = idx + (fragments.batch_index * values.shape[1]).unsqueeze(1)
    else:
        raise ValueError(f"values must be (T, C) or ({fragments.batch_size}, T, C), got {tuple(values.shape)}")
    return _blend(flat, idx, fragments.bary)
