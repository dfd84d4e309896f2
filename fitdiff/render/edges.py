"""Edge functions and the fill rule of the rasteriser, the triangles it may draw, and point-to-triangle
distances for its soft band.

Coverage. A pixel centre p is inside a triangle when each of its three oriented edge functions
``E(p) = A x + B y + C`` (positive inside, pixel coordinates with y down) is positive. A centre exactly on
an edge (``E(p) == 0``) follows the top-left rule: it belongs to the triangle only if that edge is a
*left* edge (the interior lies toward +x: ``A > 0``) or a *top* edge (horizontal, interior below:
``A == 0 and B > 0``). This is the same as testing the point moved by an infinitesimal (+d, +d^2), so a
centre on an edge shared by two triangles, or on a vertex shared by a closed fan, is drawn exactly once,
whichever way the triangles are wound.

Watertightness. The edge shared by two triangles is evaluated from the same origin (its lower-numbered
vertex) with the same direction in both, and orientation only flips signs (exact in floating point), so
both triangles see bit-identical values of opposite sign: no pixel centre on a shared edge is dropped or
drawn twice, even when rounding makes ``E(p)`` differ from its exact value.
"""

from __future__ import annotations

import torch

__all__ = ["signed_area2", "drawable_faces", "edge_functions", "tie_breaks", "inside", "point_triangle_distance"]


def signed_area2(tri_xy: torch.Tensor) -> torch.Tensor:
    """(..., 3, 2) pixel-space corners -> (...) twice the signed area (y down).

    A triangle counter-clockwise as seen by the camera (front-facing) has a negative value."""
    x0, y0 = tri_xy[..., 0, 0], tri_xy[..., 0, 1]
    return (tri_xy[..., 1, 0] - x0) * (tri_xy[..., 2, 1] - y0) - (tri_xy[..., 1, 1] - y0) * (tri_xy[..., 2, 0] - x0)


@torch.no_grad()
def drawable_faces(
    tri_xy: torch.Tensor, tri_z: torch.Tensor, cull_backfaces: bool, znear: float, zfar: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which triangles may be drawn.

    Args:
        tri_xy: (B, F, 3, 2) projected corners in pixels; tri_z: (B, F, 3) corner depths.

    Returns:
        drawable (B, F) bool: all corners beyond ``znear``, some corner before ``zfar``, non-degenerate,
        finite, and front-facing when ``cull_backfaces``; front (B, F) bool: counter-clockwise as seen by
        the camera.
    """
    area2 = signed_area2(tri_xy)
    front = area2 < 0
    z0, z1, z2 = tri_z.unbind(-1)
    drawable = (z0 > znear) & (z1 > znear) & (z2 > znear) & (torch.minimum(torch.minimum(z0, z1), z2) < zfar)
    drawable &= (area2.abs() > 1e-12) & torch.isfinite(area2)
    if cull_backfaces:
        drawable &= front
    return drawable, front


def edge_functions(tri_xy: torch.Tensor, tri_faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Oriented edge-function coefficients and top-left ownership of each edge.

    Args:
        tri_xy: (L, 3, 2) projected corners in pixels (non-degenerate triangles, either winding).
        tri_faces: (L, 3) their vertex indices (they pick each edge's origin, see the module notes).

    Returns:
        coef (L, 3, 3): rows (A, B, C) of the edge opposite each corner, oriented so that
        ``(A x + B y + C) / |area2|`` is the screen barycentric of that corner (positive inside);
        owns (L, 3) bool: the edge is a top or left edge, so points exactly on it are inside.
    """
    # The edge opposite corner i runs from corner i+1 to corner i+2 (roll: a fast copy, unlike a gather
    # along dim 1).
    swap = tri_faces.roll(-1, 1) > tri_faces.roll(-2, 1)  # origin = lower-numbered vertex
    pa, pb = tri_xy.roll(-1, 1), tri_xy.roll(-2, 1)
    origin = torch.where(swap.unsqueeze(-1), pb, pa)
    d = torch.where(swap.unsqueeze(-1), pa, pb) - origin
    coef = torch.stack([-d[..., 1], d[..., 0], d[..., 1] * origin[..., 0] - d[..., 0] * origin[..., 1]], dim=-1)
    sign = torch.sign(signed_area2(tri_xy)).unsqueeze(-1)
    orient = sign - 2.0 * sign * swap.to(sign.dtype)  # (L, 3) in {-1, +1}
    coef = coef * orient.unsqueeze(-1)  # exact: only signs change
    a, b = coef[..., 0], coef[..., 1]
    owns = (a > 0) | ((a == 0) & (b > 0))
    return coef, owns


_INT_OF_WIDTH = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def tie_breaks(owns: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-edge integer thresholds for :func:`inside`: 0 where the edge is owned, 1 elsewhere, in the
    signed integer type as wide as the floating ``dtype`` of the edge values."""
    return (~owns).to(_INT_OF_WIDTH[torch.finfo(dtype).bits // 8])


def inside(e: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """(P,) bool coverage under the top-left rule from (P, 3) oriented edge values and their (P, 3)
    :func:`tie_breaks`.

    Floats of one sign order like their bit patterns read as signed integers, and negative floats read as
    negative integers, so ``bits >= 0`` is ``e >= 0`` (owned edges) and ``bits >= 1`` is ``e > 0``
    (others): one comparison per edge instead of two and a select. (-0.0 reads as negative, but the edge
    values of a non-degenerate edge are never -0.0: they end with a sum that is +0.0 when exact zero.)"""
    test = e.view(ties.dtype) >= ties
    return test[:, 0] & test[:, 1] & test[:, 2]


def point_triangle_distance(p: torch.Tensor, tri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance from 2-D points (P, 2) to triangles (P, 3, 2) assumed not to contain them, and the
    barycentrics (P, 3) of the nearest point (on the nearest edge)."""
    best_d2 = None
    best_bary = None
    for i in range(3):
        a = tri[:, (i + 1) % 3]
        b = tri[:, (i + 2) % 3]
        ab = b - a
        s = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0.0, 1.0)
        q = a + s.unsqueeze(-1) * ab
        d2 = ((p - q) ** 2).sum(-1)
        bary = torch.zeros_like(tri[..., 0])
        bary = bary.index_copy(1, torch.tensor([(i + 1) % 3], device=p.device), (1 - s).unsqueeze(-1))
        bary = bary.index_copy(1, torch.tensor([(i + 2) % 3], device=p.device), s.unsqueeze(-1))
        if best_d2 is None:
            best_d2, best_bary = d2, bary
        else:
            closer = d2 < best_d2
            best_d2 = torch.where(closer, d2, best_d2)
            best_bary = torch.where(closer.unsqueeze(-1), bary, best_bary)
    return (best_d2 + 1e-12).sqrt(), best_bary
