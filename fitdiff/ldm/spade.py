"""SPADE normalisation driven by a vector condition (docs/DESIGN.md §5).

SPADE (Park et al. 2019) modulates a parameter-free normalisation with spatial maps ``gamma``, ``beta``
computed by a small conv net from a conditioning *image*, resized inside each norm to the feature's
resolution. Our condition is a 512-d identity embedding, so the image is made first:

1. :class:`ConditionMap` — once per forward, shared by every norm: embedding (B, D) -> Linear -> SiLU ->
   Linear -> reshape to a low-resolution map (B, C_map, r, r). Each of the r*r cells is a learned
   readout of the embedding, so the map can say *where* on the latent grid (UV space: which part of
   which reflectance map, or the shape plane) the identity should change the features.
2. :func:`resize_map` — the map at each feature resolution of the UNet, computed once per resolution
   per forward (bilinear up, antialiased bilinear down) and looked up by every norm at that resolution.
3. :class:`SPADEGroupNorm` — GroupNorm without affine, then ``x * (1 + gamma) + beta`` with
   ``(gamma, beta) = conv3x3(SiLU(conv3x3(map)))`` and the last conv zero-initialised (weights and bias),
   so at initialisation gamma = beta = 0 exactly: the norm *is* plain GroupNorm and the network ignores
   the condition. The last conv's bias plays the role of GroupNorm's per-channel affine.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fitdiff.ldm.blocks import zero_

__all__ = ["ConditionMap", "SPADEGroupNorm", "resize_map"]


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


def resize_map(cmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Condition map (B, C, r, r') -> (B, C, *size): unchanged at its own size, bilinear otherwise.

    Shrinking uses antialiased bilinear (an area-like average), enlarging plain bilinear, both with
    ``align_corners=False`` so a cell covers the same fraction of the grid at every resolution.
    """
    if tuple(cmap.shape[-2:]) == tuple(size):
        return cmap
    shrink = size[0] < cmap.shape[-2] or size[1] < cmap.shape[-1]
    return F.interpolate(cmap, size=size, mode="bilinear", align_corners=False, antialias=shrink)


class SPADEGroupNorm(nn.Module):
    """Parameter-free GroupNorm modulated by the condition map: (B, C, H, W) -> same shape.

    ``forward(x, ctx)`` reads the map at x's resolution from ``ctx.map_at((H, W))``. ``hidden`` is the
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
        gamma, beta = self.to_gamma_beta(self.shared(cmap)).chunk(2, dim=1)
        return torch.addcmul(beta, h, 1 + gamma)
