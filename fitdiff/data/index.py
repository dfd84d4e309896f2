"""``manifest.json`` for a folder of existing shards (the logic of ``data_prep/build_shards.py --index``).

Shards written by another tool (``webdataset.TarWriter``, GNU tar, ...) whose members carry the schema's
names (``<key>.image.png``, ``<key>.normals.npy``, ...; :data:`~fitdiff.data.sample.MEMBERS`) become a
dataset the DataModule reads. Steps:

1. every ``*.tar`` file directly in the folder is a shard (hidden and ``.partial`` files are not); its
   split is the one its file name says (:func:`split_from_name`), else ``split`` for all such shards;
   shards without samples are left out of the manifest;
2. the :class:`SampleSpec` is inferred from the first samples (the most common; overridable);
3. every sample of every shard is decoded and validated against it, keys must be unique in the folder;
4. per shard: size, sha256 and sample count; the statistics of the training split (of every sample when
   it is empty), as the shard writer computes them;
5. ``manifest.json`` is written atomically.

The shards are only read (their bytes and modification times stay as they were). The manifest must
describe the shards as they are, so one invalid sample fails the whole index: nothing is written and
the error lists every invalid sample. A subject found in two splits is only warned about (indexing
cannot move samples between shards).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fitdiff.data.build import SPEC_PROBE, common_spec, progress_bar
from fitdiff.data.errors import InvalidShardsError, SampleError
from fitdiff.data.manifest import MANIFEST_NAME, SPLITS, Manifest, ShardEntry
from fitdiff.data.sample import FaceSample, decode_sample, subject_of
from fitdiff.data.stats import DatasetStats
from fitdiff.data.stream import read_shard
from fitdiff.data.validation import SampleSpec, validate_sample
from fitdiff.data.writer import PARTIAL_SUFFIX, ShardInfo, dataset_statistics
from fitdiff.io import sha256_file

__all__ = ["IndexReport", "index_shards", "find_shards", "split_from_name", "SPLIT_WORDS"]

log = logging.getLogger(__name__)

#: words of a shard file name that say its split (case-insensitive, not part of a longer word)
SPLIT_WORDS: dict[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
_WORD_RE = re.compile(r"[a-z]+")
_LISTED_PROBLEMS = 10


@dataclass
class IndexReport:
    """What an index found: the manifest written, each shard's split and how that split was chosen."""

    manifest: Manifest
    splits: dict[str, str] = field(default_factory=dict)  #: shard name -> split
    by_name: list[str] = field(default_factory=list)  #: shards whose file name said the split


def split_from_name(name: str) -> str | None:
    """The split a shard's file name says (``train-00000.tar``, ``faces_val_3.tar``), or ``None``.

    The name (without ``.tar``) is cut into runs of letters; a run equal to a word of :data:`SPLIT_WORDS`
    names the split (``contest`` or ``eval`` do not).

    Raises:
        ValueError: the name holds words of two different splits.
    """
    stem = name[: -len(".tar")] if name.endswith(".tar") else name
    found = {SPLIT_WORDS[w] for w in _WORD_RE.findall(stem.lower()) if w in SPLIT_WORDS}
    if len(found) > 1:
        raise ValueError(f"shard name {name!r} names two splits ({', '.join(sorted(found))}): rename it")
    return found.pop() if found else None


def find_shards(directory: str | Path) -> list[Path]:
    """The ``*.tar`` files directly in ``directory``, by name (hidden and unfinished files excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a folder")
    return sorted(p for p in directory.glob("*.tar")
                  if p.is_file() and not p.name.startswith(".") and not p.name.endswith(PARTIAL_SUFFIX))


def _assign_splits(shards: list[Path], split: str | None) -> tuple[dict[str, str], list[str]]:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    splits, by_name, unnamed = {}, [], []
    for path in shards:
        named = split_from_name(path.name)
        if named is not None:
            splits[path.name] = named
            by_name.append(path.name)
        elif split is not None:
            splits[path.name] = split
        else:
            unnamed.append(path.name)
    if unnamed:
        listed = ", ".join(unnamed[:5]) + (f" and {len(unnamed) - 5} more" if len(unnamed) > 5 else "")
        raise ValueError(
            f"the file name of {len(unnamed)} shard(s) does not say train, val or test ({listed}): choose their "
            f"split with --split train|val|test, or rename them (e.g. val-00000.tar)"
        )
    return splits, by_name


def _infer_spec(shards: list[Path], overrides: dict[str, Any]) -> SampleSpec:
    """The most common spec among the first decodable samples."""
    specs: list[SampleSpec] = []
    for path in shards:
        for raw in read_shard(str(path)):
            if len(specs) >= SPEC_PROBE:
                break
            try:
                specs.append(SampleSpec.from_sample(decode_sample(raw, shard=str(path)), **overrides))
            except (SampleError, ValueError, TypeError):
                continue
        if len(specs) >= SPEC_PROBE:
            break
    return common_spec(specs, f"members image.png, diffuse.png, ...; first shard: {shards[0]}")


def _index_shard(
    path: Path, split: str, spec: SampleSpec, keys: dict[str, str], subjects: dict[str, set[str]],
    problems: list[SampleError],
) -> ShardInfo:
    """Read, validate and hash one shard; bad samples go to ``problems``."""
    before = path.stat()
    digest = sha256_file(path)
    stats, count = DatasetStats(), 0
    for raw in read_shard(str(path)):
        count += 1
        try:
            sample: FaceSample = decode_sample(raw, shard=str(path))
            validate_sample(sample, spec, shard=str(path))
            other = keys.get(sample.key)
            if other is not None:
                raise SampleError(f"duplicate key: also in shard {other}", shard=str(path), key=sample.key)
        except SampleError as exc:
            problems.append(exc)
            continue
        keys[sample.key] = str(path)
        subjects.setdefault(subject_of(sample.key), set()).add(split)
        stats.add(sample)
    after = path.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise SampleError(f"shard {path} changed while it was indexed: index it again once it is complete")
    return ShardInfo(path.name, split, count, digest, before.st_size, stats=stats)


def index_shards(
    directory: str | Path,
    *,
    split: str | None = None,
    spec_overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> IndexReport:
    """Validate every sample of the shards in ``directory`` and write its ``manifest.json`` (see module doc).

    Args:
        directory: the shard folder; its shards are only read.
        split: split of the shards whose file name says none (``None``: such shards are an error).
        spec_overrides: :class:`SampleSpec` fields to force (``{"specular_channels": 3}``, tolerances).
        overwrite: replace an existing ``manifest.json`` (else refuse).
        progress: show a progress bar.

    Raises:
        FileNotFoundError: the folder does not exist or holds no ``*.tar`` file.
        FileExistsError: a manifest exists and ``overwrite`` is false.
        ValueError: a shard's split is unknown or ambiguous.
        InvalidShardsError: invalid or duplicate samples (all of them in ``.problems``); nothing written.
        ShardError: a shard is not a readable tar archive.
    """
    directory = Path(directory)
    shards = find_shards(directory)
    if not shards:
        raise FileNotFoundError(f"{directory} holds no .tar shards")
    if (directory / MANIFEST_NAME).exists() and not overwrite:
        raise FileExistsError(f"{directory / MANIFEST_NAME} exists: pass --overwrite to index the shards again")
    splits, by_name = _assign_splits(shards, split)
    spec = _infer_spec(shards, dict(spec_overrides or {}))
    keys: dict[str, str] = {}
    subjects: dict[str, set[str]] = {}
    problems: list[SampleError] = []
    infos: list[ShardInfo] = []
    with progress_bar(progress) as bar:
        task = bar.add_task(f"indexing {directory}", total=len(shards))
        for path in shards:
            infos.append(_index_shard(path, splits[path.name], spec, keys, subjects, problems))
            bar.advance(task)
    if problems:
        listed = "; ".join(str(p) for p in problems[:_LISTED_PROBLEMS])
        more = f"; and {len(problems) - _LISTED_PROBLEMS} more" if len(problems) > _LISTED_PROBLEMS else ""
        raise InvalidShardsError(
            f"{len(problems)} invalid sample(s) in {directory}, no manifest written (the manifest must describe the "
            f"shards as they are: rewrite or remove the shards that hold them): {listed}{more}", problems)
    shared = sorted(s for s, found in subjects.items() if len(found) > 1)
    if shared:
        log.warning("%d subject(s) appear in more than one split (e.g. %r in %s): their identities leak between "
                    "splits", len(shared), shared[0], ", ".join(sorted(subjects[shared[0]])))
    empty = [i.name for i in infos if not i.samples]
    if empty:
        log.warning("%d shard(s) hold no sample and are left out of the manifest: %s", len(empty), ", ".join(empty))
    infos = [i for i in infos if i.samples]
    entries = [ShardEntry(i.name, i.split, i.samples, i.sha256, i.bytes) for i in infos]
    manifest = Manifest(spec, entries, dataset_statistics(infos))
    manifest.write(directory)
    log.info("%s: indexed %s samples in %d shards", directory, manifest.counts, len(infos))
    return IndexReport(manifest, {i.name: i.split for i in infos}, by_name)
