"""Pre-encode face shards into latent shards (the logic of ``data_prep/encode_latents.py``).

For every face shard ``{split}-{i:05d}.tar`` of ``--data`` (manifest order) the frozen autoencoder
(eval, inference mode) encodes the reflectance maps to pre-quantisation latents, batch by batch within the
shard, and one latent shard of the same name is written to ``--out``
(:mod:`fitdiff.data.latents`: ``latent.npy``, ``shape.npy``, ``id.npy``, ``meta.json``). The packed latents
of the training split (:class:`~fitdiff.ldm.layout.LatentLayout`) feed a float64
:class:`~fitdiff.ldm.latent_stats.LatentStatsAccumulator`, one per shard, merged in shard order.
``latents.json`` is written last, atomically.

Resuming: ``.encode_progress.json`` records every finished shard (its face shard's sha256, the latent
shard's sha256 and size, its statistics). A re-run with the same autoencoder file, layout and storage dtype
keeps each recorded shard whose file still has the recorded sha256 and whose face shard is unchanged, and
encodes the rest; a shard cut short by an interruption exists only as ``<name>.partial`` and is redone.
Batches never span shards, so a resumed run writes the same bytes as an uninterrupted one (for the same
batch size, device and library versions).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fitdiff.autoencoder.weights import load_autoencoder
from fitdiff.data.batch import FaceCollate
from fitdiff.data.codecs import encode_json, encode_npy
from fitdiff.data.errors import ManifestError, SampleError
from fitdiff.data.latent_manifest import LATENT_MANIFEST_NAME, LATENT_SCHEMA_VERSION, LatentManifest
from fitdiff.data.latents import LATENT_DTYPES, LATENT_MEMBERS
from fitdiff.data.manifest import MANIFEST_NAME, SPLITS, Manifest, ShardEntry, load_manifest, shard_name
from fitdiff.data.sample import FaceSample, decode_sample
from fitdiff.data.stream import read_shard
from fitdiff.data.validation import validate_sample
from fitdiff.data.writer import ShardWriter
from fitdiff.io import atomic_write_text, sha256_file
from fitdiff.ldm.latent_stats import LatentStats, LatentStatsAccumulator
from fitdiff.ldm.layout import LatentLayout

__all__ = ["PROGRESS_NAME", "EncodeReport", "encode_latents", "latent_statistics", "resolve_device"]

log = logging.getLogger(__name__)

PROGRESS_NAME = ".encode_progress.json"


@dataclass
class EncodeReport:
    """What a run did: the manifest, the latent shards written and those kept from an earlier run."""

    manifest: LatentManifest
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` / ``None`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _progress_bar(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        log.warning("%s is unreadable: starting over", path)
        return {}


def _intact(path: Path, done: dict[str, Any]) -> bool:
    return path.is_file() and path.stat().st_size == done["bytes"] and sha256_file(path) == done["sha256"]


def _batches(path: Path, entry: ShardEntry, fields: tuple[str, ...], spec, validate: bool, batch_size: int
             ) -> Iterator[list[FaceSample]]:
    """Decoded (and validated) face samples of one shard, ``batch_size`` at a time."""
    batch: list[FaceSample] = []
    for raw in read_shard(str(path), fields, entry.samples):
        sample = decode_sample(raw, fields=fields, shard=entry.name)
        if validate:
            validate_sample(sample, spec, fields=fields, shard=entry.name)
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _shard_latents(
    net: torch.nn.Module, path: Path, entry: ShardEntry, *, spec, fields: tuple[str, ...], batch_size: int,
    device: torch.device, dtype: np.dtype, validate: bool,
) -> Iterator[tuple[list[FaceSample], torch.Tensor, np.ndarray]]:
    """(samples, their (B, K) shape coefficients, their (B, Cm, H, W) latents as stored) per batch of a shard."""
    collate = FaceCollate(fields)
    for samples in _batches(path, entry, fields, spec, validate, batch_size):
        batch = collate(samples)
        with torch.inference_mode():
            z = net.encode(batch.to(device)).float().cpu()
        stored = z.numpy().astype(dtype)
        if not np.isfinite(stored).all():
            bad = samples[int(np.flatnonzero(~np.isfinite(stored).reshape(len(samples), -1).all(1))[0])].key
            raise SampleError(f"the autoencoder's latent is not finite (as {dtype.name})", shard=entry.name, key=bad)
        yield samples, batch.shape, stored


def _encode_shard(
    net: torch.nn.Module, layout: LatentLayout, src: Path, entry: ShardEntry, out: Path, index: int, *,
    spec, fields: tuple[str, ...], batch_size: int, device: torch.device, dtype: np.dtype, validate: bool,
    advance: Callable[[int], None],
) -> dict[str, Any]:
    """Encode one face shard into latent shard ``{split}-{index:05d}.tar``; return its progress record."""
    source_sha = sha256_file(src / entry.name)
    if source_sha != entry.sha256:
        raise ManifestError(f"shard {src / entry.name}: sha256 {source_sha} does not match the manifest's {entry.sha256}")
    name = shard_name(entry.split, index)
    (out / name).unlink(missing_ok=True)
    stats = LatentStatsAccumulator(layout)
    with ShardWriter(out, entry.split, max(1, entry.samples), start_index=index) as writer:
        for samples, shape, stored in _shard_latents(net, src / entry.name, entry, spec=spec, fields=fields,
                                                     batch_size=batch_size, device=device, dtype=dtype,
                                                     validate=validate):
            if entry.split == "train":
                stats.update(layout.pack(torch.from_numpy(stored).double(), shape.double()))
            for i, sample in enumerate(samples):
                writer.write_encoded({
                    "__key__": sample.key,
                    LATENT_MEMBERS["latent"]: encode_npy(stored[i]),
                    LATENT_MEMBERS["shape"]: encode_npy(np.asarray(sample.shape, np.float32)),
                    LATENT_MEMBERS["identity"]: encode_npy(np.asarray(sample.identity, np.float32)),
                    LATENT_MEMBERS["meta"]: encode_json(sample.meta),
                })
            advance(len(samples))
    info = writer.shards[0]
    return {"source": entry.name, "source_sha256": entry.sha256, "sha256": info.sha256, "bytes": info.bytes,
            "samples": info.samples, "stats": stats.state_dict() if entry.split == "train" else None}


def encode_latents(
    autoencoder: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = "auto",
    overwrite: bool = False,
    packing: str = "repeat",
    latent_dtype: str = "float32",
    validate: bool = True,
    progress: bool = True,
) -> EncodeReport:
    """Encode every split of the face shards in ``data`` into latent shards plus ``latents.json`` in ``out``.

    Args:
        autoencoder: ``.safetensors`` export (or ``.ckpt``) of the autoencoder (:func:`load_autoencoder`).
        data: face-shard folder (``manifest.json``).
        out: latent-shard folder (created; re-running resumes).
        batch_size: samples per encoder batch.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        overwrite: replace latents made by another autoencoder / layout / dtype in ``out`` (without it,
            such a folder is refused), and encode every shard anew.
        packing: shape packing of the layout (``"repeat"`` or ``"flat"``, see :mod:`fitdiff.ldm.layout`).
        latent_dtype: storage of ``latent.npy``: ``"float32"`` (default, exact) or ``"float16"`` (half the size).
        validate: check every face sample against the dataset spec before encoding it.
        progress: show a progress bar.

    Raises:
        FileExistsError: ``out`` holds latents of other settings and ``overwrite`` is False.
        ManifestError, SampleError, ShardError: bad input, naming the shard and sample.
    """
    if latent_dtype not in LATENT_DTYPES:
        raise ValueError(f"latent_dtype must be one of {', '.join(LATENT_DTYPES)}, got {latent_dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    autoencoder, src, out = Path(autoencoder), Path(data), Path(out)
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the face-shard folder: the latent shards would replace the face shards")
    source: Manifest = load_manifest(src)
    source.check(src)
    spec = source.spec
    if not autoencoder.is_file():
        raise FileNotFoundError(f"no autoencoder weights at {autoencoder}")
    ae_sha = sha256_file(autoencoder)
    dev = resolve_device(device)
    net = load_autoencoder(autoencoder, map_location=dev)
    maps = list(net.maps)
    if "specular" in net.maps and net.maps["specular"] != spec.specular_channels:
        raise ValueError(f"the autoencoder {autoencoder} takes {net.maps['specular']}-channel specular maps, "
                         f"the shards in {src} hold {spec.specular_channels}")
    layout = LatentLayout.from_autoencoder(net, spec.uv_resolution, spec.shape_dim, packing)
    fields = (*maps, "shape", "identity", "meta")
    settings = {"schema_version": LATENT_SCHEMA_VERSION, "autoencoder_sha256": ae_sha, "layout": layout.to_dict(),
                "latent_dtype": latent_dtype}

    out.mkdir(parents=True, exist_ok=True)
    previous = _read_json(out / LATENT_MANIFEST_NAME)
    earlier = {str(e.get("name")) for e in previous.get("shards", []) if isinstance(e, dict)}
    if previous and not overwrite:
        made = {"autoencoder_sha256": (previous.get("autoencoder") or {}).get("sha256"),
                "layout": previous.get("layout"), "latent_dtype": (previous.get("sample") or {}).get("latent_dtype")}
        differs = [k for k, v in made.items() if v != settings[k]]
        if differs:
            raise FileExistsError(
                f"{out / LATENT_MANIFEST_NAME} holds latents of other settings ({', '.join(differs)}; autoencoder "
                f"sha256 {made['autoencoder_sha256']} there, {ae_sha} for {autoencoder}): pass overwrite=True "
                f"(--overwrite) to replace them")
    progress_path = out / PROGRESS_NAME
    record = _read_json(progress_path)
    earlier |= set(record.get("shards", {}))
    if overwrite or record.get("settings") != settings:
        for name in record.get("shards", {}):  # shards of other settings
            (out / name).unlink(missing_ok=True)
        record = {"settings": settings, "shards": {}}
    done: dict[str, Any] = record["shards"]

    plan = [(entry, index) for split in SPLITS
            for index, entry in enumerate(e for e in source.shards_for(split) if e.samples > 0)]
    planned = {shard_name(e.split, i) for e, i in plan}
    for name in list(done):
        if name not in planned:
            (out / name).unlink(missing_ok=True)
            del done[name]
    stale = []
    for entry, index in plan:
        name = shard_name(entry.split, index)
        previous_shard = done.get(name)
        if not (previous_shard and previous_shard["source_sha256"] == entry.sha256 and _intact(out / name, previous_shard)):
            stale.append(name)
    if stale:  # the old manifest must not describe shards about to change
        (out / LATENT_MANIFEST_NAME).unlink(missing_ok=True)

    written, kept = [], []
    log.info("encoding %s with %s (sha256 %s) on %s: %s", src, autoencoder, ae_sha, dev, layout)
    with _progress_bar(progress) as bar:
        task = bar.add_task(f"latents -> {out}", total=sum(e.samples for e, _ in plan))
        for entry, index in plan:
            name = shard_name(entry.split, index)
            if name not in stale:
                kept.append(name)
                bar.advance(task, entry.samples)
                continue
            done[name] = _encode_shard(net, layout, src, entry, out, index, spec=spec, fields=fields,
                                       batch_size=batch_size, device=dev, dtype=np.dtype(latent_dtype),
                                       validate=validate, advance=lambda n: bar.advance(task, n))
            written.append(name)
            atomic_write_text(progress_path, json.dumps(record, sort_keys=True))

    train = [shard_name(e.split, i) for e, i in plan if e.split == "train"]
    if not train:
        raise ValueError(f"{src / MANIFEST_NAME} lists no training samples: the latent statistics need some")
    total = LatentStatsAccumulator(layout)
    for name in train:
        total = total.merge(LatentStatsAccumulator.from_state_dict(layout, done[name]["stats"]))
    shards = [ShardEntry(n, e.split, done[n]["samples"], done[n]["sha256"], done[n]["bytes"])
              for n, e in ((shard_name(e.split, i), e) for e, i in plan)]
    manifest = LatentManifest(
        shards=shards,
        sample={"members": [LATENT_MEMBERS[f] for f in ("latent", "shape", "identity", "meta")],
                "latent_dtype": latent_dtype, "latent_shape": list(layout.map_shape), "shape_dim": spec.shape_dim,
                "identity_dim": spec.identity_dim, "quantized": False},
        autoencoder={"path": str(autoencoder), "sha256": ae_sha, "config": net.config, "maps": maps,
                     "downsampling_factor": int(net.downsampling_factor)},
        source={"path": str(src), "manifest_sha256": sha256_file(src / MANIFEST_NAME),
                "shape_model": spec.shape_model, "recognizer": spec.recognizer, "uv_resolution": spec.uv_resolution,
                "specular_channels": spec.specular_channels, "counts": source.counts},
        layout=layout.to_dict(),
        statistics=total.result("train").to_dict(),
        sources={n: {"source": done[n]["source"], "source_sha256": done[n]["source_sha256"]} for n in planned},
    )
    manifest.write(out)
    for name in sorted(earlier - planned):  # shards of an earlier dataset or plan that no manifest lists now
        if name and "/" not in name and name.endswith(".tar"):
            (out / name).unlink(missing_ok=True)
    log.info("%s: %s latents in %d shards (%d written, %d kept)", out, manifest.counts, len(shards), len(written),
             len(kept))
    return EncodeReport(manifest, written, kept)


def latent_statistics(
    autoencoder: torch.nn.Module | str | Path,
    data: str | Path,
    *,
    packing: str = "repeat",
    split: str = "train",
    batch_size: int = 32,
    device: str | torch.device | None = "auto",
    validate: bool = False,
    progress: bool = True,
) -> LatentStats:
    """Packed-latent statistics of a face-shard split, encoded on the fly (nothing is written).

    For training on face shards with on-the-fly encoding when no ``latents.json`` of the same
    autoencoder exists: the same accumulation as :func:`encode_latents` (shard by shard, merged in shard
    order), so the result equals the manifest's statistics for the same batch size and device.

    Args:
        autoencoder: the frozen network (its device is used) or its file.
        data: face-shard folder.
        packing: layout packing.
        split: the split to accumulate (``"train"``).
        batch_size, validate, progress: as :func:`encode_latents`.
        device: device when ``autoencoder`` is a file.
    """
    src = Path(data)
    source = load_manifest(src)
    source.check(src, splits=[split])
    if isinstance(autoencoder, (str, Path)):
        dev = resolve_device(device)
        net = load_autoencoder(autoencoder, map_location=dev)
    else:
        net = autoencoder
        dev = next(net.parameters()).device
    spec = source.spec
    layout = LatentLayout.from_autoencoder(net, spec.uv_resolution, spec.shape_dim, packing)
    fields = (*net.maps, "shape", "identity", "meta")
    entries = [e for e in source.shards_for(split) if e.samples > 0]
    if not entries:
        raise ValueError(f"{src / MANIFEST_NAME} lists no {split} samples")
    total = LatentStatsAccumulator(layout)
    was_training = net.training
    net.eval()
    try:
        with _progress_bar(progress) as bar:
            task = bar.add_task(f"latent statistics ({split})", total=sum(e.samples for e in entries))
            for entry in entries:
                shard = LatentStatsAccumulator(layout)
                for samples, shape, stored in _shard_latents(net, src / entry.name, entry, spec=spec, fields=fields,
                                                             batch_size=batch_size, device=dev,
                                                             dtype=np.dtype(np.float32), validate=validate):
                    shard.update(layout.pack(torch.from_numpy(stored).double(), shape.double()))
                    bar.advance(task, len(samples))
                total = total.merge(shard)
    finally:
        net.train(was_training)
    return total.result(split)
