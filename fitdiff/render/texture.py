"""Bilinear UV texture lookup (torch.nn.functional.grid_sample).

UV convention (OBJ / OpenGL): u in [0, 1] runs left to right across the texture image, v in [0, 1]
runs bottom to top, i.e. v = 0 is the LAST (bottom) row of the (C, H, W) tensor. Texel centres sit at
((j + 0.5) / W, 1 - (i + 0.5) / H). Lookups outside [0, 1] clamp to the border. Gradients flow to the
texture and to the UVs (hence to the barycentrics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sample_texture", "uv_to_grid"]


def uv_to_grid(uv: torch.Tensor) -> torch.Tensor:
    """(..., 2) UVs in [0, 1] (v up) -> grid_sample coordinates in [-1, 1] (y down)."""
    return torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], dim=-1)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample each batch item's texture at its own set of UVs.

    Args:
        texture: (B, C, H, W) texture images (any value range).
        uv: (B, N, 2) UV coordinates in [0, 1], v = 0 at the bottom row.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        (B, N, C) sampled values, differentiable w.r.t. ``texture`` and ``uv``.
    """
    if texture.dim() != 4:
        raise ValueError(f"texture must be (B, C, H, W), got {tuple(texture.shape)}")
    if uv.dim() != 3 or uv.shape[-1] != 2 or uv.shape[0] != texture.shape[0]:
        raise ValueError(f"uv must be ({texture.shape[0]}, N, 2), got {tuple(uv.shape)}")
    grid = uv_to_grid(uv.to(texture.dtype)).unsqueeze(1)  # (B, 1, N, 2)
    out = F.grid_sample(texture, grid, mode=mode, padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2)
