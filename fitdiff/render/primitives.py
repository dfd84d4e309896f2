"""Simple analytic meshes (sphere, plane) with UVs, for tests, benchmarks and debugging."""

from __future__ import annotations

import math

import torch

__all__ = ["uv_sphere", "grid_plane"]


def uv_sphere(
    n_lat: int = 32, n_lon: int = 64, radius: float = 1.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A closed latitude-longitude sphere centred at the origin, poles on +/-y.

    Args:
        n_lat: number of latitude bands (>= 2); n_lon: number of longitude segments (>= 3).
        radius: in world units.

    Returns:
        vertices (V, 3) shared across the seam, faces (F, 3) counter-clockwise seen from outside,
        uvs (T, 2) (u = longitude / 2 pi, v = 0 at the south pole), uv_faces (F, 3).
        V = 2 + (n_lat - 1) n_lon, F = 2 n_lon (n_lat - 1).
    """
    if n_lat < 2 or n_lon < 3:
        raise ValueError(f"need n_lat >= 2 and n_lon >= 3, got {n_lat}, {n_lon}")
    theta = torch.arange(1, n_lat, dtype=torch.float64) * math.pi / n_lat  # polar angle from +y
    phi = torch.arange(n_lon, dtype=torch.float64) * 2.0 * math.pi / n_lon
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([th.sin() * ph.sin(), th.cos(), th.sin() * ph.cos()], -1).reshape(-1, 3)
    verts = torch.cat([ring.new_tensor([[0.0, 1.0, 0.0]]), ring, ring.new_tensor([[0.0, -1.0, 0.0]])])
    north, south = 0, verts.shape[0] - 1

    def vid(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:  # ring i in [0, n_lat - 2], column j
        return 1 + i * n_lon + j % n_lon

    # UV grid with a duplicated seam column: (n_lat + 1) rows x (n_lon + 1) columns.
    us = torch.arange(n_lon + 1, dtype=torch.float64) / n_lon
    vs = 1.0 - torch.arange(n_lat + 1, dtype=torch.float64) / n_lat
    vv, uu = torch.meshgrid(vs, us, indexing="ij")
    uvs = torch.stack([uu, vv], -1).reshape(-1, 2)

    def tid(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:  # uv grid row in [0, n_lat]
        return row * (n_lon + 1) + col

    j = torch.arange(n_lon)
    faces, uv_faces = [], []
    # Counter-clockwise from outside: with phi increasing toward +x from +z, seen from outside
    # "east" (j + 1) is to the right and "south" (i + 1) is down.
    zero = torch.zeros_like(j)
    faces.append(torch.stack([zero + north, vid(zero, j), vid(zero, j + 1)], -1))
    uv_faces.append(torch.stack([tid(zero, j), tid(zero + 1, j), tid(zero + 1, j + 1)], -1))
    for i in range(n_lat - 2):
        ii = torch.full_like(j, i)
        a, b, c, d = vid(ii, j), vid(ii, j + 1), vid(ii + 1, j), vid(ii + 1, j + 1)
        ta, tb, tc, td = tid(ii + 1, j), tid(ii + 1, j + 1), tid(ii + 2, j), tid(ii + 2, j + 1)
        faces += [torch.stack([a, c, d], -1), torch.stack([a, d, b], -1)]
        uv_faces += [torch.stack([ta, tc, td], -1), torch.stack([ta, td, tb], -1)]
    last = torch.full_like(j, n_lat - 2)
    faces.append(torch.stack([vid(last, j), zero + south, vid(last, j + 1)], -1))
    uv_faces.append(torch.stack([tid(last + 1, j), tid(last + 2, j), tid(last + 1, j + 1)], -1))
    return (
        (verts * radius).to(dtype),
        torch.cat(faces),
        uvs.to(dtype),
        torch.cat(uv_faces),
    )


def grid_plane(
    n: int = 8, size: float = 2.0, z: float = 0.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A square n x n-cell grid in the plane at depth ``z``, facing +z, centred on the z axis.

    Returns:
        vertices ((n + 1)^2, 3), faces (2 n^2, 3) counter-clockwise seen from +z, uvs ((n + 1)^2, 2)
        with u along +x and v along +y (uv_faces = faces).
    """
    coords = torch.linspace(-size / 2, size / 2, n + 1, dtype=torch.float64)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    verts = torch.stack([xs, ys, torch.full_like(xs, z)], -1).reshape(-1, 3)
    idx = torch.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    uvs = (verts[:, :2] / size + 0.5).to(dtype)
    return verts.to(dtype), faces, uvs
