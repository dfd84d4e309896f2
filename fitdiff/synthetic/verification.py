"""Face verification on embeddings: genuine / impostor pairs, ROC-AUC, a split's stored embeddings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fitdiff.data.manifest import load_manifest
from fitdiff.data.sample import MEMBERS, decode_sample, subject_of
from fitdiff.data.stream import read_shard
from fitdiff.metrics.auroc import roc_auc

__all__ = ["verification_pairs", "VerificationResult", "verification_auc", "load_embeddings"]


def verification_pairs(embeddings: np.ndarray, subjects: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and same-subject label of every unordered pair (i < j).

    Args:
        embeddings: (N, D) embeddings (normalised here).
        subjects: N subject ids.

    Returns:
        scores (P,) float64 and labels (P,) bool with P = N (N - 1) / 2.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    ids = np.asarray(subjects)
    if len(ids) != len(e):
        raise ValueError(f"{len(e)} embeddings but {len(ids)} subject ids")
    i, j = np.triu_indices(len(e), k=1)
    return np.einsum("pd,pd->p", e[i], e[j]), ids[i] == ids[j]


@dataclass
class VerificationResult:
    """ROC-AUC of all pairs, the number of genuine and impostor pairs, and mean similarities."""

    auc: float
    genuine: int
    impostor: int
    genuine_mean: float
    impostor_mean: float

    def __str__(self) -> str:
        return (
            f"ROC-AUC {self.auc:.4f} ({self.genuine} genuine / {self.impostor} impostor pairs; mean cosine "
            f"genuine {self.genuine_mean:.3f}, impostor {self.impostor_mean:.3f})"
        )


def verification_auc(embeddings: np.ndarray, subjects: Sequence[str]) -> VerificationResult:
    """Verification ROC-AUC (:func:`fitdiff.metrics.auroc.roc_auc`) over all genuine vs impostor pairs of
    cosine similarity."""
    scores, labels = verification_pairs(embeddings, subjects)
    return VerificationResult(
        auc=roc_auc(scores, labels),
        genuine=int(labels.sum()),
        impostor=int((~labels).sum()),
        genuine_mean=float(scores[labels].mean()),
        impostor_mean=float(scores[~labels].mean()),
    )


def load_embeddings(
    data_dir: str | Path,
    splits: Sequence[str] = ("val", "test"),
    embed: Callable[[list[dict]], list[np.ndarray]] | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, list[str]]:
    """Identity embeddings and subject ids of every sample of ``splits`` in a shard folder.

    Args:
        data_dir: folder with ``manifest.json`` and the shards.
        splits: which splits to read.
        embed: when given, re-embed: called with batches of raw members (``__key__``, ``image.png``,
            ``landmarks.npy``) and returning one embedding per sample (an
            :class:`fitdiff.data.embed.IdentityEmbedder`); otherwise the stored ``id.npy`` is used.
        batch_size: samples per ``embed`` call.

    Returns:
        (N, D) float32 embeddings and the N subject ids, in shard order.
    """
    manifest = load_manifest(data_dir)
    manifest.check(data_dir)
    members = ("image", "landmarks") if embed is not None else ("identity",)
    embeddings: list[np.ndarray] = []
    subjects: list[str] = []
    pending: list[dict] = []

    def flush() -> None:
        if pending:
            embeddings.extend(embed(pending))  # type: ignore[misc]
            pending.clear()

    for split in splits:
        for entry in manifest.shards_for(split):
            for raw in read_shard(str(Path(data_dir) / entry.name), fields=members, expected=entry.samples):
                subjects.append(subject_of(raw["__key__"]))
                if embed is None:
                    sample = decode_sample(raw, fields=("identity",), shard=entry.name)
                    embeddings.append(sample.identity)
                else:
                    pending.append({k: raw[k] for k in ("__key__", MEMBERS["image"], MEMBERS["landmarks"])})
                    if len(pending) >= batch_size:
                        flush()
    if embed is not None:
        with torch.no_grad():
            flush()
    if not embeddings:
        raise ValueError(f"{data_dir}: no samples in split(s) {', '.join(splits)}")
    return np.stack(embeddings).astype(np.float32), subjects
