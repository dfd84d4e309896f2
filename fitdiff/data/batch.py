"""The typed training batch (:class:`FaceBatch`) and the collate function that builds it from samples."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from fitdiff.data.sample import FIELDS, FaceSample

__all__ = ["FaceBatch", "FaceCollate", "PhotoJitter"]


@dataclass
class FaceBatch:
    """A batch of B fitted faces; fields that were not loaded are ``None``.

    Attributes:
        keys: B sample keys ``<subject>_<image>``.
        image: (B, 3, H, W) float32 RGB photo in [0, 1].
        diffuse: (B, 3, R, R) float32 diffuse albedo in [0, 1].
        specular: (B, C, R, R) float32 specular albedo in [0, 1], C in {1, 3}.
        normals: (B, 3, R, R) float32 unit normals in [-1, 1].
        shape: (B, K) float32 PCA coefficients in std units.
        identity: (B, 512) float32 L2-normalised identity embeddings.
        landmarks: (B, N, 2) float32 landmarks in ``image`` pixels.
        meta: B dicts from ``meta.json``.

    UV maps keep the image row order of the PNG: row 0 is v = 1 (OBJ convention, v = 0 at the bottom).
    """

    keys: list[str]
    image: torch.Tensor | None = None
    diffuse: torch.Tensor | None = None
    specular: torch.Tensor | None = None
    normals: torch.Tensor | None = None
    shape: torch.Tensor | None = None
    identity: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None
    meta: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def _map(self, fn) -> FaceBatch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return FaceBatch(**{k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in values.items()})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FaceBatch:
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> FaceBatch:
        """A copy with every tensor in pinned memory (called by ``DataLoader(pin_memory=True)``)."""
        return self._map(lambda t: t.pin_memory())


class PhotoJitter:
    """Random brightness / contrast / saturation / hue jitter of a photo (torchvision ``ColorJitter``).

    Args:
        brightness, contrast, saturation: maximum relative change (0 disables), as in ColorJitter.
        hue: maximum hue shift in [0, 0.5] of a full turn.

    Called on one (3, H, W) float image in [0, 1]; returns the same shape, clamped to [0, 1].
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
        from torchvision.transforms import v2

        self.settings = (brightness, contrast, saturation, hue)
        self.transform = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    @property
    def active(self) -> bool:
        return any(v > 0 for v in self.settings)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(image).clamp_(0.0, 1.0)

    def __repr__(self) -> str:
        b, c, s, h = self.settings
        return f"PhotoJitter(brightness={b}, contrast={c}, saturation={s}, hue={h})"


def _stack_uint8(arrays: list[np.ndarray]) -> torch.Tensor:
    """(B, H, W, C) uint8 arrays -> (B, C, H, W) float32 in [0, 1]."""
    stacked = torch.from_numpy(np.stack(arrays))
    return stacked.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


class FaceCollate:
    """Batch :class:`FaceSample` objects into a :class:`FaceBatch` (runs inside DataLoader workers).

    Args:
        fields: the fields to batch (default: every field set in the first sample).
        jitter: photo colour augmentation applied to each ``image`` (training only), or ``None``.
    """

    def __init__(self, fields: tuple[str, ...] | list[str] | None = None, jitter: PhotoJitter | None = None):
        self.fields = None if fields is None else tuple(fields)
        self.jitter = jitter if jitter is not None and jitter.active else None

    def __call__(self, samples: list[FaceSample]) -> FaceBatch:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        names = self.fields if self.fields is not None else samples[0].present()
        batch = FaceBatch(keys=[s.key for s in samples])
        for name in FIELDS:
            if name not in names:
                continue
            values = [getattr(s, name) for s in samples]
            if name == "meta":
                batch.meta = values
            elif name in ("image", "diffuse", "specular"):
                setattr(batch, name, _stack_uint8(values))
            elif name == "normals":
                batch.normals = torch.from_numpy(np.stack(values)).permute(0, 3, 1, 2).float().contiguous()
            else:
                setattr(batch, name, torch.from_numpy(np.stack(values).astype(np.float32, copy=False)))
        if self.jitter is not None and batch.image is not None:
            batch.image = torch.stack([self.jitter(img) for img in batch.image])
        return batch
