"""Normalisation statistics accumulated while shards are written (streaming, mergeable, exact)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fitdiff.data.sample import FaceSample

__all__ = ["Moments", "DatasetStats"]


@dataclass
class Moments:
    """Per-channel count, sum and sum of squares in float64; merge by addition.

    Attributes:
        count: number of values per channel.
        total: (C,) sum of values.
        total_sq: (C,) sum of squared values.
    """

    count: int = 0
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        """Accumulate ``values`` of shape (..., C) (all leading axes are samples)."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1])
        if self.total is None:
            self.total = np.zeros(flat.shape[1])
            self.total_sq = np.zeros(flat.shape[1])
        if flat.shape[1] != self.total.shape[0]:
            raise ValueError(f"channel count changed from {self.total.shape[0]} to {flat.shape[1]}")
        self.count += flat.shape[0]
        self.total += flat.sum(axis=0)
        self.total_sq += np.square(flat).sum(axis=0)

    def merge(self, other: Moments) -> Moments:
        """Sum of two accumulators (either may be empty)."""
        if other.count == 0:
            return Moments(self.count, None if self.total is None else self.total.copy(),
                           None if self.total_sq is None else self.total_sq.copy())
        if self.count == 0:
            return other.merge(Moments())
        return Moments(self.count + other.count, self.total + other.total, self.total_sq + other.total_sq)

    def mean_std(self) -> tuple[list[float], list[float]]:
        """(mean, population std) per channel as float lists; empty lists when nothing was added."""
        if self.count == 0 or self.total is None or self.total_sq is None:
            return [], []
        mean = self.total / self.count
        var = np.maximum(self.total_sq / self.count - np.square(mean), 0.0)
        return [float(v) for v in mean], [float(v) for v in np.sqrt(var)]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (exact: float64 sums survive a JSON round trip via repr)."""
        return {
            "count": self.count,
            "sum": [] if self.total is None else [float(v) for v in self.total],
            "sum_sq": [] if self.total_sq is None else [float(v) for v in self.total_sq],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Moments:
        if not data.get("count"):
            return cls()
        return cls(int(data["count"]), np.asarray(data["sum"], np.float64), np.asarray(data["sum_sq"], np.float64))


#: sample field -> scale that maps its stored values to the value range models see
_MAP_SCALE = {"diffuse": 1.0 / 255.0, "specular": 1.0 / 255.0, "normals": 1.0}


@dataclass
class DatasetStats:
    """Moments of the maps (per channel, in model units: albedos in [0, 1], normals in [-1, 1]) and of
    the shape coefficients (per coefficient), over the samples added."""

    samples: int = 0
    moments: dict[str, Moments] = field(default_factory=dict)

    def add(self, sample: FaceSample) -> None:
        """Accumulate one sample's diffuse, specular, normals and shape (fields that are set)."""
        self.samples += 1
        for name, scale in _MAP_SCALE.items():
            value = getattr(sample, name)
            if value is not None:
                self.moments.setdefault(name, Moments()).add(np.asarray(value, np.float64) * scale)
        if sample.shape is not None:
            self.moments.setdefault("shape", Moments()).add(np.asarray(sample.shape)[None, :])

    def merge(self, other: DatasetStats) -> DatasetStats:
        names = sorted(set(self.moments) | set(other.moments))
        merged = {n: self.moments.get(n, Moments()).merge(other.moments.get(n, Moments())) for n in names}
        return DatasetStats(self.samples + other.samples, merged)

    def summary(self) -> dict[str, Any]:
        """``{"samples": n, "diffuse": {"mean": [...], "std": [...]}, ...}`` for the manifest."""
        out: dict[str, Any] = {"samples": self.samples}
        for name in sorted(self.moments):
            mean, std = self.moments[name].mean_std()
            out[name] = {"mean": mean, "std": std}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "moments": {n: m.to_dict() for n, m in sorted(self.moments.items())}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetStats:
        return cls(int(data.get("samples", 0)), {n: Moments.from_dict(m) for n, m in data.get("moments", {}).items()})
