"""How much face shape and albedo a dataset's identity embeddings carry: linear probes on held-out subjects.

:func:`identity_probe` fits ridge regressions (:mod:`fitdiff.metrics.probe`, penalty chosen by 5-fold
cross-validation over training subjects) from the stored ``id.npy`` of every training photo to its
subject's ground truth, and scores them on held-out photos against trivial predictors:

- shape: RMS per-vertex distance (mm) between the mesh of the predicted coefficients and the ground
  truth mesh (same model and frame, no alignment), against the mean face (all-zero coefficients) and the
  mesh of a random training subject; plus the per-component Pearson correlation of predicted and true
  coefficients.
- diffuse albedo: RMS over texels and channels of the UV map in [0, 1] units, against the mean
  training albedo.

Errors are computed per photo and averaged over photos. The shape probe is fitted to ``std_k c_k``
(millimetre-scaled coefficients), so its cross-validation weighs components as the mesh error does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fitdiff.data.manifest import load_manifest
from fitdiff.data.sample import decode_sample, subject_of
from fitdiff.data.stream import read_shard
from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.metrics.probe import DEFAULT_ALPHAS, fit_ridge_cv
from fitdiff.metrics.shape import vertex_rmse

__all__ = ["ProbeData", "ProbeReport", "load_probe_data", "identity_probe"]


@dataclass
class ProbeData:
    """Embeddings and ground truth of the photos of some splits, in shard order.

    Attributes:
        identity: (N, D) float32 embeddings; subjects: N subject ids.
        shape: (N, K) float32 coefficients (std units); diffuse: (N, R, R, 3) float32 albedo in [0, 1].
    """

    identity: np.ndarray
    subjects: list[str]
    shape: np.ndarray
    diffuse: np.ndarray


def load_probe_data(data_dir: str | Path, splits: Sequence[str]) -> ProbeData:
    """Stored embeddings, shape coefficients and diffuse maps of every sample of ``splits``."""
    manifest = load_manifest(data_dir)
    manifest.check(data_dir)
    fields = ("identity", "shape", "diffuse")
    identity, shape, diffuse, subjects = [], [], [], []
    for split in splits:
        for entry in manifest.shards_for(split):
            for raw in read_shard(str(Path(data_dir) / entry.name), fields=fields, expected=entry.samples):
                sample = decode_sample(raw, fields=fields, shard=entry.name)
                subjects.append(subject_of(raw["__key__"]))
                identity.append(sample.identity)
                shape.append(sample.shape)
                diffuse.append(np.asarray(sample.diffuse, dtype=np.float32) / 255.0)
    if not subjects:
        raise ValueError(f"{data_dir}: no samples in split(s) {', '.join(splits)}")
    return ProbeData(
        identity=np.stack(identity).astype(np.float32),
        subjects=subjects,
        shape=np.stack(shape).astype(np.float32),
        diffuse=np.stack(diffuse),
    )


@dataclass
class ProbeReport:
    """Held-out errors of the probes and their baselines (means over photos).

    Attributes:
        shape_probe_mm, shape_mean_face_mm, shape_random_subject_mm: per-vertex RMS, mm.
        diffuse_probe, diffuse_mean: RMS of the albedo map in [0, 1] units.
        component_correlation: (K,) Pearson correlation of predicted and true coefficients.
        shape_alpha, diffuse_alpha: the cross-validated ridge penalties.
        train_photos, heldout_photos, heldout_subjects: counts.
    """

    shape_probe_mm: float
    shape_mean_face_mm: float
    shape_random_subject_mm: float
    diffuse_probe: float
    diffuse_mean: float
    component_correlation: np.ndarray = field(repr=False)
    shape_alpha: float
    diffuse_alpha: float
    train_photos: int
    heldout_photos: int
    heldout_subjects: int

    @property
    def shape_gain(self) -> float:
        """Fraction by which the shape probe beats the mean face (0.25 = 25 % lower RMS)."""
        return 1.0 - self.shape_probe_mm / self.shape_mean_face_mm

    @property
    def diffuse_gain(self) -> float:
        """Fraction by which the albedo probe beats the mean training albedo."""
        return 1.0 - self.diffuse_probe / self.diffuse_mean

    def correlation_summary(self) -> str:
        """First components' correlations and quartiles over all components."""
        r = self.component_correlation
        first = " ".join(f"{v:.2f}" for v in r[:5])
        q = np.quantile(r, [0.0, 0.25, 0.5, 0.75, 1.0])
        return (
            f"components 1-5: {first}; over {len(r)} components min {q[0]:.2f}, quartiles "
            f"{q[1]:.2f} / {q[2]:.2f} / {q[3]:.2f}, max {q[4]:.2f}"
        )

    def __str__(self) -> str:
        return "\n".join(
            [
                f"linear probe (ridge from the embedding; {self.train_photos} training photos -> "
                f"{self.heldout_photos} held-out photos of {self.heldout_subjects} subjects):",
                f"  shape RMS {self.shape_probe_mm:.2f} mm (mean face {self.shape_mean_face_mm:.2f} mm, "
                f"random training subject {self.shape_random_subject_mm:.2f} mm; "
                f"{100 * self.shape_gain:.1f}% below the mean face; alpha {self.shape_alpha:g})",
                f"  diffuse RMS {self.diffuse_probe:.4f} (mean albedo {self.diffuse_mean:.4f}; "
                f"{100 * self.diffuse_gain:.1f}% below; alpha {self.diffuse_alpha:g})",
                f"  shape coefficient correlation: {self.correlation_summary()}",
            ]
        )


def _correlation(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(K,) Pearson correlation per column (0 where either column is constant)."""
    p, t = pred - pred.mean(0), true - true.mean(0)
    denom = np.sqrt((p * p).sum(0) * (t * t).sum(0))
    return np.where(denom > 0, (p * t).sum(0) / np.where(denom > 0, denom, 1.0), 0.0)


def _mesh_rms(model: PCAShapeModel, pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over rows of the per-vertex RMS between the meshes of coefficient rows ``pred`` and ``true``."""
    with torch.no_grad():
        p = model(torch.from_numpy(np.asarray(pred, dtype=np.float64)))
        t = model(torch.from_numpy(np.asarray(true, dtype=np.float64)))
        return float(vertex_rmse(p.double(), t.double()).mean())


def identity_probe(
    train: ProbeData,
    heldout: ProbeData,
    model: PCAShapeModel,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    folds: int = 5,
    seed: int = 0,
) -> ProbeReport:
    """Fit the shape and albedo probes on ``train`` and score them on ``heldout`` (module docstring).

    ``seed`` sets the cross-validation folds (at most one per training subject) and the random training
    subject of each held-out photo.
    """
    if train.shape.shape[1] != model.n_components:
        raise ValueError(
            f"shape coefficients have {train.shape.shape[1]} components but model {model.model_id!r} has "
            f"{model.n_components}"
        )
    n_subjects = len(set(train.subjects))
    if n_subjects < 2:
        raise ValueError(f"the linear probe needs at least 2 training subjects, got {n_subjects}")
    folds = min(folds, n_subjects)  # few subjects: leave one subject out
    std = model.std.detach().cpu().double().numpy()
    shape_probe = fit_ridge_cv(train.identity, train.shape * std, alphas, train.subjects, folds, seed)
    pred_shape = shape_probe.predict(heldout.identity) / std
    flat_train = train.diffuse.reshape(len(train.diffuse), -1)
    flat_held = heldout.diffuse.reshape(len(heldout.diffuse), -1).astype(np.float64)
    diffuse_probe = fit_ridge_cv(train.identity, flat_train, alphas, train.subjects, folds, seed)
    pred_diffuse = np.clip(diffuse_probe.predict(heldout.identity), 0.0, 1.0)
    mean_diffuse = flat_train.astype(np.float64).mean(0)

    rng = np.random.default_rng(seed)
    random_rows = rng.integers(0, len(train.shape), len(heldout.shape))
    return ProbeReport(
        shape_probe_mm=_mesh_rms(model, pred_shape, heldout.shape),
        shape_mean_face_mm=_mesh_rms(model, np.zeros_like(heldout.shape), heldout.shape),
        shape_random_subject_mm=_mesh_rms(model, train.shape[random_rows], heldout.shape),
        diffuse_probe=float(np.sqrt(((pred_diffuse - flat_held) ** 2).mean(1)).mean()),
        diffuse_mean=float(np.sqrt(((mean_diffuse - flat_held) ** 2).mean(1)).mean()),
        component_correlation=_correlation(pred_shape, heldout.shape.astype(np.float64)),
        shape_alpha=shape_probe.alpha,
        diffuse_alpha=diffuse_probe.alpha,
        train_photos=len(train.subjects),
        heldout_photos=len(heldout.subjects),
        heldout_subjects=len(set(heldout.subjects)),
    )
