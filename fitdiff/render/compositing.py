"""Alpha compositing of renders over backgrounds."""

from __future__ import annotations

import torch

__all__ = ["composite_over"]


def composite_over(
    premultiplied: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Porter-Duff 'over': premultiplied + (1 - alpha) * background.

    Args:
        premultiplied: (B, C, H, W) colour already multiplied by alpha.
        alpha: (B, 1, H, W) coverage in [0, 1].
        background: scalar, (C,) colour, or (B, C, H, W) / (1, C, H, W) image (e.g. the input photo).

    Returns:
        (B, C, H, W) composited image; differentiable in all inputs.
    """
    if premultiplied.dim() != 4 or alpha.dim() != 4 or alpha.shape[1] != 1:
        raise ValueError(f"expected (B, C, H, W) colour and (B, 1, H, W) alpha, got "
                         f"{tuple(premultiplied.shape)} and {tuple(alpha.shape)}")
    bg = torch.as_tensor(background, dtype=premultiplied.dtype, device=premultiplied.device)
    if bg.dim() == 1:
        bg = bg.view(1, -1, 1, 1)
    elif bg.dim() == 4 and bg.shape[-2:] != premultiplied.shape[-2:]:
        raise ValueError(f"background {tuple(bg.shape)} must match the render's size {tuple(premultiplied.shape)}")
    return premultiplied + (1.0 - alpha) * bg
