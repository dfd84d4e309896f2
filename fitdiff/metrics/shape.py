"""Shape error between meshes of one topology: RMS per-vertex distance, raw and after similarity Procrustes.

Both meshes are (B, V, 3) vertex arrays in millimetres with vertex ``v`` of one corresponding to vertex
``v`` of the other (the same shape model, or meshes registered to one template).

- :func:`vertex_rmse`: ``sqrt(mean_v |p_v - t_v|^2)`` per mesh, no alignment (same frame assumed).
- :func:`similarity_procrustes` / :func:`procrustes_align`: the scale, rotation and translation that
  best map the prediction onto the target in the least-squares sense (Umeyama 1991, closed form via
  SVD; proper rotations only, no reflection).
- :func:`shape_error`: either of the two, and :class:`ShapeError` the torchmetrics accumulator.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["vertex_rmse", "similarity_procrustes", "procrustes_align", "shape_error", "ShapeError"]


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(
            f"shape error needs two (B, V, 3) vertex arrays of one topology, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )


def vertex_rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMS of the per-vertex Euclidean distances of each mesh pair, (B,), in the input units (mm)."""
    _check(pred, target)
    return (pred - target).pow(2).sum(-1).mean(-1).sqrt()


def similarity_procrustes(
    source: torch.Tensor, target: torch.Tensor, *, scale: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity transform taking ``source`` onto ``target``, per mesh pair.

    Minimises ``sum_v |s R x_v + t - y_v|^2`` over scale s > 0, rotation R (det +1) and translation t,
    in closed form: with centred points ``X, Y`` and ``U S V^T = svd(Y^T X / V)``, ``R = U D V^T`` with
    ``D = diag(1, 1, det(U V^T))``, ``s = trace(S D) / mean|X|^2`` and ``t = mean(y) - s R mean(x)``.
    Computed in float64. Meant for evaluation: gradients through the SVD are unstable for symmetric
    point sets.

    Args:
        source, target: (B, V, 3) corresponding vertices, V >= 3 not all collinear.
        scale: fit the scale (else s = 1: a rigid fit).

    Returns:
        scale (B,), rotation (B, 3, 3), translation (B, 3), in the inputs' dtype, such that
        ``s[:, None, None] * source @ R.transpose(1, 2) + t[:, None]`` approximates ``target``.
    """
    _check(source, target)
    x, y = source.double(), target.double()
    mu_x, mu_y = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
    xc, yc = x - mu_x, y - mu_y
    covariance = yc.transpose(1, 2) @ xc / x.shape[1]  # (B, 3, 3)
    u, sigma, vh = torch.linalg.svd(covariance)
    d = torch.ones_like(sigma)
    d[:, 2] = torch.sign(torch.linalg.det(u @ vh))
    d[:, 2] = torch.where(d[:, 2] == 0, torch.ones_like(d[:, 2]), d[:, 2])
    rotation = u @ torch.diag_embed(d) @ vh
    if scale:
        variance = xc.pow(2).sum(-1).mean(-1)
        s = (sigma * d).sum(-1) / variance.clamp_min(torch.finfo(torch.float64).tiny)
    else:
        s = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    translation = mu_y[:, 0] - s[:, None] * (rotation @ mu_x[:, 0, :, None])[..., 0]
    dtype = source.dtype
    return s.to(dtype), rotation.to(dtype), translation.to(dtype)


def procrustes_align(source: torch.Tensor, target: torch.Tensor, *, scale: bool = True) -> torch.Tensor:
    """``source`` moved by :func:`similarity_procrustes` onto ``target``, (B, V, 3)."""
    s, rotation, translation = similarity_procrustes(source, target, scale=scale)
    return s[:, None, None] * source @ rotation.transpose(1, 2) + translation[:, None]


def shape_error(pred: torch.Tensor, target: torch.Tensor, *, procrustes: bool = False) -> torch.Tensor:
    """Per-mesh RMS vertex distance (B,), in mm; after similarity Procrustes of ``pred`` when asked."""
    if procrustes:
        pred = procrustes_align(pred, target)
    return vertex_rmse(pred, target)


class ShapeError(Metric):
    """Mean over meshes of the per-mesh RMS vertex distance, in mm, accumulated over batches.

    Args:
        procrustes: align each prediction to its target by a similarity transform first.

    ``update(pred, target)`` with (B, V, 3) vertices; ``compute()`` -> scalar (mean of the per-mesh
    values, so every test face weighs the same).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, procrustes: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.procrustes = procrustes
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        errors = shape_error(pred.detach(), target.detach(), procrustes=self.procrustes)
        self.total += errors.double().sum()
        self.count += errors.numel()

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            raise ValueError("ShapeError: no mesh was seen")
        return (self.total / self.count).float()
