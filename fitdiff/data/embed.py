"""Compute or refresh ``id.npy`` identity embeddings (the logic of ``data_prep/embed_identities.py``).

Both entry points embed ``image.png`` with a recognizer from :mod:`fitdiff.face.identity`, aligned by the
5 ArcFace landmarks derived from ``landmarks.npy`` (:func:`five_point_landmarks`), in batches, and set
``meta.json``'s ``recognizer``. Every other member stays byte-for-byte as it was.

:func:`embed_shards` writes the new shards and manifest into a hidden temporary folder beside the
output (``.<out>.<random>.partial``) and moves them into place only when every shard is done, so a
failure (a bad sample, an unexpected member, an interrupt) leaves the output folder as it was, or
absent when it did not exist, and removes the temporary folder.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fitdiff.data.codecs import decode_json, encode_json, encode_npy
from fitdiff.data.errors import SampleError
from fitdiff.data.folder import find_sample_folders
from fitdiff.data.landmarks import five_point_landmarks
from fitdiff.data.manifest import MANIFEST_NAME, SPLITS, Manifest, ShardEntry, load_manifest
from fitdiff.data.sample import MEMBERS, decode_sample
from fitdiff.data.stream import read_shard
from fitdiff.data.writer import ShardWriter
from fitdiff.io import atomic_write_bytes

__all__ = ["IdentityEmbedder", "embed_folder", "embed_shards"]

log = logging.getLogger(__name__)

_SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})\.tar$")


class IdentityEmbedder:
    """Batches (image, landmarks) byte members through an identity encoder.

    Args:
        encoder: callable ``(images (B, 3, H, W) in [0, 1], landmarks (B, 5, 2) px) -> (B, D)``, L2-normalised
            (an :class:`fitdiff.face.identity.IdentityEncoder`).
        name: recognizer id written to ``meta.json`` and the manifest.
        device: where the images go.
    """

    def __init__(self, encoder: Callable[..., torch.Tensor], name: str, device: str | torch.device = "cpu") -> None:
        self.encoder = encoder
        self.name = name
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, members: list[dict[str, Any]], shard: str | None = None) -> list[np.ndarray]:
        """(D,) float32 unit embeddings of each sample's ``image.png``."""
        images, points = [], []
        for raw in members:
            sample = decode_sample(raw, fields=("image", "landmarks"), shard=shard)
            try:
                points.append(five_point_landmarks(sample.landmarks))
            except ValueError as exc:
                raise SampleError(str(exc), shard=shard, key=sample.key, field=MEMBERS["landmarks"]) from exc
            images.append(sample.image)
        sizes = {img.shape for img in images}
        if len(sizes) > 1:
            raise SampleError(f"images of one batch differ in size: {sorted(sizes)}", shard=shard)
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0).to(self.device)
        landmarks = torch.from_numpy(np.stack(points)).to(self.device)
        embeddings = self.encoder(batch, landmarks).float()
        embeddings = torch.nn.functional.normalize(embeddings, dim=-1)  # already unit; renormalise float32
        return [e for e in embeddings.cpu().numpy().astype(np.float32)]

    def update(self, members: list[dict[str, Any]], shard: str | None = None) -> list[dict[str, Any]]:
        """Copies of ``members`` with new ``id.npy`` and ``meta.json`` (recognizer); the rest untouched."""
        embeddings = self(members, shard)
        updated = []
        for raw, embedding in zip(members, embeddings):
            new = dict(raw)
            new[MEMBERS["identity"]] = encode_npy(embedding)
            if MEMBERS["meta"] in raw:
                meta = decode_json(raw[MEMBERS["meta"]])
                meta["recognizer"] = self.name
                new[MEMBERS["meta"]] = encode_json(meta)
            updated.append(new)
        return updated


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled)


def embed_folder(src: str | Path, embedder: IdentityEmbedder, batch_size: int = 32, progress: bool = True) -> int:
    """Rewrite ``id.npy`` (and ``meta.json``'s recognizer) in every sample folder under ``src``; return the count."""
    folders = [f for f in find_sample_folders(src) if f.key is not None]
    names = (MEMBERS["image"], MEMBERS["landmarks"], MEMBERS["meta"])
    with _progress(progress) as bar:
        task = bar.add_task(f"embedding {src}", total=len(folders))
        for group in _batches(iter(folders), batch_size):
            members = [{"__key__": f.key, **{n: (f.path / n).read_bytes() for n in names if (f.path / n).is_file()}}
                       for f in group]
            for folder, new in zip(group, embedder.update(members, shard=str(src))):
                for name in (MEMBERS["identity"], MEMBERS["meta"]):
                    if name in new:
                        atomic_write_bytes(folder.path / name, new[name])
            bar.advance(task, len(group))
    return len(folders)


_SCHEMA_MEMBERS = frozenset(MEMBERS.values())


def _schema_members_only(samples: Iterator[dict[str, Any]], path: str, expected: int) -> Iterator[dict[str, Any]]:
    """Pass raw samples through; raise :class:`SampleError` naming the first member outside the schema."""
    for raw in samples:
        key = str(raw["__key__"])
        stray = sorted(m for m in raw if not m.startswith("__") and m not in _SCHEMA_MEMBERS)
        if stray:
            alone = not any(m in _SCHEMA_MEMBERS for m in raw)
            why = (f"the only member(s) of sample {key!r}, which is not a face sample (a stray file makes the shard "
                   f"hold more samples than the {expected} the manifest lists)") if alone else "not a sample member"
            raise SampleError(
                f"unexpected member {key}.{stray[0]}" + (f" (and {', '.join(f'{key}.{m}' for m in stray[1:])})"
                                                          if len(stray) > 1 else "")
                + f": {why}; the schema's members are {', '.join(MEMBERS.values())}",
                shard=path, key=key, field=stray[0],
            )
        yield raw


def _move_into(staging: Path, out_dir: Path, names: list[str]) -> None:
    """Move the finished files from ``staging`` into ``out_dir`` (the manifest last), or rename the folder."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    for name in names:
        os.replace(staging / name, out_dir / name)
    os.replace(staging / MANIFEST_NAME, out_dir / MANIFEST_NAME)
    staging.rmdir()


def embed_shards(
    shard_dir: str | Path, out_dir: str | Path, embedder: IdentityEmbedder, batch_size: int = 32, progress: bool = True
) -> Manifest:
    """Rewrite every shard listed in ``shard_dir``'s manifest with new embeddings into ``out_dir``.

    ``out_dir`` may equal ``shard_dir`` (the shards are replaced once all are rewritten). Member order,
    tar headers and every member except ``id.npy`` and ``meta.json`` stay bit-identical. The manifest is
    rewritten with the new recognizer id, sizes and sha256s (statistics do not involve the embedding).
    Nothing in ``out_dir`` changes unless every shard is rewritten (see the module doc).

    Raises:
        SampleError: a shard name is not ``<split>-<index:05d>.tar``, a member is not one of the schema's
            (named as ``<key>.<suffix>`` with the shard path), or a sample cannot be embedded.
        ShardError, ManifestError: a shard is unreadable or disagrees with the manifest.
    """
    shard_dir, out_dir = Path(shard_dir), Path(out_dir)
    manifest = load_manifest(shard_dir)
    manifest.check(shard_dir)
    indices = {}
    for entry in manifest.shards:
        match = _SHARD_RE.match(entry.name)
        if match is None or match["split"] not in SPLITS:
            raise SampleError(f"shard name {entry.name!r} in {shard_dir / MANIFEST_NAME} is not "
                              f"'<split>-<index:05d>.tar'")
        indices[entry.name] = int(match["index"])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        entries: list[ShardEntry] = []
        with _progress(progress) as bar:
            task = bar.add_task(f"embedding {shard_dir}", total=sum(e.samples for e in manifest.shards))
            for entry in manifest.shards:
                path = str(shard_dir / entry.name)
                writer = ShardWriter(staging, entry.split, max(1, entry.samples), start_index=indices[entry.name])
                with writer:
                    samples = _schema_members_only(read_shard(path, expected=entry.samples), path, entry.samples)
                    for group in _batches(samples, batch_size):
                        for new in embedder.update(group, shard=path):
                            writer.write_encoded({k: v for k, v in new.items()
                                                  if k == "__key__" or not k.startswith("__")})
                        bar.advance(task, len(group))
                info = writer.shards[0]
                entries.append(ShardEntry(entry.name, entry.split, info.samples, info.sha256, info.bytes))
        spec = manifest.spec.from_dict({**manifest.spec.to_dict(), "recognizer": embedder.name})
        updated = Manifest(spec, entries, manifest.statistics)
        updated.write(staging)
        _move_into(staging, out_dir, [e.name for e in entries])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return updated
