"""Identity similarity: cosine similarity of L2-normalised face-recognition embeddings.

Imports only torch (the face toolkit's identity loss is built on it). For a mean over batches, feed
:func:`cosine_similarity` into ``torchmetrics.MeanMetric``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosine_similarity"]


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of (..., D) embeddings along the last axis -> (...), in [-1, 1].

    The embeddings are L2-normalised here (lengths below ``eps`` are treated as ``eps``), so only their
    directions matter; for unit embeddings this is their dot product. Differentiable: an identity loss
    is ``1 - cosine_similarity``.
    """
    return F.cosine_similarity(a, b, dim=-1, eps=eps)
