"""Fixed sparse linear maps along the first axis, applied as CSR matrix products with autograd.

Meshes move values between vertices, triangle corners and triangles many times per render: gathering
corner positions, summing per-face normals and tangents onto vertices. Written with ``index_select`` /
``index_add_`` these are fast forward but slow backward on CPU (the gradient of a gather is a scatter
with colliding rows, done serially). Expressed as a sparse matrix ``A`` applied to a (rows, K) dense
tensor, both directions become CSR matrix products (``A @ x`` forward, ``A^T @ g`` backward) that run
in parallel without atomics on CPU and through cuSPARSE on GPU. No installed library offers a mesh
incidence operator with a cached transpose, hence this small module.

``SparseMap`` keeps both CSR matrices per (device, dtype). ``mesh_maps(faces, n_vertices)`` caches the
gather / scatter maps of one triangle list for as long as that tensor object is alive and unmodified.
"""

from __future__ import annotations

import warnings
import weakref
from typing import NamedTuple

import torch

__all__ = ["SparseMap", "MeshMaps", "mesh_maps"]


def _csr(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """CSR matrix of the given COO entries (duplicates summed, columns sorted within each row)."""
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape, check_invariants=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.coalesce().to_sparse_csr()


class _Apply(torch.autograd.Function):
    """y = A @ x with the gradient A^T @ g (A fixed: no gradient for its values)."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, forward_matrix: torch.Tensor, transpose_matrix: torch.Tensor
    ) -> torch.Tensor:  # noqa: ANN001
        ctx.transpose_matrix = transpose_matrix
        return forward_matrix @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:  # noqa: ANN001
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return ctx.transpose_matrix @ grad.contiguous(), None, None


class SparseMap:
    """A fixed (R, C) sparse matrix applied to (C, K) dense tensors -> (R, K), differentiably.

    Args:
        rows, cols: (E,) long COO coordinates; duplicate entries are summed.
        values: (E,) weights, or None for all ones.
        shape: (R, C).
    """

    def __init__(
        self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor | None, shape: tuple[int, int]
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self._rows, self._cols = rows.long(), cols.long()
        self._values = (
            torch.ones(rows.shape[0], dtype=torch.float64, device=rows.device) if values is None else values
        )
        self._built: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _matrices(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        if key not in self._built:
            rows, cols = self._rows.to(device), self._cols.to(device)
            values = self._values.to(device=device, dtype=dtype)
            self._built[key] = (
                _csr(rows, cols, values, self.shape),
                _csr(cols, rows, values, (self.shape[1], self.shape[0])),
            )
        return self._built[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to ``x`` of shape (C, ...) -> (R, ...); trailing axes are flattened and restored."""
        if x.shape[0] != self.shape[1]:
            raise ValueError(f"sparse map of shape {self.shape} cannot take an input with {x.shape[0]} rows")
        # Sparse products support float32/float64 on every device: reduced precision runs in float32.
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        forward_matrix, transpose_matrix = self._matrices(x.device, dtype)
        flat = x.reshape(x.shape[0], -1).to(dtype)
        out = _Apply.apply(flat, forward_matrix, transpose_matrix).to(x.dtype)
        return out.view(self.shape[0], *x.shape[1:])

    @property
    def T(self) -> SparseMap:  # noqa: N802 - matrix transpose, as in torch
        """The transposed map (shares nothing that is built lazily)."""
        return SparseMap(self._cols, self._rows, self._values, (self.shape[1], self.shape[0]))


class MeshMaps(NamedTuple):
    """Sparse maps of one triangle list with F faces over V vertices.

    Attributes:
        gather_corners: (3F, V): row ``c * F + f`` picks vertex ``faces[f, c]`` (corner-major order).
        sum_to_vertices: (V, F): adds a per-face value onto each of the face's three vertices.
    """

    gather_corners: SparseMap
    sum_to_vertices: SparseMap


_CACHE: dict[int, tuple[weakref.ref, int, int, MeshMaps]] = {}


def mesh_maps(faces: torch.Tensor, n_vertices: int) -> MeshMaps:
    """Gather / scatter maps of a (F, 3) long triangle list, cached per tensor object and version."""
    key = id(faces)
    hit = _CACHE.get(key)
    if hit is not None:
        ref, version, n_cached, maps = hit
        if ref() is faces and version == faces._version and n_cached == n_vertices:
            return maps
    n_faces = faces.shape[0]
    corner_rows = torch.arange(3 * n_faces, device=faces.device)
    corner_vertices = faces.t().reshape(-1)  # corner-major: all corner-0 vertices, then corner 1, 2
    face_of_corner = torch.arange(n_faces, device=faces.device).repeat(3)
    maps = MeshMaps(
        gather_corners=SparseMap(corner_rows, corner_vertices, None, (3 * n_faces, n_vertices)),
        sum_to_vertices=SparseMap(corner_vertices, face_of_corner, None, (n_vertices, n_faces)),
    )
    if len(_CACHE) > 64:
        _CACHE.clear()
    _CACHE[key] = (weakref.ref(faces, _forget(key)), faces._version, n_vertices, maps)
    return maps


def _forget(key: int):  # noqa: ANN202 - weakref callback
    def callback(ref: weakref.ref) -> None:
        entry = _CACHE.get(key)
        if entry is not None and entry[0] is ref:
            del _CACHE[key]

    return callback
