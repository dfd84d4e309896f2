"""Linear probes: closed-form ridge regression from features (e.g. identity embeddings) to targets.

A probe answers "how much of the target can be read linearly off the features": fitted on a training
split, scored on held-out data. The ridge solution with an unpenalised intercept is

    W = (Xc^T Xc + alpha I)^-1 Xc^T Yc,    b = mean(Y) - mean(X) W,

with ``Xc, Yc`` the column-centred training features and targets. Everything is computed in float64
through an SVD of ``Xc`` (``Xc = U S V^T`` gives ``W = V diag(s / (s^2 + alpha)) U^T Yc``), which also
makes cross-validating many ``alpha`` values cost one SVD per fold (:func:`ridge_cv`).

Inputs may be numpy arrays or torch tensors; :meth:`RidgeProbe.predict` answers in the input's kind
(torch: its dtype and device).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_ALPHAS", "RidgeProbe", "fit_ridge", "predict", "ridge_cv", "fit_ridge_cv", "group_folds"]

#: alpha grid of :func:`fit_ridge_cv` (features of unit norm: alpha is relative to ||x||^2 = 1)
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-4, 2, 13))


def _numpy64(array: Any, name: str) -> np.ndarray:
    """``array`` as a 2-D float64 numpy array (a 1-D target becomes one column)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().double().numpy()
    out = np.asarray(array, dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


@dataclass
class RidgeProbe:
    """A fitted ridge regression ``y = x @ weight + bias``.

    Attributes:
        weight: (D, M) float64; bias: (M,) float64; alpha: the L2 penalty it was fitted with.
    """

    weight: np.ndarray
    bias: np.ndarray
    alpha: float

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """(N, D) features -> (N, M) predictions, numpy float64 for numpy input, torch (input dtype and
        device) for tensors."""
        if isinstance(x, torch.Tensor):
            if x.ndim != 2 or x.shape[1] != self.weight.shape[0]:
                raise ValueError(f"features must be (N, {self.weight.shape[0]}), got {tuple(x.shape)}")
            w = torch.as_tensor(self.weight, device=x.device)
            b = torch.as_tensor(self.bias, device=x.device)
            dtype = x.dtype if x.dtype.is_floating_point else torch.float64
            return (x.double() @ w + b).to(dtype)
        features = _numpy64(x, "features")
        if features.shape[1] != self.weight.shape[0]:
            raise ValueError(f"features must be (N, {self.weight.shape[0]}), got {features.shape}")
        return features @ self.weight + self.bias


def _ridge_weights(u: np.ndarray, s: np.ndarray, vt: np.ndarray, uty: np.ndarray, alpha: float) -> np.ndarray:
    """``V diag(s / (s^2 + alpha)) U^T Y`` from a thin SVD and the precomputed ``U^T Y``."""
    factor = s / (s * s + alpha)
    return vt.T @ (factor[:, None] * uty)


def _svd(xc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    keep = s > s.max(initial=0.0) * 1e-12
    return u[:, keep], s[keep], vt[keep]


def fit_ridge(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, alpha: float, fit_intercept: bool = True
) -> RidgeProbe:
    """Closed-form ridge regression of ``y`` (N, M) (or (N,)) on ``x`` (N, D); see the module docstring.

    ``alpha >= 0``; ``alpha = 0`` is the minimum-norm least-squares solution. The intercept is not
    penalised.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    features, targets = _numpy64(x, "features"), _numpy64(y, "targets")
    if len(features) != len(targets):
        raise ValueError(f"{len(features)} feature rows but {len(targets)} target rows")
    if len(features) < 2:
        raise ValueError("ridge regression needs at least two samples")
    x_mean = features.mean(0) if fit_intercept else np.zeros(features.shape[1])
    y_mean = targets.mean(0) if fit_intercept else np.zeros(targets.shape[1])
    u, s, vt = _svd(features - x_mean)
    weight = _ridge_weights(u, s, vt, u.T @ (targets - y_mean), float(alpha))
    return RidgeProbe(weight=weight, bias=y_mean - x_mean @ weight, alpha=float(alpha))


def predict(probe: RidgeProbe, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``probe.predict(x)``."""
    return probe.predict(x)


def group_folds(groups: Sequence[Any], folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold index in [0, folds) per sample, whole groups (e.g. subjects) per fold, seeded shuffle."""
    labels = np.asarray(groups)
    unique = np.unique(labels)
    if len(unique) < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} groups, got {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    fold_of_group[order] = np.arange(len(unique)) % folds
    return fold_of_group[np.searchsorted(unique, labels)]


def ridge_cv(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    groups: Sequence[Any] | None = None,
    folds: int = 5,
    seed: int = 0,
) -> tuple[float, np.ndarray]:
    """K-fold cross-validated choice of ``alpha``: the one with the least held-out squared error summed
    over all targets (so scale the targets to the units the error is judged in).

    Args:
        x: (N, D) features; y: (N, M) targets.
        alphas: candidate penalties.
        groups: (N,) group labels kept within one fold (samples of one subject); None = every sample
            its own group.
        folds: number of folds; seed: fold assignment.

    Returns:
        The best alpha and the (len(alphas),) mean squared error per target element of each.
    """
    features, targets = _numpy64(x, "features"), _numpy64(y, "targets")
    if len(features) != len(targets):
        raise ValueError(f"{len(features)} feature rows but {len(targets)} target rows")
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("ridge_cv needs at least one alpha")
    fold = group_folds(np.arange(len(features)) if groups is None else groups, folds, seed)
    errors = np.zeros(len(alphas))
    for k in range(folds):
        train, held = fold != k, fold == k
        x_mean, y_mean = features[train].mean(0), targets[train].mean(0)
        u, s, vt = _svd(features[train] - x_mean)
        uty = u.T @ (targets[train] - y_mean)
        projected = (features[held] - x_mean) @ vt.T  # held-out features in the SVD basis
        yv = targets[held] - y_mean
        # |A B - Y|^2 with A = projected * factor, B = uty, expanded so that each alpha costs
        # O(n r^2) instead of O(n r M) for M targets: sum((A^T A) * (B B^T)) - 2 sum(A * (Y B^T)) + |Y|^2
        gram, cross, total = uty @ uty.T, yv @ uty.T, float((yv * yv).sum())
        for i, alpha in enumerate(alphas):
            a = projected * (s / (s * s + float(alpha)))
            errors[i] += float(((a.T @ a) * gram).sum() - 2.0 * (a * cross).sum() + total)
    errors /= targets.size
    return float(alphas[int(np.argmin(errors))]), errors


def fit_ridge_cv(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    groups: Sequence[Any] | None = None,
    folds: int = 5,
    seed: int = 0,
) -> RidgeProbe:
    """:func:`fit_ridge` on all of ``x, y`` with the alpha :func:`ridge_cv` picks."""
    alpha, _ = ridge_cv(x, y, alphas, groups, folds, seed)
    return fit_ridge(x, y, alpha)
