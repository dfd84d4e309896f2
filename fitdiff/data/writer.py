"""Deterministic shard writing: :class:`ShardWriter` (one split) and :class:`DatasetWriter` (all splits).

Shards are plain tar files named ``{split}-{index:05d}.tar``, written through webdataset's ``TarWriter``
with fixed headers (mtime 0, uid/gid 0, user/group ``fitdiff``, mode 0444, members sorted by name) and
deterministic PNG/NPY/JSON encoders, so the same samples in the same order give bit-identical files.
Each shard is written to ``<name>.partial`` and renamed only when complete: an interrupted run never
leaves a half shard under a final name.

Example (what a dataset generator does)::

    with DatasetWriter(out_dir, spec, samples_per_shard=256) as writer:
        for split, sample in generate():
            writer.write(split, sample)          # validated, encoded, statistics accumulated
    manifest = writer.manifest                   # manifest.json written on a clean exit
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds

from fitdiff.data.errors import SampleError
from fitdiff.data.manifest import MANIFEST_NAME, SPLITS, Manifest, ShardEntry, load_manifest, shard_name
from fitdiff.data.sample import FaceSample, check_key
from fitdiff.data.stats import DatasetStats
from fitdiff.data.validation import SampleSpec, validate_sample
from fitdiff.io import AtomicFile

__all__ = ["ShardInfo", "ShardWriter", "DatasetWriter", "dataset_statistics", "PARTIAL_SUFFIX"]

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
_TAR_USER = "fitdiff"
_TAR_MODE = 0o444
_TAR_MTIME = 0  # an int: a float mtime makes tarfile add a PAX header to every member


@dataclass
class ShardInfo:
    """A finished shard: its manifest entry, the keys it holds (in order) and its statistics."""

    name: str
    split: str
    samples: int
    sha256: str
    bytes: int
    keys: list[str] = field(default_factory=list)
    stats: DatasetStats = field(default_factory=DatasetStats)

    @property
    def entry(self) -> ShardEntry:
        return ShardEntry(self.name, self.split, self.samples, self.sha256, self.bytes)


class _HashingFile:
    """Write-only atomic file that hashes and counts what passes through (tar streams need only write).

    The bytes go to ``<path>.partial``; :meth:`commit` renames it onto ``path``, :meth:`discard` deletes it.
    """

    def __init__(self, path: Path) -> None:
        self.file = AtomicFile(path, temp_name=path.name + PARTIAL_SUFFIX)
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)

    def commit(self) -> None:
        self.file.commit()

    def discard(self) -> None:
        self.file.discard()


class ShardWriter:
    """Write the samples of one split into ``{split}-{index:05d}.tar`` shards of a fixed size.

    Args:
        out_dir: destination folder (created).
        split: split name, one of ``train``, ``val``, ``test``.
        samples_per_shard: samples per shard (the last shard may hold fewer).
        spec: when given, every sample goes through :func:`validate_sample` before it is written.
        start_index: index of the first shard.

    ``write`` returns the shard name the sample went to. Closing (or leaving the ``with`` block) finishes
    the open shard; an exception inside the block deletes the unfinished ``.partial`` file instead.
    Finished shards are in :attr:`shards`.
    """

    def __init__(
        self,
        out_dir: str | Path,
        split: str,
        samples_per_shard: int = 1000,
        *,
        spec: SampleSpec | None = None,
        start_index: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.samples_per_shard = int(samples_per_shard)
        self.spec = spec
        self.shards: list[ShardInfo] = []
        self._index = int(start_index)
        self._file: _HashingFile | None = None
        self._tar: wds.TarWriter | None = None
        self._current: ShardInfo | None = None
        self._seen: set[str] = set()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def current_name(self) -> str:
        """Name of the shard the next sample goes to."""
        return self._current.name if self._current is not None else shard_name(self.split, self._index)

    def _open(self) -> None:
        name = shard_name(self.split, self._index)
        self._file = _HashingFile(self.out_dir / name)
        self._tar = wds.TarWriter(
            self._file, user=_TAR_USER, group=_TAR_USER, mode=_TAR_MODE, encoder=False, mtime=_TAR_MTIME
        )
        self._current = ShardInfo(name=name, split=self.split, samples=0, sha256="", bytes=0)

    def write(self, sample: FaceSample) -> str:
        """Validate (when a spec was given), encode and append one sample; return its shard's name."""
        if self.spec is not None:
            validate_sample(sample, self.spec, shard=self.current_name)
        stats = DatasetStats()
        stats.add(sample)
        return self.write_encoded(sample.encode(), stats)

    def write_encoded(self, members: dict[str, Any], stats: DatasetStats | None = None) -> str:
        """Append already-encoded members (``{"__key__": key, "image.png": bytes, ...}``) as they are.

        Args:
            members: member suffix -> bytes, plus ``__key__``.
            stats: statistics of this sample to add to the shard's (optional).
        """
        key = members.get("__key__")
        check_key(key)
        if key in self._seen:
            raise SampleError("duplicate key within the split", shard=self.current_name, key=key)
        if self._tar is None:
            self._open()
        assert self._tar is not None and self._current is not None
        self._tar.write(members)
        self._seen.add(key)
        info = self._current
        info.samples += 1
        info.keys.append(key)
        if stats is not None:
            info.stats = info.stats.merge(stats)
        if info.samples >= self.samples_per_shard:
            self._finish()
        return info.name

    def _finish(self) -> None:
        if self._tar is None or self._file is None or self._current is None:
            return
        self._tar.close()  # writes the end-of-archive blocks
        self._file.commit()  # fsync, then rename <name>.partial -> <name>
        info = self._current
        info.sha256 = self._file.digest.hexdigest()
        info.bytes = self._file.size
        log.debug("wrote %s (%d samples, %d bytes)", info.name, info.samples, info.bytes)
        self.shards.append(info)
        self._tar = self._file = self._current = None
        self._index += 1

    def close(self) -> list[ShardInfo]:
        """Finish the open shard (if any); return every shard written."""
        self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the unfinished shard (its ``.partial`` file); finished shards stay. Never raises for the
        dropped shard (closing it may fail again, e.g. on a full disk: the file is deleted anyway)."""
        if self._tar is not None and self._file is not None and self._current is not None:
            try:
                self._tar.close()
            except Exception as exc:  # the tar's end blocks did not fit: the file goes anyway
                log.debug("closing the dropped shard %s failed: %s", self._current.name, exc)
            finally:
                self._file.discard()
        self._tar = self._file = self._current = None


def dataset_statistics(shards: list[ShardInfo], split: str = "train") -> dict[str, Any]:
    """Manifest statistics: merged moments of ``split``'s shards (all shards when that split is empty)."""
    chosen = [s for s in shards if s.split == split and s.samples]
    used = split
    if not chosen:
        chosen, used = [s for s in shards if s.samples], "all"
    total = DatasetStats()
    for info in chosen:
        total = total.merge(info.stats)
    return {"split": used, **total.summary()}


class DatasetWriter:
    """All splits of a dataset: one :class:`ShardWriter` per split, then ``manifest.json``.

    Args:
        out_dir: destination folder.
        spec: the samples' spec (validated on write; its recognizer / shape model go to the manifest).
        samples_per_shard: samples per shard.
        overwrite: allow writing into a folder that already has a manifest; shards the old manifest
            listed and the new one does not are deleted when the new manifest is written.
        validate: run :func:`validate_sample` on each sample.

    The manifest is written on :meth:`close` (a clean exit from the ``with`` block); on an exception the
    open shards are dropped and no manifest is written (an old one, with ``overwrite``, is removed once
    any of its shards was replaced).
    """

    def __init__(
        self,
        out_dir: str | Path,
        spec: SampleSpec,
        samples_per_shard: int = 1000,
        *,
        overwrite: bool = False,
        validate: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.spec = spec
        self.samples_per_shard = samples_per_shard
        self.validate = validate
        self._old: Manifest | None = None
        if (self.out_dir / MANIFEST_NAME).exists():
            if not overwrite:
                raise FileExistsError(f"{self.out_dir / MANIFEST_NAME} exists: pass overwrite=True to replace the dataset")
            self._old = load_manifest(self.out_dir)
        self.writers: dict[str, ShardWriter] = {}
        self.manifest: Manifest | None = None
        self._keys: dict[str, str] = {}

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        for writer in self.writers.values():
            writer.abort()
        replaced = [info.name for writer in self.writers.values() for info in writer.shards]
        if self._old is not None and replaced:
            # the old manifest no longer describes the folder: a reader must not trust it
            (self.out_dir / MANIFEST_NAME).unlink(missing_ok=True)
            log.warning("%s: writing the new dataset failed after %d shard(s) were replaced; removed the old %s",
                        self.out_dir, len(replaced), MANIFEST_NAME)

    def write(self, split: str, sample: FaceSample) -> str:
        """Write ``sample`` into ``split``; return the shard name. Keys must be unique across splits."""
        other = self._keys.get(sample.key)
        if other is not None:
            raise SampleError(f"duplicate key (already written to {other})", key=sample.key)
        if split not in self.writers:
            self.writers[split] = ShardWriter(
                self.out_dir, split, self.samples_per_shard, spec=self.spec if self.validate else None
            )
        name = self.writers[split].write(sample)
        self._keys[sample.key] = split
        return name

    def close(self) -> Manifest:
        """Finish every split and write ``manifest.json``; return the manifest."""
        if self.manifest is not None:
            return self.manifest
        shards = [info for split in SPLITS if split in self.writers for info in self.writers[split].close()]
        self.manifest = Manifest(self.spec, [s.entry for s in shards], dataset_statistics(shards))
        self.manifest.write(self.out_dir)
        if self._old is not None:
            keep = {s.name for s in shards}
            for entry in self._old.shards:
                if entry.name not in keep:
                    (self.out_dir / entry.name).unlink(missing_ok=True)
        log.info("wrote %d shards (%s) to %s", len(shards), self.manifest.counts, self.out_dir)
        return self.manifest
