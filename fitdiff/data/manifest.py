"""``manifest.json``: what a shard directory holds, and the checks readers run before training.

Layout::

    {
      "schema_version": 1,
      "format": "fitdiff-face-shards",
      "spec": {...SampleSpec...},           # resolutions, dims, recognizer, shape model
      "counts": {"train": n, "val": n, "test": n},
      "shards": [{"name": "train-00000.tar", "split": "train", "samples": n, "sha256": "...", "bytes": n}],
      "statistics": {"split": "train", "samples": n,
                     "diffuse": {"mean": [3], "std": [3]}, "specular": {...}, "normals": {...},
                     "shape": {"mean": [K], "std": [K]}}
    }

The file is written deterministically (sorted keys, no timestamps): identical shards give an identical
manifest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fitdiff.data.errors import ManifestError
from fitdiff.data.remote import check_remote_shards, is_url, join_url, load_json_url
from fitdiff.data.validation import SampleSpec
from fitdiff.io import atomic_write_text, sha256_file

__all__ = [
    "SCHEMA_VERSION",
    "MANIFEST_NAME",
    "SPLITS",
    "ShardEntry",
    "Manifest",
    "write_manifest",
    "load_manifest",
    "shard_name",
    "check_shard_files",
]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
FORMAT = "fitdiff-face-shards"
SPLITS: tuple[str, ...] = ("train", "val", "test")


def shard_name(split: str, index: int) -> str:
    """``{split}-{index:05d}.tar``."""
    return f"{split}-{index:05d}.tar"


@dataclass(frozen=True)
class ShardEntry:
    """One shard: file name (relative to the manifest), split, sample count, sha256, size in bytes."""

    name: str
    split: str
    samples: int
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "split": self.split, "samples": self.samples, "sha256": self.sha256,
                "bytes": self.bytes}


@dataclass
class Manifest:
    """Parsed ``manifest.json``.

    Attributes:
        spec: the samples' :class:`SampleSpec` (recognizer and shape-model ids included).
        shards: every shard, in split order then index order.
        statistics: normalisation statistics (see module doc).
        schema_version: format version of the shards.
    """

    spec: SampleSpec
    shards: list[ShardEntry]
    statistics: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def counts(self) -> dict[str, int]:
        """Samples per split (every split of :data:`SPLITS` present, possibly 0)."""
        counts = dict.fromkeys(SPLITS, 0)
        for entry in self.shards:
            counts[entry.split] = counts.get(entry.split, 0) + entry.samples
        return counts

    @property
    def recognizer(self) -> str | None:
        return self.spec.recognizer

    @property
    def shape_model(self) -> str | None:
        return self.spec.shape_model

    def shards_for(self, split: str) -> list[ShardEntry]:
        """The shards of ``split``, in file-name order."""
        return sorted((e for e in self.shards if e.split == split), key=lambda e: e.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "format": FORMAT,
            "spec": self.spec.to_dict(),
            "recognizer": self.spec.recognizer,
            "shape_model": self.spec.shape_model,
            "image_resolution": self.spec.image_resolution,
            "uv_resolution": self.spec.uv_resolution,
            "counts": self.counts,
            "shards": [e.to_dict() for e in sorted(self.shards, key=lambda e: (_split_rank(e.split), e.name))],
            "statistics": self.statistics,
        }

    def write(self, directory: str | Path) -> Path:
        """Write ``directory/manifest.json`` atomically (temp file + rename); return its path."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        return atomic_write_text(Path(directory) / MANIFEST_NAME, text)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_NAME) -> Manifest:
        """Parse and check the structure; raise :class:`ManifestError` naming ``where`` and the problem."""
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"{where}: schema_version {version!r} is not supported (this code reads {SCHEMA_VERSION}); "
                f"rebuild the shards with data_prep/build_shards.py"
            )
        try:
            spec = SampleSpec.from_dict(data["spec"])
            shards = [ShardEntry(str(e["name"]), str(e["split"]), int(e["samples"]), str(e["sha256"]),
                                 int(e["bytes"])) for e in data["shards"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed ({type(exc).__name__}: {exc})") from exc
        names = [e.name for e in shards]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ManifestError(f"{where}: shard(s) listed twice: {', '.join(duplicates)}")
        for entry in shards:
            if entry.split not in SPLITS:
                raise ManifestError(f"{where}: shard {entry.name} has unknown split {entry.split!r}")
            if "/" in entry.name or entry.name.startswith("."):
                raise ManifestError(f"{where}: shard name {entry.name!r} must be a plain file name")
        manifest = cls(spec=spec, shards=shards, statistics=dict(data.get("statistics") or {}))
        stated = data.get("counts")
        if stated is not None and {k: v for k, v in stated.items() if v} != {k: v for k, v in manifest.counts.items() if v}:
            raise ManifestError(f"{where}: counts {stated} disagree with the shard list {manifest.counts}")
        return manifest

    def check(self, directory: str | Path, *, verify_checksums: bool = False, splits: Iterable[str] | None = None) -> None:
        """Check that the listed shards exist with the listed size (and, optionally, sha256).

        Args:
            directory: the folder holding the manifest and the shards, or its URL (see
                :func:`check_shard_files` for what is checked there).
            verify_checksums: also hash every shard (reads all the data).
            splits: only check these splits (default all).

        Raises:
            ManifestError: naming the first shard that is missing, of the wrong size or checksum.
        """
        check_shard_files(directory, self.shards, MANIFEST_NAME, verify_checksums=verify_checksums, splits=splits)


def check_shard_files(
    directory: str | Path, shards: Iterable[ShardEntry], manifest_name: str, *, verify_checksums: bool = False,
    splits: Iterable[str] | None = None,
) -> None:
    """Check that the ``shards`` listed in ``directory/manifest_name`` exist with their size (and sha256).

    For a URL ``directory`` see :func:`fitdiff.data.remote.check_remote_shards`: existence and size from
    the storage's metadata (``pipe:``: none), sha256 (and length) by streaming each shard when asked.

    Raises:
        ManifestError: naming the first shard that is missing, of the wrong size or checksum.
    """
    if is_url(directory):
        check_remote_shards(str(directory), shards, manifest_name, verify_checksums=verify_checksums,
                            splits=splits)
        return
    directory = Path(directory)
    wanted = set(SPLITS if splits is None else splits)
    for entry in shards:
        if entry.split not in wanted:
            continue
        path = directory / entry.name
        if not path.is_file():
            raise ManifestError(f"shard {path} is listed in {directory / manifest_name} but does not exist")
        size = path.stat().st_size
        if size != entry.bytes:
            raise ManifestError(f"shard {path}: {size} bytes on disk, manifest says {entry.bytes}")
        if verify_checksums:
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise ManifestError(f"shard {path}: sha256 {digest} does not match the manifest's {entry.sha256}")


def _split_rank(split: str) -> int:
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)


def write_manifest(
    directory: str | Path,
    spec: SampleSpec,
    shards: Iterable[ShardEntry],
    statistics: dict[str, Any] | None = None,
) -> Manifest:
    """Build a :class:`Manifest` from shard entries and write it beside them (atomically)."""
    manifest = Manifest(spec=spec, shards=list(shards), statistics=statistics or {})
    manifest.write(directory)
    return manifest


def load_manifest(directory: str | Path) -> Manifest:
    """Read and structurally check ``directory/manifest.json`` (use :meth:`Manifest.check` for files).

    ``directory`` may be a URL (:mod:`fitdiff.data.remote`); a missing or unreadable remote manifest
    raises a one-line :class:`ManifestError` naming its URL.
    """
    if is_url(directory):
        url = join_url(directory, MANIFEST_NAME)
        data = load_json_url(url, "point data_dir at a folder made by data_prep/build_shards.py or "
                                  "data_prep/make_synthetic.py (the URL of the folder, not of the manifest)")
        return Manifest.from_dict(data, where=url)
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        folder = Path(directory)
        shards = sorted(folder.glob("*.tar")) if folder.is_dir() else []
        found = f"{folder} holds {len(shards)} .tar shard(s) but no manifest" if shards else (
            "point data_dir at a folder made by data_prep/build_shards.py or data_prep/make_synthetic.py")
        raise ManifestError(
            f"{path} does not exist: {found}; to make one for existing shards run "
            f"`python data_prep/build_shards.py --index {folder}`"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    return Manifest.from_dict(data, where=str(path))
