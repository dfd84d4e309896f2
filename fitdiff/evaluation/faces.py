"""The faces a table is measured on: every sample of some splits of a face-shard dataset, in memory.

:func:`load_faces` reads the shards of the requested splits in manifest order (no shuffling, no
augmentation) into one :class:`FaceSet`; :func:`select_photos` picks the evaluated photos spread over
subjects. A split the dataset does not hold is an error naming the dataset and its counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fitdiff.config.errors import ConfigError
from fitdiff.data.batch import FaceBatch, FaceCollate
from fitdiff.data.manifest import SPLITS, Manifest, load_manifest
from fitdiff.data.sample import FIELDS, decode_sample, subject_of
from fitdiff.data.stream import read_shard

__all__ = ["FaceSet", "load_faces", "select_photos", "MAP_NAMES"]

#: the reflectance maps every table compares, in the latent's branch order
MAP_NAMES: tuple[str, ...] = ("diffuse", "specular", "normals")


@dataclass
class FaceSet:
    """N faces of one or more splits (the fields of :class:`~fitdiff.data.FaceBatch`, concatenated).

    Attributes:
        keys: N sample keys; subjects: N subject ids; splits: N split names.
        shape: (N, K) coefficients (std units); identity: (N, D) unit embeddings.
        diffuse, specular, normals: (N, C, R, R) maps (albedos in [0, 1], unit normals).
        image: (N, 3, H, W) photos in [0, 1] or None; landmarks: (N, L, 2) pixels or None;
        meta: N dicts or None.
    """

    keys: list[str]
    subjects: list[str]
    splits: list[str]
    shape: torch.Tensor
    identity: torch.Tensor
    diffuse: torch.Tensor
    specular: torch.Tensor
    normals: torch.Tensor
    image: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None
    meta: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def maps(self) -> dict[str, torch.Tensor]:
        """Map name -> (N, C, R, R)."""
        return {name: getattr(self, name) for name in MAP_NAMES}

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> FaceSet:
        """The faces at ``index`` (in that order)."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                values[f.name] = value.index_select(0, idx)
            elif isinstance(value, list):
                values[f.name] = [value[int(i)] for i in idx]
            else:
                values[f.name] = value
        return FaceSet(**values)

    def first_per_subject(self) -> FaceSet:
        """One face (the first in order) of every subject."""
        seen: dict[str, int] = {}
        for i, subject in enumerate(self.subjects):
            seen.setdefault(subject, i)
        return self.subset(list(seen.values()))


def _check_splits(manifest: Manifest, data_dir: Path, splits: Sequence[str]) -> None:
    if not splits:
        raise ConfigError("no split given: name at least one of train, val, test")
    counts = manifest.counts
    for split in splits:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}: splits are {', '.join(SPLITS)}")
        if not counts.get(split):
            held = ", ".join(f"{k} {v}" for k, v in counts.items())
            raise ConfigError(f"dataset {data_dir} has no {split!r} samples (manifest counts: {held})")


def load_faces(
    data_dir: str | Path, splits: Sequence[str], with_photos: bool = True, manifest: Manifest | None = None
) -> FaceSet:
    """Every sample of ``splits`` of the face shards in ``data_dir``, in manifest order.

    Args:
        data_dir: folder with ``manifest.json`` and the shards.
        splits: split names, concatenated in this order.
        with_photos: also load image, landmarks and meta (else only maps, shape and identity).
        manifest: the parsed manifest (read from ``data_dir`` when None).

    Raises:
        ConfigError: a split is unknown or holds no samples. ManifestError / ShardError: damaged data.
    """
    data_dir = Path(data_dir)
    manifest = manifest if manifest is not None else load_manifest(data_dir)
    _check_splits(manifest, data_dir, splits)
    manifest.check(data_dir, splits=splits)
    wanted = FIELDS if with_photos else ("diffuse", "specular", "normals", "shape", "identity")
    collate = FaceCollate(wanted)
    batches: list[FaceBatch] = []
    split_names: list[str] = []
    for split in splits:
        for entry in manifest.shards_for(split):
            if entry.samples == 0:
                continue
            samples = [
                decode_sample(raw, fields=wanted, shard=entry.name)
                for raw in read_shard(str(data_dir / entry.name), wanted, entry.samples)
            ]
            batches.append(collate(samples))
            split_names += [split] * len(samples)
    keys = [k for b in batches for k in b.keys]

    def cat(name: str) -> torch.Tensor | None:
        parts = [getattr(b, name) for b in batches]
        return None if any(p is None for p in parts) else torch.cat(parts)

    return FaceSet(
        keys=keys,
        subjects=[subject_of(k) for k in keys],
        splits=split_names,
        shape=cat("shape"),
        identity=cat("identity"),
        diffuse=cat("diffuse"),
        specular=cat("specular"),
        normals=cat("normals"),
        image=cat("image") if with_photos else None,
        landmarks=cat("landmarks") if with_photos else None,
        meta=[m for b in batches for m in (b.meta or [])] if with_photos else None,
    )


def select_photos(faces: FaceSet, n: int | None) -> list[int]:
    """Indices of ``n`` photos (all when None or larger), spread over subjects: the first photo of every
    subject in dataset order, then every subject's second, and so on."""
    rank: dict[str, int] = {}
    order = []
    for i, subject in enumerate(faces.subjects):
        order.append((rank.get(subject, 0), i))
        rank[subject] = rank.get(subject, 0) + 1
    chosen = [i for _, i in sorted(order)]
    return chosen if n is None else chosen[: int(n)]
