"""Top-left fill rule: every pixel centre on a shared edge or vertex is drawn by exactly one triangle."""

from __future__ import annotations

import itertools

import pytest
import torch

from fitdiff.render.edges import edge_functions, inside, tie_breaks
from fitdiff.render.rasterizer import rasterize

SIZE = (48, 48)
# A 30 x 30-pixel square with its corners on pixel centres: top-left, top-right, bottom-right, bottom-left.
SQUARE = torch.tensor([[10.5, 10.5], [40.5, 10.5], [40.5, 40.5], [10.5, 40.5]], dtype=torch.float64)
# Both diagonals, each as two triangles counter-clockwise on screen (front-facing).
DIAGONALS = {"tl-br": [[0, 3, 2], [0, 2, 1]], "tr-bl": [[0, 3, 1], [1, 3, 2]]}


def _relabel(xy: torch.Tensor, faces: torch.Tensor, order: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The same mesh with vertex ``i`` renumbered ``order[i]`` (edge origins follow vertex numbers)."""
    perm = torch.tensor(order)
    new_xy = torch.empty_like(xy)
    new_xy[perm] = xy
    return new_xy, perm[faces]


def _coverage_counts(xy: torch.Tensor, faces: torch.Tensor, cull: bool) -> torch.Tensor:
    """(H, W) number of triangles covering each pixel centre, each triangle rasterised on its own."""
    counts = torch.zeros(SIZE, dtype=torch.long)
    for face in faces:
        frags = rasterize(xy[None], torch.ones(1, xy.shape[0], dtype=xy.dtype), face[None], SIZE,
                          cull_backfaces=cull)
        counts += (frags.pix_to_face[0] >= 0).long()
    return counts


def _square_mask() -> torch.Tensor:
    mask = torch.zeros(SIZE, dtype=torch.bool)
    mask[10:40, 10:40] = True  # centres 10.5 ... 39.5: left and top edges in, right and bottom out
    return mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 1, 0, 2), (2, 3, 1, 0)])
@pytest.mark.parametrize("wound", ["front", "back"])
@pytest.mark.parametrize("diagonal", sorted(DIAGONALS))
def test_pixel_aligned_square_covers_900_pixels_once(diagonal: str, wound: str, order: tuple, dtype):
    faces = torch.tensor(DIAGONALS[diagonal])
    if wound == "back":
        faces = faces[:, [0, 2, 1]]  # clockwise on screen: drawn only without back-face culling
    xy, faces = _relabel(SQUARE.to(dtype), faces, order)
    cull = wound == "front"
    frags = rasterize(xy[None], torch.ones(1, 4, dtype=dtype), faces, SIZE, cull_backfaces=cull)
    covered = frags.pix_to_face[0] >= 0
    assert int(covered.sum()) == 900
    assert torch.equal(covered, _square_mask())
    counts = _coverage_counts(xy, faces, cull)
    assert int(counts.max()) == 1 and int(counts.sum()) == 900  # the diagonal is not drawn twice


def _fan(offsets: list[tuple[int, int]], centre=(20.5, 20.5)) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangles (centre, ring i, ring i + 1) around a vertex on a pixel centre, counter-clockwise on
    screen; ``offsets`` are integer ring positions in angular order, so the spokes run through pixel
    centres."""
    ring = torch.tensor(offsets, dtype=torch.float64) + torch.tensor(centre, dtype=torch.float64)
    xy = torch.cat([torch.tensor([centre], dtype=torch.float64), ring])
    n = len(offsets)
    faces = torch.tensor([[0, 1 + i, 1 + (i + 1) % n] for i in range(n)])
    return xy, faces


def _strictly_inside_polygon(ring: torch.Tensor) -> torch.Tensor:
    """(H, W) pixel centres strictly inside a convex polygon given in screen order."""
    ys, xs = torch.meshgrid(torch.arange(SIZE[0]) + 0.5, torch.arange(SIZE[1]) + 0.5, indexing="ij")
    sides = []
    for a, b in zip(ring, ring.roll(-1, 0)):
        sides.append((b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0]))
    sides = torch.stack(sides)
    return (sides > 0).all(0) | (sides < 0).all(0)


FANS = {
    # 8 triangles: spokes along the axes and the diagonals, each through several pixel centres
    "axes": [(6, 0), (6, -6), (0, -6), (-6, -6), (-6, 0), (-6, 6), (0, 6), (6, 6)],
    # 7 triangles with skewed spokes, some through pixel centres ((6, 2) passes (3, 1))
    "skewed": [(7, 1), (4, -6), (-2, -6), (-7, -3), (-6, 4), (0, 7), (6, 2)],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("wound", ["front", "back"])
@pytest.mark.parametrize("fan", sorted(FANS))
def test_fan_around_a_pixel_centre_covers_each_pixel_exactly_once(fan: str, wound: str, dtype):
    xy, faces = _fan(FANS[fan])
    xy = xy.to(dtype)
    if wound == "back":
        faces = faces[:, [0, 2, 1]]
    cull = wound == "front"
    for order in itertools.islice(itertools.permutations(range(xy.shape[0])), 0, 5040, 997):
        rxy, rfaces = _relabel(xy, faces, order)
        counts = _coverage_counts(rxy, rfaces, cull)
        assert int(counts.max()) == 1, f"double coverage with labels {order}"
        assert int(counts[20, 20]) == 1  # the shared vertex's own pixel
        inside = _strictly_inside_polygon(xy[1:])
        assert bool((counts[inside] == 1).all()), f"hole with labels {order}"
        together = rasterize(rxy[None], torch.ones(1, rxy.shape[0], dtype=rxy.dtype), rfaces, SIZE,
                             cull_backfaces=cull).pix_to_face[0] >= 0
        assert torch.equal(together, counts > 0)


def test_edge_ownership_is_top_left_and_opposite_across_a_shared_edge():
    # (top-left, bottom-left, bottom-right): edges opposite each corner are bottom, diagonal, left
    coef, owns = edge_functions(SQUARE[[0, 3, 2]][None], torch.tensor([[0, 3, 2]]))
    assert owns[0].tolist() == [False, False, True]
    # (top-left, bottom-right, top-right): right, top, diagonal (the interior is to its right: a left edge)
    coef2, owns2 = edge_functions(SQUARE[[0, 2, 1]][None], torch.tensor([[0, 2, 1]]))
    assert owns2[0].tolist() == [False, True, True]
    # the shared diagonal: bit-identical coefficients of opposite sign, so exactly one owner
    assert torch.equal(coef[0, 1], -coef2[0, 2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inside_counts_zero_only_on_owned_edges(dtype):
    tiny = torch.finfo(dtype).tiny * torch.finfo(dtype).eps  # the smallest positive subnormal
    e = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 3.0], [tiny, 1.0, 1.0], [-tiny, 1.0, 1.0], [1.0, 1.0, 1.0]],
                     dtype=dtype)
    owned = tie_breaks(torch.tensor([[True, True, False]] * 5), dtype)
    assert inside(e, owned).tolist() == [True, True, True, False, True]
    none_owned = tie_breaks(torch.zeros(5, 3, dtype=torch.bool), dtype)
    assert inside(e, none_owned).tolist() == [False, False, True, False, True]
