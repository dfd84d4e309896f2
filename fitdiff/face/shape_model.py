"""Linear (PCA) 3D face shape model: mean + sum_k coeff_k * std_k * component_k.

Units are millimetres in the project frame (+y up, the face looks toward +z, +x is the subject's left).
Coefficients are in units of each component's standard deviation, so N(0, 1) coefficients sample the
model. Components are unit-norm directions over all 3V coordinates (as in LSFM); ``std`` is the standard
deviation along each direction.

On disk a model is one ``.npz`` (read with ``allow_pickle=False``) holding the arrays named in
:data:`NPZ_KEYS` plus ``format_version`` and ``model_id``.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fitdiff.io import atomic_write
from fitdiff.render import mesh

__all__ = ["PCAShapeModel", "ShapeModelError", "FORMAT_VERSION", "NPZ_KEYS"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
NPZ_KEYS = (
    "format_version",
    "model_id",
    "mean",
    "components",
    "std",
    "faces",
    "uvs",
    "uv_faces",
    "landmarks_68",
    "landmarks_5",
)
_UV_TOLERANCE = 1e-5


class ShapeModelError(ValueError):
    """A shape model's arrays or file are malformed; the message names the source and the key."""


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _validate(arrays: dict[str, np.ndarray], source: str) -> None:
    """Check shapes, dtypes, finiteness and index ranges; raise ShapeModelError naming source and key."""

    def fail(key: str, problem: str) -> None:
        raise ShapeModelError(f"{source}: key {key!r} {problem}")

    mean = arrays["mean"]
    if mean.ndim != 2 or mean.shape[1] != 3 or mean.shape[0] < 3:
        fail("mean", f"must have shape (V, 3) with V >= 3, got {mean.shape}")
    n_vertices = mean.shape[0]
    comps = arrays["components"]
    if comps.ndim != 3 or comps.shape[1:] != (n_vertices, 3) or comps.shape[0] < 1:
        fail("components", f"must have shape (K, {n_vertices}, 3), got {comps.shape}")
    n_comp = comps.shape[0]
    std = arrays["std"]
    if std.shape != (n_comp,):
        fail("std", f"must have shape ({n_comp},), got {std.shape}")
    for key in ("mean", "components", "std", "uvs"):
        if not np.issubdtype(arrays[key].dtype, np.floating):
            fail(key, f"must be floating point, got dtype {arrays[key].dtype}")
        if not np.all(np.isfinite(arrays[key])):
            fail(key, "contains NaN or infinite values")
    if np.any(std <= 0):
        fail("std", "must be strictly positive (standard deviations in mm)")
    uvs = arrays["uvs"]
    if uvs.ndim != 2 or uvs.shape[1] != 2:
        fail("uvs", f"must have shape (T, 2), got {uvs.shape}")
    if uvs.size and (uvs.min() < -_UV_TOLERANCE or uvs.max() > 1 + _UV_TOLERANCE):
        fail("uvs", f"must lie in [0, 1], got range [{uvs.min():.4g}, {uvs.max():.4g}]")
    index_limits = {
        "faces": n_vertices,
        "uv_faces": uvs.shape[0],
        "landmarks_68": n_vertices,
        "landmarks_5": n_vertices,
    }
    index_shapes = {"faces": (None, 3), "uv_faces": (None, 3), "landmarks_68": (68,), "landmarks_5": (5,)}
    for key, limit in index_limits.items():
        arr = arrays[key]
        expected = index_shapes[key]
        if arr.ndim != len(expected) or any(e is not None and s != e for s, e in zip(arr.shape, expected)):
            fail(key, f"must have shape {tuple('N' if e is None else e for e in expected)}, got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            fail(key, f"must hold integer indices, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= limit):
            fail(key, f"indices must lie in [0, {limit}), got range [{arr.min()}, {arr.max()}]")
    if arrays["faces"].shape[0] < 1:
        fail("faces", "must hold at least one triangle")
    if arrays["uv_faces"].shape != arrays["faces"].shape:
        fail("uv_faces", f"must match faces {arrays['faces'].shape}, got {arrays['uv_faces'].shape}")


class PCAShapeModel(nn.Module):
    """PCA face shape model with mesh topology, one UV layout and landmark vertex indices.

    Buffers (move with ``.to(device)``): ``mean`` (V, 3) mm, ``components`` (K, V, 3) orthonormal
    directions (unit norm over 3V), ``std`` (K,) mm, ``faces`` (F, 3) long counter-clockwise seen from
    outside, ``uvs`` (T, 2) in [0, 1] (v = 0 at the bottom of the texture image), ``uv_faces`` (F, 3),
    ``landmarks_68`` (68,) iBUG order, ``landmarks_5`` (5,) ArcFace order (subject's right eye centre,
    left eye centre, nose tip, right mouth corner, left mouth corner).
    """

    mean: torch.Tensor
    components: torch.Tensor
    std: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor
    uv_faces: torch.Tensor
    landmarks_68: torch.Tensor
    landmarks_5: torch.Tensor
    _gram_inv: torch.Tensor

    def __init__(
        self,
        mean: Any,
        components: Any,
        std: Any,
        faces: Any,
        uvs: Any,
        uv_faces: Any,
        landmarks_68: Any,
        landmarks_5: Any,
        model_id: str = "unnamed",
        *,
        source: str = "PCAShapeModel",
    ) -> None:
        super().__init__()
        arrays = {
            "mean": _as_numpy(mean),
            "components": _as_numpy(components),
            "std": _as_numpy(std),
            "faces": _as_numpy(faces),
            "uvs": _as_numpy(uvs),
            "uv_faces": _as_numpy(uv_faces),
            "landmarks_68": _as_numpy(landmarks_68),
            "landmarks_5": _as_numpy(landmarks_5),
        }
        _validate(arrays, source)
        self.model_id = str(model_id)
        for key in ("mean", "components", "std", "uvs"):
            self.register_buffer(key, torch.as_tensor(arrays[key], dtype=torch.float32))
        for key in ("faces", "uv_faces", "landmarks_68", "landmarks_5"):
            self.register_buffer(key, torch.as_tensor(arrays[key], dtype=torch.long))
        # Inverse Gram matrix of the components (identity when orthonormal): exact least squares in project.
        flat = torch.as_tensor(arrays["components"], dtype=torch.float64).reshape(self.n_components, -1)
        gram = flat @ flat.T
        deviation = (gram - torch.eye(self.n_components, dtype=gram.dtype)).abs().max().item()
        if deviation > 1e-3:
            logger.warning("%s: components are not orthonormal (max |C C^T - I| = %.3g)", source, deviation)
        try:
            gram_inv = torch.linalg.inv(gram)
        except RuntimeError as err:
            raise ShapeModelError(f"{source}: key 'components' is rank deficient") from err
        self.register_buffer("_gram_inv", gram_inv.to(torch.float32), persistent=False)

    # ------------------------------------------------------------------ sizes
    @property
    def n_vertices(self) -> int:
        """V, number of vertices."""
        return int(self.mean.shape[0])

    @property
    def n_components(self) -> int:
        """K, number of PCA components."""
        return int(self.components.shape[0])

    def extra_repr(self) -> str:
        return f"model_id={self.model_id!r}, V={self.n_vertices}, K={self.n_components}, F={len(self.faces)}"

    # ------------------------------------------------------------------ shape
    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Vertices from coefficients.

        Args:
            coeffs: (B, k) with k <= K, in units of each component's std; missing ones are zero.

        Returns:
            (B, V, 3) vertices in mm, dtype of the model buffers, differentiable w.r.t. ``coeffs``.
        """
        if coeffs.dim() != 2:
            raise ValueError(f"coeffs must be (B, k), got shape {tuple(coeffs.shape)}")
        k = coeffs.shape[1]
        if k > self.n_components:
            raise ValueError(f"got {k} coefficients but model {self.model_id!r} has {self.n_components}")
        scaled = coeffs.to(self.std.dtype) * self.std[:k]
        offsets = scaled @ self.components[:k].reshape(k, 3 * self.n_vertices)
        return self.mean + offsets.reshape(-1, self.n_vertices, 3)

    def project(self, vertices: torch.Tensor) -> torch.Tensor:
        """Least-squares coefficients of ``vertices``: the exact inverse of :meth:`forward` in the span.

        Args:
            vertices: (B, V, 3) in mm, in the model's frame (no pose removal is done here).

        Returns:
            (B, K) coefficients in units of std.
        """
        self._check_vertices(vertices)
        centred = (vertices.to(self.mean.dtype) - self.mean).reshape(vertices.shape[0], -1)
        flat = self.components.reshape(self.n_components, -1)
        weights = (centred @ flat.T) @ self._gram_inv
        return weights / self.std

    def _check_vertices(self, vertices: torch.Tensor) -> None:
        if vertices.dim() != 3 or vertices.shape[1:] != (self.n_vertices, 3):
            raise ValueError(
                f"vertices must be (B, {self.n_vertices}, 3) for model {self.model_id!r}, "
                f"got {tuple(vertices.shape)}"
            )

    def landmarks(self, vertices: torch.Tensor, kind: str | int = "68") -> torch.Tensor:
        """Landmark positions (B, N, 3) gathered from ``vertices`` (B, V, 3); kind "68" or "5"."""
        self._check_vertices(vertices)
        kind = str(kind)
        if kind == "68":
            return vertices[:, self.landmarks_68]
        if kind == "5":
            return vertices[:, self.landmarks_5]
        raise ValueError(f"landmark kind must be '68' or '5', got {kind!r}")

    def vertex_normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) unit area-weighted outward vertex normals of ``vertices`` (B, V, 3)."""
        return mesh.vertex_normals(vertices, self.faces)

    def tangent_frames(self, vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tangents, bitangents, normals), each (B, V, 3), from the model's UV layout."""
        return mesh.tangent_frames(vertices, self.faces, self.uvs, self.uv_faces)

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, scale: float = 1.0
    ) -> torch.Tensor:
        """Random coefficients (B, K) ~ N(0, scale^2) on the model's device."""
        return scale * torch.randn(
            batch_size, self.n_components, generator=generator, device=self.std.device, dtype=self.std.dtype
        )

    # ------------------------------------------------------------------ files
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The model as numpy arrays keyed as in :data:`NPZ_KEYS`."""
        arrays: dict[str, np.ndarray] = {
            "format_version": np.asarray(FORMAT_VERSION, dtype=np.int64),
            "model_id": np.asarray(self.model_id, dtype=np.str_),
        }
        for key in NPZ_KEYS[2:]:
            arrays[key] = getattr(self, key).detach().cpu().numpy()
        return arrays

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to one ``.npz`` atomically (via a temporary file in the same folder)."""
        path = Path(path)
        with atomic_write(path) as stream:
            np.savez(stream, **self.to_arrays())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PCAShapeModel:
        """Read a model written by :meth:`save`; errors name the file and the offending key."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"shape model file not found: {path}")
        arrays: dict[str, np.ndarray] = {}
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [key for key in NPZ_KEYS if key not in data.files]
                if missing:
                    raise ShapeModelError(f"{path}: missing key(s) {', '.join(map(repr, missing))}")
                for key in NPZ_KEYS:
                    arrays[key] = data[key]
        except ShapeModelError:
            raise
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise ShapeModelError(f"{path}: not a readable shape-model .npz ({err})") from err
        version = arrays["format_version"]
        if version.shape != () or not np.issubdtype(version.dtype, np.integer):
            raise ShapeModelError(f"{path}: key 'format_version' must be an integer scalar")
        if int(version) > FORMAT_VERSION or int(version) < 1:
            raise ShapeModelError(
                f"{path}: key 'format_version' is {int(version)}; this code reads version {FORMAT_VERSION}"
            )
        model_id = arrays["model_id"]
        if model_id.shape != () or model_id.dtype.kind != "U":
            raise ShapeModelError(f"{path}: key 'model_id' must be a string scalar")
        return cls(
            **{key: arrays[key] for key in NPZ_KEYS[2:]},
            model_id=str(model_id),
            source=str(path),
        )

    @classmethod
    def from_asset(cls, name: str = "lsfm") -> PCAShapeModel:
        """Load a registered shape-model asset (see :mod:`fitdiff.assets`); raises AssetMissingError."""
        from fitdiff.assets import require

        return cls.load(require(name))
