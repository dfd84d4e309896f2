"""Per-channel normalisation of the packed latent by statistics of the training split (docs/DESIGN.md §5).

:class:`LatentStatsAccumulator` streams packed latents batch by batch and keeps, per channel, the count,
mean and sum of squared deviations (M2) of the **valid** elements (loss mask 1) in float64; batches and
accumulators merge with Chan et al.'s pairwise update, so shards can be accumulated separately (and
resumed) and merged in a fixed order. :class:`LatentStats` is the result: ``normalize`` maps valid
elements to ``(z - mean) / std`` and keeps padding at exactly 0; its dict carries the layout, so it
normalises on its own when read back from a manifest or a checkpoint. Statistics are computed over the whole
training split by ``data_prep/encode_latents.py`` and stored in ``latents.json``; they are never taken
from a first batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fitdiff.ldm.layout import LatentLayout

__all__ = ["STD_FLOOR", "LatentStats", "LatentStatsAccumulator"]

#: smallest std used to divide (a constant channel would otherwise give inf)
STD_FLOOR = 1e-6


@dataclass
class LatentStatsAccumulator:
    """Streaming per-channel count / mean / M2 of packed latents over valid elements, float64.

    Args:
        layout: the packing (its loss mask selects the valid elements).
    """

    layout: LatentLayout
    count: np.ndarray = field(init=False)
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    samples: int = 0

    def __post_init__(self) -> None:
        c = self.layout.channels
        self.count, self.mean, self.m2 = np.zeros(c, np.int64), np.zeros(c), np.zeros(c)
        self._mask = self.layout.loss_mask(dtype=torch.float64)[0].reshape(c, -1).numpy().astype(bool)

    def update(self, z: torch.Tensor | np.ndarray) -> None:
        """Add a batch of packed latents (B, C, H, W) (any float dtype; accumulated in float64)."""
        array = z.detach().cpu().double().numpy() if isinstance(z, torch.Tensor) else np.asarray(z, np.float64)
        if array.ndim != 4 or array.shape[1:] != self.layout.latent_shape:
            raise ValueError(f"expected (B, {', '.join(map(str, self.layout.latent_shape))}), got {array.shape}")
        b = array.shape[0]
        if b == 0:
            return
        flat = array.reshape(b, self.layout.channels, -1).transpose(1, 0, 2)  # (C, B, H*W)
        count = np.zeros_like(self.count)
        mean, m2 = np.zeros_like(self.mean), np.zeros_like(self.m2)
        for ch in range(self.layout.channels):
            values = flat[ch][:, self._mask[ch]].reshape(-1)
            count[ch] = values.size
            if values.size:
                mean[ch] = values.mean()
                m2[ch] = np.square(values - mean[ch]).sum()
        self._combine(count, mean, m2)
        self.samples += b

    def _combine(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.count + count
        safe = np.maximum(total, 1)
        delta = mean - self.mean
        self.mean = np.where(total > 0, self.mean + delta * count / safe, 0.0)
        self.m2 = self.m2 + m2 + np.square(delta) * self.count * count / safe
        self.count = total

    def merge(self, other: LatentStatsAccumulator) -> LatentStatsAccumulator:
        """A new accumulator holding both (the layouts must be equal)."""
        if other.layout != self.layout:
            raise ValueError(f"cannot merge statistics of different layouts: {self.layout} and {other.layout}")
        out = LatentStatsAccumulator(self.layout)
        out.count, out.mean, out.m2, out.samples = self.count.copy(), self.mean.copy(), self.m2.copy(), self.samples
        out._combine(other.count, other.mean, other.m2)
        out.samples += other.samples
        return out

    def result(self, split: str = "train") -> LatentStats:
        """The statistics (population std) of everything added."""
        if self.samples == 0:
            raise ValueError("no latents were accumulated: the statistics need at least one sample")
        var = np.where(self.count > 0, self.m2 / np.maximum(self.count, 1), 0.0)
        return LatentStats(self.layout, self.mean.tolist(), np.sqrt(np.maximum(var, 0.0)).tolist(),
                           self.count.tolist(), self.samples, split)

    def state_dict(self) -> dict[str, Any]:
        """JSON form of the running state (float64 values survive JSON exactly)."""
        return {"samples": self.samples, "count": self.count.tolist(), "mean": self.mean.tolist(),
                "m2": self.m2.tolist()}

    @classmethod
    def from_state_dict(cls, layout: LatentLayout, state: Mapping[str, Any]) -> LatentStatsAccumulator:
        out = cls(layout)
        if state.get("samples"):
            out.samples = int(state["samples"])
            out.count = np.asarray(state["count"], np.int64)
            out.mean, out.m2 = np.asarray(state["mean"], np.float64), np.asarray(state["m2"], np.float64)
            if out.count.shape != (layout.channels,):
                raise ValueError(f"state has {out.count.shape[0]} channels, the layout {layout.channels}")
        return out


@dataclass(frozen=True)
class LatentStats:
    """Per-channel mean and std of the packed latent over the valid elements of a split.

    Attributes:
        layout: the packing the statistics belong to.
        mean, std: C floats (population std, before :data:`STD_FLOOR`).
        count: C valid-element counts.
        samples: latents accumulated.
        split: the split they came from (``"train"``).
    """

    layout: LatentLayout
    mean: Sequence[float]
    std: Sequence[float]
    count: Sequence[int] = ()
    samples: int = 0
    split: str = "train"

    def __post_init__(self) -> None:
        c = self.layout.channels
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "count", tuple(int(v) for v in self.count))
        if len(self.mean) != c or len(self.std) != c or (self.count and len(self.count) != c):
            raise ValueError(f"statistics must have {c} channels (the layout's), got mean {len(self.mean)}, "
                             f"std {len(self.std)}, count {len(self.count)}")
        values = np.asarray(self.mean + self.std)
        if not np.isfinite(values).all() or min(self.std) < 0:
            raise ValueError("statistics must be finite with std >= 0")
        object.__setattr__(self, "_cache", {})

    @property
    def channels(self) -> int:
        """C, the packed latent's channels."""
        return self.layout.channels

    def to(self, device: torch.device | str) -> LatentStats:
        """These statistics with their tensors ready on ``device`` (cached per device and dtype; returns self)."""
        self._tensors(torch.empty((1, *self.layout.latent_shape), device=device, dtype=torch.float32))
        return self

    def _tensors(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if z.ndim != 4 or tuple(z.shape[1:]) != self.layout.latent_shape:
            raise ValueError(f"z must be (B, {', '.join(map(str, self.layout.latent_shape))}), got {tuple(z.shape)}")
        cache: dict = self._cache  # type: ignore[attr-defined]
        key = (z.device, z.dtype)
        if key not in cache:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(self.mean, dtype=torch.float64).to(z.device, z.dtype).view(shape)
            std = torch.tensor(self.std, dtype=torch.float64).clamp(min=STD_FLOOR).to(z.device, z.dtype).view(shape)
            cache[key] = (mean, std, self.layout.loss_mask(device=z.device, dtype=torch.bool))
        return cache[key]

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Packed latent -> ``(z - mean) / std`` per channel on valid elements, exactly 0 on padding."""
        mean, std, mask = self._tensors(z)
        return torch.where(mask, (z - mean) / std, torch.zeros((), dtype=z.dtype, device=z.device))

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: ``z * std + mean`` on valid elements, exactly 0 on padding."""
        mean, std, mask = self._tensors(z)
        return torch.where(mask, z * std + mean, torch.zeros((), dtype=z.dtype, device=z.device))

    def to_dict(self) -> dict[str, Any]:
        """JSON form, the layout included (so the statistics normalise on their own)."""
        return {"split": self.split, "samples": self.samples, "channels": self.layout.channels,
                "mean": list(self.mean), "std": list(self.std), "count": list(self.count),
                "layout": self.layout.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], layout: LatentLayout | Mapping[str, Any] | None = None,
                  where: str = "latent statistics") -> LatentStats:
        """Inverse of :meth:`to_dict`.

        Args:
            data: the dict.
            layout: the layout (object or dict); default the one inside ``data``. When both are given they
                must be equal.
            where: the file, for messages.
        """
        inner = data.get("layout")
        if layout is None and inner is None:
            raise ValueError(f"{where}: holds no layout and none was given")
        if layout is not None and not isinstance(layout, LatentLayout):
            layout = LatentLayout.from_dict(layout, where=where)
        if inner is not None:
            stored = LatentLayout.from_dict(inner, where=where)
            if layout is not None and stored != layout:
                raise ValueError(f"{where}: the statistics were computed for {stored}, not {layout}")
            layout = stored
        assert isinstance(layout, LatentLayout)
        try:
            return cls(layout, data["mean"], data["std"], data.get("count") or (), int(data.get("samples", 0)),
                       str(data.get("split", "train")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: malformed ({type(exc).__name__}: {exc})") from exc
