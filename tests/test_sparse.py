"""Sparse mesh maps: values and gradients equal the dense gather / scatter they replace."""

import pytest
import torch

from fitdiff.sparse import SparseMap, mesh_maps


def _mesh() -> tuple[torch.Tensor, int]:
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 4, 2], [2, 4, 3]])
    return faces, 5


def test_gather_and_sum_match_index_ops() -> None:
    faces, n_vertices = _mesh()
    maps = mesh_maps(faces, n_vertices)
    x = torch.randn(n_vertices, 2, 3, dtype=torch.float64)
    gathered = maps.gather_corners(x).view(3, faces.shape[0], 2, 3)
    for corner in range(3):
        assert torch.equal(gathered[corner], x[faces[:, corner]])
    per_face = torch.randn(faces.shape[0], 4, dtype=torch.float64)
    expected = torch.zeros(n_vertices, 4, dtype=torch.float64)
    for corner in range(3):
        expected.index_add_(0, faces[:, corner], per_face)
    assert torch.allclose(maps.sum_to_vertices(per_face), expected)


def test_gradcheck_float64() -> None:
    rows = torch.tensor([0, 0, 1, 2, 2, 2])
    cols = torch.tensor([1, 3, 0, 0, 2, 1])
    values = torch.tensor([0.5, -2.0, 1.0, 3.0, 0.25, 1.5])
    op = SparseMap(rows, cols, values, (3, 4))
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,))
    dense = torch.zeros(3, 4, dtype=torch.float64).index_put_((rows, cols), values.double(), accumulate=True)
    assert torch.allclose(op(x), dense @ x)
    assert torch.allclose(
        op.T(torch.ones(3, 2, dtype=torch.float64)), dense.T @ torch.ones(3, 2, dtype=torch.float64)
    )


def test_cache_follows_the_faces_tensor() -> None:
    faces, n_vertices = _mesh()
    first = mesh_maps(faces, n_vertices)
    assert mesh_maps(faces, n_vertices) is first
    assert mesh_maps(faces.clone(), n_vertices) is not first  # another tensor object
    faces[0, 0] = 4  # in-place edit bumps the version: the maps are rebuilt
    rebuilt = mesh_maps(faces, n_vertices)
    assert rebuilt is not first
    x = torch.arange(n_vertices, dtype=torch.float32).unsqueeze(1)
    assert rebuilt.gather_corners(x)[0, 0] == 4.0


def test_shape_mismatch_is_reported() -> None:
    op = SparseMap(torch.tensor([0]), torch.tensor([1]), None, (2, 3))
    with pytest.raises(ValueError, match=r"\(2, 3\).*4 rows"):
        op(torch.zeros(4, 1))


def test_half_precision_inputs_are_computed_in_float32() -> None:
    faces, n_vertices = _mesh()
    x = torch.randn(n_vertices, 3)
    out = mesh_maps(faces, n_vertices).sum_to_vertices(
        mesh_maps(faces, n_vertices).gather_corners(x)[:4].bfloat16()
    )
    assert out.dtype == torch.bfloat16
