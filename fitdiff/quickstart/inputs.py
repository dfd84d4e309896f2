"""Inputs the quickstart hands to the sampling and reconstruction tools: files cut from the held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitdiff.data import decode_sample, load_manifest, read_shard

__all__ = ["held_out_embedding", "held_out_photo"]


def held_out_embedding(data: Path, out_dir: Path) -> Path:
    """The ``id.npy`` of the first held-out (val) photo of the dataset in ``data``, saved as
    ``out_dir/samples/identity_<key>.npy`` for ``fitdiff.sample --identity``."""
    shard = load_manifest(data).shards_for("val")[0]
    raw = next(iter(read_shard(str(data / shard.name), fields=("identity",))))
    sample = decode_sample(raw, fields=("identity",), shard=shard.name)
    path = out_dir / "samples" / f"identity_{sample.key}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, sample.identity)
    return path


def held_out_photo(data: Path, out_dir: Path) -> tuple[Path, Path]:
    """The first held-out (val) photo and its 68 landmarks as files (``<key>.png``, ``<key>.npy`` in
    ``out_dir/reconstruct/input``), the input of ``fitdiff.reconstruct``."""
    shard = load_manifest(data).shards_for("val")[0]
    raw = next(iter(read_shard(str(data / shard.name), fields=("image", "landmarks"))))
    sample = decode_sample(raw, fields=("image", "landmarks"), shard=shard.name)
    folder = out_dir / "reconstruct" / "input"
    folder.mkdir(parents=True, exist_ok=True)
    photo, landmarks = folder / f"{sample.key}.png", folder / f"{sample.key}.npy"
    photo.write_bytes(raw["image.png"])
    np.save(landmarks, sample.landmarks)
    return photo, landmarks
