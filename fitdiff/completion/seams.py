"""Seam correction after decoding: carry the known part's values into the filled part smoothly.

The decoded sample matches the known texels only up to the autoencoder's error and the model's bias, so
pasting the known texels back leaves a step at the boundary. :func:`harmonic_offset` removes it the way
gradient-domain (Poisson) image editing does (Perez et al. 2003): the filled texels keep the decoded
sample's gradients, and the known texels fix the values. Equivalently, the offset ``d = known - decoded``
on the known texels is extended over the missing texels as the harmonic function (``laplace(d) = 0`` on
the missing texels, ``d`` given on the known ones, zero flux across the map's border), and the output
there is ``decoded + d``: continuous at the boundary, the sample's detail inside, and a smooth, decaying
correction of a colour offset between the sample and its known surroundings.

Written here because no installed library solves a masked Laplace problem on an image; scipy's sparse LU
does the linear algebra (one factorisation per mask, shared by every channel).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import splu

__all__ = ["harmonic_extension", "harmonic_offset"]


def harmonic_extension(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Extend (C, R, R) ``values`` from the ``known`` (R, R) bool texels over the others as the harmonic
    function of the 4-neighbour grid (Dirichlet on known texels, Neumann at the border); with no known
    texel at all, 0."""
    if known.all() or not known.any():
        return np.where(known[None], values, 0.0)
    size_y, size_x = known.shape
    index = -np.ones(known.shape, dtype=np.int64)
    missing = np.argwhere(~known)
    index[~known] = np.arange(len(missing))
    rows, cols, vals = [], [], []
    rhs = np.zeros((len(missing), values.shape[0]))
    degree = np.zeros(len(missing))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = missing[:, 0] + dy, missing[:, 1] + dx
        inside = (ny >= 0) & (ny < size_y) & (nx >= 0) & (nx < size_x)
        me = np.nonzero(inside)[0]
        ny, nx = ny[inside], nx[inside]
        degree[me] += 1
        neighbour = index[ny, nx]
        free = neighbour >= 0
        rows.append(me[free])
        cols.append(neighbour[free])
        vals.append(-np.ones(free.sum()))
        rhs[me[~free]] += values[:, ny[~free], nx[~free]].T
    # every missing texel reaches a known one through the grid (some texel is known), so the system is
    # non-singular
    n = len(missing)
    diag = degree
    matrix = coo_matrix((np.concatenate([diag, *vals]), (np.concatenate([np.arange(n), *rows]),
                                                          np.concatenate([np.arange(n), *cols]))), shape=(n, n))
    solved = splu(matrix.tocsc()).solve(rhs)
    out = np.where(known[None], values, 0.0)
    out[:, missing[:, 0], missing[:, 1]] = solved.T
    return out


def harmonic_offset(decoded: torch.Tensor, given: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """(B, C, R, R) maps equal to ``given`` on the ``known`` (B, R, R) texels and to ``decoded`` plus the
    harmonic extension of ``given - decoded`` elsewhere (the module docstring)."""
    if decoded.shape != given.shape or known.shape != (decoded.shape[0], *decoded.shape[-2:]):
        raise ValueError(f"decoded {tuple(decoded.shape)}, given {tuple(given.shape)} and known "
                         f"{tuple(known.shape)} do not match")
    offset = (given - decoded).detach().double().cpu().numpy()
    mask = known.bool().cpu().numpy()
    ext = np.stack([harmonic_extension(offset[i], mask[i]) for i in range(len(offset))])
    out = decoded + torch.from_numpy(ext).to(decoded)
    return torch.where(known[:, None].to(decoded.device), given, out)
