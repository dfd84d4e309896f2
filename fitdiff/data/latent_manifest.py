"""``latents.json``: what a latent-shard folder holds, where it came from, and the autoencoder check.

Layout (written by ``data_prep/encode_latents.py``, sorted keys, no timestamps)::

    {
      "schema_version": 1,
      "format": "fitdiff-latent-shards",
      "counts": {"train": n, "val": n, "test": n},
      "shards": [{"name": "train-00000.tar", "split": "train", "samples": n, "sha256": "...", "bytes": n,
                  "source": "train-00000.tar", "source_sha256": "..."}],
      "sample": {"members": ["latent.npy", ...], "latent_dtype": "float32", "latent_shape": [Cm, H, W],
                 "shape_dim": K, "identity_dim": 512, "quantized": false},
      "autoencoder": {"path": "...", "sha256": "...", "config": {...}},
      "source": {"path": "...", "manifest_sha256": "...", "shape_model": "...", "recognizer": "...",
                 "uv_resolution": R, "specular_channels": c, "counts": {...}},
      "layout": {...},        # fitdiff.ldm.layout.LatentLayout.to_dict()
      "statistics": {...}     # fitdiff.ldm.latent_stats.LatentStats.to_dict() of the train split
    }

The data layer keeps ``layout`` and ``statistics`` as plain dicts (the model builds its objects from
them). :meth:`LatentManifest.check_autoencoder` refuses latents made by another autoencoder file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fitdiff.data.errors import AutoencoderMismatchError, ManifestError
from fitdiff.data.manifest import MANIFEST_NAME, SPLITS, ShardEntry, check_shard_files
from fitdiff.data.remote import is_url, join_url, load_json_url
from fitdiff.io import atomic_write_text, sha256_file

__all__ = [
    "LATENT_SCHEMA_VERSION",
    "LATENT_MANIFEST_NAME",
    "LATENT_FORMAT",
    "LatentManifest",
    "load_latent_manifest",
]

LATENT_SCHEMA_VERSION = 1
LATENT_MANIFEST_NAME = "latents.json"
LATENT_FORMAT = "fitdiff-latent-shards"
_REQUIRED = ("sample", "autoencoder", "source", "layout", "statistics")


@dataclass
class LatentManifest:
    """Parsed ``latents.json`` (see the module doc for the meaning of each entry).

    Attributes:
        shards: every latent shard (split order, then name).
        sources: latent shard name -> {"source": face shard name, "source_sha256": its sha256}.
        sample, autoencoder, source, layout, statistics: the JSON objects of the same names.
    """

    shards: list[ShardEntry]
    sample: dict[str, Any]
    autoencoder: dict[str, Any]
    source: dict[str, Any]
    layout: dict[str, Any]
    statistics: dict[str, Any]
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    schema_version: int = LATENT_SCHEMA_VERSION

    @property
    def counts(self) -> dict[str, int]:
        """Samples per split (every split of :data:`SPLITS` present, possibly 0)."""
        counts = dict.fromkeys(SPLITS, 0)
        for entry in self.shards:
            counts[entry.split] += entry.samples
        return counts

    @property
    def stats(self) -> dict[str, Any]:
        """The train-split statistics (same as :attr:`statistics`)."""
        return self.statistics

    @property
    def autoencoder_sha256(self) -> str:
        return str(self.autoencoder["sha256"])

    def shards_for(self, split: str) -> list[ShardEntry]:
        """The shards of ``split``, in file-name order."""
        return sorted((e for e in self.shards if e.split == split), key=lambda e: e.name)

    def to_dict(self) -> dict[str, Any]:
        shards = []
        for entry in sorted(self.shards, key=lambda e: (SPLITS.index(e.split), e.name)):
            shards.append({**entry.to_dict(), **self.sources.get(entry.name, {})})
        return {
            "schema_version": self.schema_version,
            "format": LATENT_FORMAT,
            "counts": self.counts,
            "shards": shards,
            "sample": self.sample,
            "autoencoder": self.autoencoder,
            "source": self.source,
            "layout": self.layout,
            "statistics": self.statistics,
        }

    def write(self, directory: str | Path) -> Path:
        """Write ``directory/latents.json`` atomically; return its path."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        return atomic_write_text(Path(directory) / LATENT_MANIFEST_NAME, text)

    @classmethod
    def from_dict(cls, data: Any, where: str = LATENT_MANIFEST_NAME) -> LatentManifest:
        """Parse and check the structure; raise :class:`ManifestError` naming ``where``."""
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        if data.get("format") != LATENT_FORMAT:
            raise ManifestError(f"{where}: format {data.get('format')!r} is not {LATENT_FORMAT!r}")
        if data.get("schema_version") != LATENT_SCHEMA_VERSION:
            raise ManifestError(f"{where}: schema_version {data.get('schema_version')!r} is not supported (this code "
                                f"reads {LATENT_SCHEMA_VERSION}); re-encode with data_prep/encode_latents.py")
        missing = [k for k in _REQUIRED if not isinstance(data.get(k), dict)]
        if missing:
            raise ManifestError(f"{where}: missing or not an object: {', '.join(missing)}")
        try:
            shards = [ShardEntry(str(e["name"]), str(e["split"]), int(e["samples"]), str(e["sha256"]), int(e["bytes"]))
                      for e in data["shards"]]
            sources = {str(e["name"]): {k: str(e[k]) for k in ("source", "source_sha256") if k in e}
                       for e in data["shards"]}
            sha = str(data["autoencoder"]["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed ({type(exc).__name__}: {exc})") from exc
        if len(sha) != 64:
            raise ManifestError(f"{where}: autoencoder.sha256 {sha!r} is not a sha256 digest")
        names = [e.name for e in shards]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ManifestError(f"{where}: shard(s) listed twice: {', '.join(duplicates)}")
        for entry in shards:
            if entry.split not in SPLITS:
                raise ManifestError(f"{where}: shard {entry.name} has unknown split {entry.split!r}")
            if "/" in entry.name or "\\" in entry.name or entry.name.startswith("."):
                raise ManifestError(f"{where}: shard name {entry.name!r} must be a plain file name")
        manifest = cls(shards, dict(data["sample"]), dict(data["autoencoder"]), dict(data["source"]),
                       dict(data["layout"]), dict(data["statistics"]), {k: v for k, v in sources.items() if v})
        stated = data.get("counts")
        if stated is not None and {k: v for k, v in stated.items() if v} != {k: v for k, v in manifest.counts.items() if v}:
            raise ManifestError(f"{where}: counts {stated} disagree with the shard list {manifest.counts}")
        return manifest

    def check(self, directory: str | Path, *, verify_checksums: bool = False, splits: Iterable[str] | None = None) -> None:
        """Check that the listed shards exist with their size (and, optionally, sha256)."""
        check_shard_files(directory, self.shards, LATENT_MANIFEST_NAME, verify_checksums=verify_checksums,
                          splits=splits)

    def check_autoencoder(self, path: str | Path, sha256: str | None = None, where: str = LATENT_MANIFEST_NAME) -> str:
        """Refuse these latents unless they were made by the autoencoder file at ``path``.

        Args:
            path: the configured autoencoder file (``.safetensors`` or ``.ckpt``).
            sha256: its digest when already known (else the file is hashed).
            where: the manifest's path, for the message.

        Returns:
            The configured file's sha256.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            AutoencoderMismatchError: the digests differ; the message names both files and both hashes.
        """
        path = Path(path)
        if sha256 is None:
            if not path.is_file():
                raise FileNotFoundError(f"the configured autoencoder {path} does not exist")
            sha256 = sha256_file(path)
        if sha256 != self.autoencoder_sha256:
            made_by = self.autoencoder.get("path", "?")
            raise AutoencoderMismatchError(
                f"{where}: these latents were encoded by the autoencoder {made_by} (sha256 {self.autoencoder_sha256}), "
                f"but the configured autoencoder is {path} (sha256 {sha256}); re-encode them with "
                f"python data_prep/encode_latents.py --autoencoder {path} --data <face shards> --out <folder>, "
                f"or configure the autoencoder they were made with"
            )
        return sha256


def load_latent_manifest(directory: str | Path) -> LatentManifest:
    """Read and structurally check ``directory/latents.json`` (``directory`` may be a URL)."""
    if is_url(directory):
        url = join_url(directory, LATENT_MANIFEST_NAME)
        data = load_json_url(url, "point data_dir at a folder made by data_prep/encode_latents.py")
        return LatentManifest.from_dict(data, where=url)
    directory = Path(directory)
    path = directory / LATENT_MANIFEST_NAME
    if not path.is_file():
        hint = (f"{directory} holds face shards ({MANIFEST_NAME}): encode them first with "
                f"python data_prep/encode_latents.py --autoencoder AE.safetensors --data {directory} --out DIR"
                if (directory / MANIFEST_NAME).is_file() else
                "point data_dir at a folder made by data_prep/encode_latents.py (an unfinished run has none: re-run it)")
        raise ManifestError(f"{path} does not exist: {hint}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    return LatentManifest.from_dict(data, where=str(path))
