"""ROC-AUC of binary scores (face verification: genuine vs impostor pair similarities).

Computed by torchmetrics' exact (threshold-free) ``binary_auroc``; equal scores count one half, i.e.
the value is the Mann-Whitney probability that a random positive outscores a random negative.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

__all__ = ["roc_auc"]


def roc_auc(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Area under the ROC curve, in [0, 1], of ``scores`` (higher = more positive) for binary ``labels``.

    Args:
        scores: (N,) real scores (any range; only their order matters).
        labels: (N,) bool or {0, 1}.

    Raises:
        ValueError: lengths differ, or the labels lack positives or negatives.
    """
    s = torch.as_tensor(np.asarray(scores, dtype=np.float64) if not torch.is_tensor(scores) else scores)
    y = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    s, y = s.reshape(-1).double(), y.reshape(-1).bool()
    if s.shape != y.shape:
        raise ValueError(f"scores {tuple(s.shape)} and labels {tuple(y.shape)} differ in length")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC-AUC needs positives and negatives, got {n_pos} and {n_neg}")
    # binary_auroc takes values outside [0, 1] for logits and applies a sigmoid, which can merge distinct
    # large scores into ties. Dense ranks scaled to [0, 1] keep the order and the ties exactly.
    unique, ranks = torch.unique(s, sorted=True, return_inverse=True)
    preds = ranks.double() / max(len(unique) - 1, 1)
    return float(binary_auroc(preds, y.long(), thresholds=None))
