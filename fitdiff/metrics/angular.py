"""Angular error between unit-vector maps (normal maps), per texel and averaged over valid texels.

Angles are computed as ``atan2(|a x b|, a . b)`` of the normalised vectors, which stays accurate for
small angles (``acos`` of a clamped cosine cannot resolve angles below about 0.03 degrees in float32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric

__all__ = ["angular_error", "mean_angular_error", "MeanAngularError"]


def angular_error(pred: torch.Tensor, target: torch.Tensor, *, degrees: bool = False) -> torch.Tensor:
    """Angle between (B, 3, H, W) vector maps at every texel -> (B, H, W).

    Both maps are L2-normalised along the channel axis first (their lengths do not matter; a zero
    vector is taken as perpendicular to everything, i.e. 90 degrees: mask such texels out).

    Args:
        pred, target: (B, 3, H, W) vector maps (any (B, 3, ...) layout works the same way).
        degrees: return degrees in [0, 180] instead of radians in [0, pi].
    """
    if pred.shape != target.shape or pred.ndim < 2 or pred.shape[1] != 3:
        raise ValueError(
            f"angular_error needs two (B, 3, H, W) maps of the same shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    a, b = F.normalize(pred, dim=1), F.normalize(target, dim=1)
    cos = (a * b).sum(1)
    sin = torch.linalg.vector_norm(torch.linalg.cross(a, b, dim=1), dim=1)
    zero = (a.abs().sum(1) == 0) | (b.abs().sum(1) == 0)
    angle = torch.where(zero, torch.full_like(cos, math.pi / 2), torch.atan2(sin, cos))
    return torch.rad2deg(angle) if degrees else angle


def _valid_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """(B, H, W) bool mask from a (B, H, W) or (B, 1, H, W) bool / {0, 1} mask."""
    if mask is None:
        return None
    if mask.ndim == like.ndim + 1 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.shape != like.shape:
        raise ValueError(f"mask must be (B, H, W) or (B, 1, H, W) matching {tuple(like.shape)}, got {tuple(mask.shape)}")
    return mask.bool()


def mean_angular_error(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *, degrees: bool = True
) -> torch.Tensor:
    """Mean angle over the valid texels of a batch, a scalar (degrees by default, else radians).

    Args:
        pred, target: (B, 3, H, W) vector maps.
        mask: optional (B, H, W) or (B, 1, H, W) valid-texel mask (bool, or 0/1); all texels when None.

    Raises:
        ValueError: shapes disagree, or the mask selects no texel.
    """
    angle = angular_error(pred, target, degrees=degrees)
    valid = _valid_mask(mask, angle)
    if valid is None:
        return angle.mean()
    if not bool(valid.any()):
        raise ValueError("mean_angular_error: the mask selects no texel")
    return angle[valid].mean()


class MeanAngularError(Metric):
    """Mean angular error over every valid texel of every batch seen (degrees by default).

    ``update(pred, target, mask=None)`` with (B, 3, H, W) maps; ``compute()`` -> scalar. Texels are
    pooled (a map with more valid texels weighs more), which is the usual "mean angular error over valid
    texels" of a test set. Synchronises across processes like any torchmetrics metric.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, degrees: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.degrees = degrees
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        angle = angular_error(pred.detach(), target.detach(), degrees=self.degrees)
        valid = _valid_mask(mask, angle)
        chosen = angle if valid is None else angle[valid]
        self.total += chosen.double().sum()
        self.count += chosen.numel()

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            raise ValueError("MeanAngularError: no valid texel was seen")
        return (self.total / self.count).float()
