"""SPADE normalisation driven by a vector condition (docs/DESIGN.md §5).

SPADE (Park et al. 2019) modulates a parameter-free normalisation with spatial maps ``gamma``, ``beta``
computed by a small conv net from a conditioning *image*, resized inside each norm to the feature's
resolution. Our condition is a 512-d identity embedding, so the image is made first:

1. :class:`ConditionMap` — once per forward, shared by every norm: embedding (B, D) -> Linear -> SiLU ->
   Linear -> reshape to a low-resolution map (B, C_map, r, r). Each of the r*r cells is a learned
   readout of the embedding, so the map can say *where* on the latent grid (UV space: which part of
   which reflectance map, or the shape plane) the identity should change the features.
2. :func:`resize_map` — the map at each feature resolution of the UNet, prepared once per resolution per
   forward and looked up by every norm at that resolution: shrunk (antialiased bilinear) where the
   feature grid is coarser than the map, and left at the map's own r x r where it is finer.
3. :class:`SPADEGroupNorm` — GroupNorm without affine, then ``x * (1 + gamma) + beta`` with
   ``(gamma, beta) = conv3x3(SiLU(conv3x3(map)))`` and the last conv zero-initialised (weights and bias),
   so at initialisation gamma = beta = 0 exactly: the norm *is* plain GroupNorm and the network ignores
   the condition. The last conv's bias plays the role of GroupNorm's per-channel affine.

The two convs run at min(feature size, r): on a feature grid finer than the map, gamma and beta are
computed on the r x r map and then resized bilinearly to the feature. The map carries only r x r cells
of information, so convolving a bilinearly enlarged copy of it would cost (H / r)^2 times more for a
field that is just as smooth; this keeps SPADE's cost in proportion to the map, not to the latent grid.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fitdiff.ldm.blocks import zero_

__all__ = ["ConditionMap", "SPADEGroupNorm", "bilinear_matrix", "enlarge_matrix", "resize_map", "working_size"]


class ConditionMap(nn.Module):
    """Embedding (B, cond_dim) -> low-resolution condition map (B, map_channels, map_res, map_res)."""

    def __init__(self, cond_dim: int, map_channels: int, map_res: int, hidden: int | None = None) -> None:
        super().__init__()
        if map_res < 1 or map_channels < 1:
            raise ValueError(f"spade_map_res and spade_map_channels must be >= 1, got {map_res}, {map_channels}")
        hidden = hidden or cond_dim
        self.map_channels, self.map_res = map_channels, map_res
        self.mlp = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, map_channels * map_res ** 2))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.mlp(embedding).view(-1, self.map_channels, self.map_res, self.map_res)


def working_size(size: tuple[int, int], map_size: tuple[int, int]) -> tuple[int, int]:
    """Grid on which a SPADE norm for a feature of ``size`` computes gamma and beta: per axis the smaller."""
    return min(size[0], map_size[0]), min(size[1], map_size[1])


def bilinear_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """(n_out, n_in) matrix of 1-D bilinear resampling with ``align_corners=False`` (as ``F.interpolate``).

    Row i holds the weights of output sample i: source position s = (i + 0.5) n_in / n_out - 0.5,
    clamped at 0, split between floor(s) and the next sample (clamped at the last).
    """
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    lo = src.floor().long().clamp(max=n_in - 1)
    frac = src - lo
    hi = (lo + 1).clamp(max=n_in - 1)
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    weights.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, hi), frac, accumulate=True)
    return weights.to(device=device, dtype=dtype)


def enlarge_matrix(in_size: tuple[int, int], out_size: tuple[int, int], dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """(H_out * W_out, H_in * W_in) matrix of 2-D bilinear resampling: ``field.flatten(-2) @ K.T``."""
    rows = bilinear_matrix(in_size[0], out_size[0], torch.float64)
    cols = bilinear_matrix(in_size[1], out_size[1], torch.float64)
    return torch.kron(rows, cols).to(device=device, dtype=dtype)


def resize_map(cmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Map or modulation field (B, C, h, w) -> (B, C, *size): unchanged at its own size, bilinear otherwise.

    Shrinking uses antialiased bilinear (an area-like average), enlarging plain bilinear, both with
    ``align_corners=False`` so a cell covers the same fraction of the grid at every resolution.
    """
    if tuple(cmap.shape[-2:]) == tuple(size):
        return cmap
    shrink = size[0] < cmap.shape[-2] or size[1] < cmap.shape[-1]
    return F.interpolate(cmap, size=size, mode="bilinear", align_corners=False, antialias=shrink)


class SPADEGroupNorm(nn.Module):
    """Parameter-free GroupNorm modulated by the condition map: (B, C, H, W) -> same shape.

    ``forward(x, ctx)`` reads the map for x's resolution from ``ctx.map_at((H, W))`` (at
    :func:`working_size`); gamma and beta are resized to (H, W) where that is smaller. ``hidden`` is the
    width of the small conv between the map and gamma/beta.
    """

    def __init__(self, channels: int, map_channels: int, hidden: int, groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups = math.gcd(channels, groups)
        self.eps = eps
        self.shared = nn.Sequential(nn.Conv2d(map_channels, hidden, 3, padding=1), nn.SiLU())
        self.to_gamma_beta = zero_(nn.Conv2d(hidden, 2 * channels, 3, padding=1))

    def forward(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        h = F.group_norm(x, self.groups, eps=self.eps)
        cmap = ctx.map_at(tuple(x.shape[-2:]))
        gamma_beta = ctx.enlarge(self.to_gamma_beta(self.shared(cmap)), tuple(x.shape[-2:]))
        gamma, beta = gamma_beta.chunk(2, dim=1)
        return torch.addcmul(beta, h, 1 + gamma)
