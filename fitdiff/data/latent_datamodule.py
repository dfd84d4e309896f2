"""The diffusion stage's LightningDataModule over pre-encoded latent shards -> :class:`LatentBatch`.

The same plumbing as :class:`~fitdiff.data.FaceDataModule` (:class:`~fitdiff.data.datamodule.ShardDataModule`):
training shards resampled per rank with a sample shuffle buffer and a fixed number of steps per epoch on
every rank; validation / test read each sample of the rank's share once in a fixed order. At setup the
manifest (``latents.json``) is checked against the shard files and, when ``autoencoder`` is given, against
that file's sha256: latents made by another autoencoder are refused naming both files and hashes.

The model reads :attr:`LatentDataModule.layout` and :attr:`LatentDataModule.stats` (plain dicts, for
``fitdiff.ldm.LatentLayout.from_dict`` / ``LatentStats.from_dict``) after setup.

Hydra: ``experiments/data/latents.yaml`` (``_target_: fitdiff.data.LatentDataModule``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fitdiff.data.datamodule import ShardDataModule, _SampleSplitStream, _SizedShardStream
from fitdiff.data.latent_manifest import LATENT_MANIFEST_NAME, LatentManifest, load_latent_manifest
from fitdiff.data.latents import DEFAULT_LATENT_FIELDS, LATENT_FIELDS, LatentCollate, LatentShardStream
from fitdiff.data.remote import join_url
from fitdiff.io import sha256_file

__all__ = ["LatentDataModule"]

log = logging.getLogger(__name__)


class _SizedLatentStream(_SizedShardStream, LatentShardStream):
    """Training latent stream with a known length."""


class _SampleSplitLatentStream(_SampleSplitStream, LatentShardStream):
    """Evaluation latent stream for fewer shards than ranks (ranks split the samples)."""


class LatentDataModule(ShardDataModule):
    """Latent shards (made by ``data_prep/encode_latents.py``) for diffusion training.

    Batches are :class:`fitdiff.data.LatentBatch` (``keys``, ``latent`` (B, Cm, H, W), ``shape`` (B, K),
    ``identity`` (B, 512), optional ``meta``).

    Args:
        data_dir: folder with ``latents.json`` and the latent shards, or its URL (as for
            :class:`~fitdiff.data.FaceDataModule`).
        autoencoder: the configured autoencoder file; its sha256 must equal the manifest's (``None``
            skips the check, with a warning).
        batch_size, val_batch_size, num_workers, shuffle_buffer, steps_per_epoch, seed, verify_checksums,
            pin_memory, persistent_workers, rank, world_size: as :class:`~fitdiff.data.FaceDataModule`.
        fields: latent fields to load (default ``[latent, shape, identity]``; add ``meta`` for losses that
            render with the sample's camera and lights).
        validate_samples: require finite values in every decoded array (dtype and shape are always checked).
    """

    eval_stream = LatentShardStream
    sample_split_stream = _SampleSplitLatentStream
    train_stream = _SizedLatentStream

    def __init__(
        self,
        data_dir: str,
        autoencoder: str | None = None,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        fields: Sequence[str] | None = None,
        shuffle_buffer: int = 1000,
        steps_per_epoch: int | None = None,
        seed: int | None = None,
        validate_samples: bool = True,
        verify_checksums: bool = False,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, val_batch_size, num_workers, shuffle_buffer, steps_per_epoch, seed,
                         verify_checksums, pin_memory, persistent_workers, rank, world_size)
        self.autoencoder = None if autoencoder in (None, "") else str(autoencoder)
        self.fields = tuple(DEFAULT_LATENT_FIELDS if fields is None else fields)
        unknown = [f for f in self.fields if f not in LATENT_FIELDS]
        if unknown:
            raise ValueError(f"unknown latent field(s) {', '.join(unknown)}; fields: {', '.join(LATENT_FIELDS)}")
        self.validate_samples = validate_samples
        self.manifest: LatentManifest | None = None
        self.autoencoder_sha256: str | None = None
        self._hashed: tuple[str, int, int, str] | None = None  # (path, size, mtime_ns, sha256)

    # ----------------------------------------------------------------------------------------- what the model reads

    def _manifest(self) -> LatentManifest:
        if self.manifest is None:
            raise RuntimeError("LatentDataModule.setup() has not run yet")
        return self.manifest

    @property
    def layout(self) -> dict[str, Any]:
        """The latent layout (``LatentLayout.to_dict()``) the latents were packed for (after setup)."""
        return self._manifest().layout

    @property
    def stats(self) -> dict[str, Any]:
        """Train-split statistics of the packed latent (``LatentStats.to_dict()``) (after setup)."""
        return self._manifest().statistics

    # ----------------------------------------------------------------------------------------- hooks

    def _configured_sha256(self, path: Path) -> str:
        if not path.is_file():
            raise FileNotFoundError(f"the configured autoencoder {path} does not exist")
        st = path.stat()
        if self._hashed is None or self._hashed[:3] != (str(path), st.st_size, st.st_mtime_ns):
            self._hashed = (str(path), st.st_size, st.st_mtime_ns, sha256_file(path))
        return self._hashed[3]

    def _load_manifest(self) -> LatentManifest:
        manifest = load_latent_manifest(self.data_dir)
        where = join_url(self.data_dir, LATENT_MANIFEST_NAME)
        if self.autoencoder is None:
            log.warning("%s: no autoencoder configured, so the latents' autoencoder (sha256 %s) is not checked",
                        where, manifest.autoencoder_sha256)
        else:
            path = Path(self.autoencoder)
            self.autoencoder_sha256 = manifest.check_autoencoder(path, self._configured_sha256(path), where=where)
        return manifest

    def _stream_options(self) -> dict[str, Any]:
        return dict(sample=self._manifest().sample, fields=self.fields, validate=self.validate_samples)

    def _collate(self, train: bool) -> LatentCollate:
        return LatentCollate(self.fields)
