"""Build train / val / test shards from a fitted-dataset folder (the logic of ``data_prep/build_shards.py``).

Input layout: :mod:`fitdiff.data.folder` (``SRC/<subject>/<image>/<member files>``). Steps:

1. find the sample folders; split the subjects (:func:`~fitdiff.data.split.assign_splits`);
2. infer the :class:`SampleSpec` (the most common among the first samples; overridable);
3. per split, cut the key-sorted samples into chunks of ``samples_per_shard``; chunk ``i`` becomes shard
   ``{split}-{i:05d}.tar`` holding the chunk's valid samples (rejects leave the shard shorter);
4. validate every sample; rejects go to ``rejects.jsonl`` (or, with ``strict``, stop the run);
5. write ``manifest.json`` with counts, checksums and the training split's statistics.

Resuming: ``.build_progress.json`` records every finished chunk (its inputs' names, sizes and mtimes,
the shard's sha256, statistics and rejects). A re-run with the same settings keeps each recorded shard
whose file still has the recorded sha256 and whose inputs are unchanged, and writes only the rest.
Before the first shard is rewritten the old ``manifest.json`` is removed, so a run that fails (a full
disk, a bad sample with ``strict``) never leaves a manifest listing shards that changed or are gone; each
shard is written under a temporary name, so no half shard is left either.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fitdiff.data.errors import SampleError
from fitdiff.data.folder import SampleFolder, find_sample_folders, read_folder_members
from fitdiff.data.manifest import MANIFEST_NAME, SCHEMA_VERSION, SPLITS, Manifest, ShardEntry, shard_name
from fitdiff.data.sample import MEMBERS, FaceSample, decode_sample, subject_of
from fitdiff.data.split import assign_splits
from fitdiff.data.stats import DatasetStats
from fitdiff.data.validation import SampleSpec, validate_sample
from fitdiff.data.writer import ShardInfo, ShardWriter, dataset_statistics
from fitdiff.io import atomic_write_text, sha256_file

__all__ = ["BuildReport", "build_shards", "PROGRESS_NAME", "REJECTS_NAME"]

log = logging.getLogger(__name__)

PROGRESS_NAME = ".build_progress.json"
REJECTS_NAME = "rejects.jsonl"
SPEC_PROBE = 16  # samples whose resolutions and dims vote for the dataset spec


@dataclass
class BuildReport:
    """What a build did: the manifest, shards written / kept, and the rejected samples."""

    manifest: Manifest
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    rejects: list[dict[str, str]] = field(default_factory=list)


def _inputs_digest(folders: list[SampleFolder]) -> str:
    """Digest of a chunk's input files: names, sizes and modification times (not contents)."""
    digest = hashlib.sha256()
    for folder in folders:
        digest.update(folder.name.encode() + b"\0")
        for member in sorted(MEMBERS.values()):
            path = folder.path / member
            if path.is_file():
                st = path.stat()
                digest.update(f"{member}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()


def _load(folder: SampleFolder) -> FaceSample:
    return decode_sample(read_folder_members(folder), coerce=True, shard=None)


def _infer_spec(folders: list[SampleFolder], overrides: dict[str, Any]) -> SampleSpec:
    specs: list[SampleSpec] = []
    for folder in folders:
        if len(specs) >= SPEC_PROBE:
            break
        try:
            specs.append(SampleSpec.from_sample(_load(folder), **overrides))
        except (SampleError, ValueError, TypeError):
            continue
    return common_spec(specs, f"first folder: {folders[0].path if folders else 'none'}")


def common_spec(specs: list[SampleSpec], where: str) -> SampleSpec:
    """The most common of the specs inferred from the first samples (a warning when they disagree);
    ``where`` names the input in the error raised when there is none."""
    if not specs:
        raise SampleError(f"none of the first samples decodes completely; cannot infer the dataset spec ({where})")
    spec, votes = Counter(specs).most_common(1)[0]
    if votes < len(specs):
        log.warning("samples disagree on resolutions/dims; using the most common spec (%d of %d): %s",
                    votes, len(specs), spec)
    return spec


def _read_progress(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("%s is unreadable: starting over", path)
        return {}


def _write_progress(path: Path, progress: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(progress, sort_keys=True))


def progress_bar(enabled: bool):
    """A rich progress bar (description, bar, done / total, time left); shown only when ``enabled``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


def build_shards(
    src: str | Path,
    out: str | Path,
    *,
    samples_per_shard: int = 1000,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 0,
    strict: bool = False,
    spec_overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> BuildReport:
    """Validate the samples under ``src`` and write subject-split shards plus ``manifest.json`` to ``out``.

    Args:
        src: fitted-dataset folder (``SRC/<subject>/<image>/...``).
        out: shard folder (created; re-running resumes).
        samples_per_shard: input samples per shard (a shard holds fewer when some are rejected).
        val_fraction, test_fraction: fractions of subjects in val / test.
        seed: seed of the subject split.
        strict: raise :class:`SampleError` at the first bad sample instead of rejecting it.
        spec_overrides: :class:`SampleSpec` fields to force (e.g. ``{"specular_channels": 3}``).
        progress: show a progress bar.

    Returns:
        A :class:`BuildReport`.
    """
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folders = find_sample_folders(src)
    if not folders:
        raise FileNotFoundError(f"{src} holds no sample folders (<subject>/<image>/); see data_prep/README.md")
    bad_names = [f for f in folders if f.key is None]
    folders = [f for f in folders if f.key is not None]
    early_rejects = [{"key": f.name, "field": "", "reason": f"bad folder name: {f.problem}"} for f in bad_names]
    if bad_names and strict:
        raise SampleError(early_rejects[0]["reason"], key=bad_names[0].name)

    spec = _infer_spec(folders, dict(spec_overrides or {}))
    splits = assign_splits((subject_of(f.key) for f in folders), val_fraction, test_fraction, seed)
    settings = {"schema_version": SCHEMA_VERSION, "samples_per_shard": samples_per_shard, "val_fraction": val_fraction,
                "test_fraction": test_fraction, "seed": seed, "spec": spec.to_dict()}

    progress_path = out / PROGRESS_NAME
    record = _read_progress(progress_path)
    if record.get("settings") != settings:
        for name in record.get("chunks", {}):  # shards of an earlier plan
            (out / name).unlink(missing_ok=True)
        record = {"settings": settings, "chunks": {}}
    chunks_done: dict[str, Any] = record["chunks"]

    plan: list[tuple[str, int, list[SampleFolder]]] = []
    for split in SPLITS:
        members = sorted((f for f in folders if splits[subject_of(f.key)] == split), key=lambda f: f.key)
        for index, start in enumerate(range(0, len(members), samples_per_shard)):
            plan.append((split, index, members[start:start + samples_per_shard]))
    planned = {shard_name(split, index) for split, index, _ in plan}
    for name in list(chunks_done):
        if name not in planned:
            (out / name).unlink(missing_ok=True)
            del chunks_done[name]

    report_written, report_kept = [], []
    with progress_bar(progress) as bar:
        task = bar.add_task(f"shards -> {out}", total=len(folders))
        for split, index, chunk in plan:
            name = shard_name(split, index)
            digest = _inputs_digest(chunk)
            done = chunks_done.get(name)
            if done is not None and done["inputs"] == digest and _shard_intact(out / name, done):
                report_kept.append(name)
                bar.advance(task, len(chunk))
                continue
            # a shard is about to change: an earlier manifest would list it as it was (or list it when
            # it is gone after a failure), so it goes first; the new one is written at the end
            (out / MANIFEST_NAME).unlink(missing_ok=True)
            chunks_done[name] = _build_chunk(out, split, index, chunk, spec, strict, samples_per_shard,
                                             lambda: bar.advance(task))
            chunks_done[name]["inputs"] = digest
            if chunks_done[name]["samples"]:
                report_written.append(name)
            _write_progress(progress_path, record)

    infos, rejects = [], list(early_rejects)
    for split, index, _ in plan:
        done = chunks_done[shard_name(split, index)]
        rejects.extend(done["rejects"])
        if done["samples"]:
            infos.append(ShardInfo(shard_name(split, index), split, done["samples"], done["sha256"], done["bytes"],
                                   stats=DatasetStats.from_dict(done["stats"])))
    atomic_write_text(out / REJECTS_NAME, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects))
    manifest = Manifest(spec, [ShardEntry(i.name, i.split, i.samples, i.sha256, i.bytes) for i in infos],
                        dataset_statistics(infos))
    manifest.write(out)
    log.info("%s: %s samples in %d shards (%d written, %d kept), %d rejected", out, manifest.counts, len(infos),
             len(report_written), len(report_kept), len(rejects))
    return BuildReport(manifest, report_written, report_kept, rejects)


def _shard_intact(path: Path, done: dict[str, Any]) -> bool:
    if not done["samples"]:
        return not path.exists()
    return path.is_file() and path.stat().st_size == done["bytes"] and sha256_file(path) == done["sha256"]


def _build_chunk(
    out: Path, split: str, index: int, chunk: list[SampleFolder], spec: SampleSpec, strict: bool,
    samples_per_shard: int, advance,
) -> dict[str, Any]:
    """Validate and write one chunk's samples into shard ``index``; return its progress record."""
    name = shard_name(split, index)
    (out / name).unlink(missing_ok=True)
    rejects: list[dict[str, str]] = []
    with ShardWriter(out, split, samples_per_shard, start_index=index) as writer:
        for folder in chunk:
            try:
                sample = _load(folder)
                validate_sample(sample, spec)
            except SampleError as exc:
                if strict:
                    raise exc.located(shard=name) from None
                rejects.append({"key": folder.key or folder.name, "field": exc.field or "", "reason": exc.reason,
                                "folder": str(folder.path)})
                advance()
                continue
            writer.write(sample)
            advance()
    if not writer.shards:
        return {"samples": 0, "sha256": None, "bytes": 0, "stats": {}, "rejects": rejects}
    info = writer.shards[0]
    return {"samples": info.samples, "sha256": info.sha256, "bytes": info.bytes, "stats": info.stats.to_dict(),
            "rejects": rejects}
