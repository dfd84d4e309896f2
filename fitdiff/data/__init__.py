"""Face dataset: sample schema and validation, deterministic shard writing, manifest, the DataModule.

Writing (a dataset generator or ``data_prep/build_shards.py``)::

    from fitdiff.data import DatasetWriter, FaceSample, SampleSpec
    with DatasetWriter(out_dir, spec, samples_per_shard=256) as writer:
        writer.write("train", FaceSample(key="s001_0", image=..., ...))

Reading: ``FaceDataModule(data_dir, batch_size=...)`` yields :class:`FaceBatch` objects;
``LatentDataModule(latent_dir, autoencoder=...)`` yields :class:`LatentBatch` objects from the latent shards
of ``data_prep/encode_latents.py`` (``latents.json``). The DataModules (and with them Lightning) are
imported on first use, so the data tools start quickly.
"""

from typing import Any

from fitdiff.data.batch import FaceBatch, FaceCollate, PhotoJitter
from fitdiff.data.errors import (
    AutoencoderMismatchError,
    BadSampleLimitError,
    DataError,
    InvalidShardsError,
    ManifestError,
    SampleError,
    ShardError,
)
from fitdiff.data.fields import (
    AUTOENCODER_FIELDS,
    DIFFUSION_FIELDS,
    RECONSTRUCTION_FIELDS,
    REFLECTANCE_MAPS,
    STAGE_FIELDS,
    stage_fields,
)
from fitdiff.data.folder import FolderDataset, find_sample_folders, read_folder_members, write_sample_folder
from fitdiff.data.landmarks import five_point_landmarks
from fitdiff.data.latent_manifest import (
    LATENT_FORMAT,
    LATENT_MANIFEST_NAME,
    LATENT_SCHEMA_VERSION,
    LatentManifest,
    load_latent_manifest,
)
from fitdiff.data.latents import (
    DEFAULT_LATENT_FIELDS,
    LATENT_DTYPES,
    LATENT_FIELDS,
    LATENT_MEMBERS,
    LatentBatch,
    LatentCollate,
    LatentSample,
    LatentShardStream,
    decode_latent_sample,
    encode_latent_sample,
)
from fitdiff.data.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    SPLITS,
    Manifest,
    ShardEntry,
    load_manifest,
    shard_name,
    write_manifest,
)
from fitdiff.data.random_sample import random_sample, random_spec
from fitdiff.data.sample import (
    FIELDS,
    MEMBERS,
    FaceSample,
    check_key,
    decode_sample,
    encode_sample,
    make_key,
    subject_of,
)
from fitdiff.data.stats import DatasetStats, Moments
from fitdiff.data.stream import ShardStream, read_shard, split_by_rank
from fitdiff.data.validation import SampleSpec, validate_sample
from fitdiff.data.writer import DatasetWriter, ShardInfo, ShardWriter, dataset_statistics

__all__ = [
    "AUTOENCODER_FIELDS",
    "AutoencoderMismatchError",
    "BadSampleLimitError",
    "DEFAULT_LATENT_FIELDS",
    "DIFFUSION_FIELDS",
    "RECONSTRUCTION_FIELDS",
    "REFLECTANCE_MAPS",
    "STAGE_FIELDS",
    "DataError",
    "DatasetStats",
    "DatasetWriter",
    "FIELDS",
    "FaceBatch",
    "FaceCollate",
    "FaceDataModule",
    "FaceSample",
    "FolderDataset",
    "InvalidShardsError",
    "LATENT_DTYPES",
    "LATENT_FIELDS",
    "LATENT_FORMAT",
    "LATENT_MANIFEST_NAME",
    "LATENT_MEMBERS",
    "LATENT_SCHEMA_VERSION",
    "LatentBatch",
    "LatentCollate",
    "LatentDataModule",
    "LatentManifest",
    "LatentSample",
    "LatentShardStream",
    "MANIFEST_NAME",
    "MEMBERS",
    "Manifest",
    "ManifestError",
    "Moments",
    "PhotoJitter",
    "SCHEMA_VERSION",
    "SPLITS",
    "SampleError",
    "SampleSpec",
    "ShardEntry",
    "ShardError",
    "ShardDataModule",
    "ShardInfo",
    "ShardStream",
    "ShardWriter",
    "check_key",
    "dataset_statistics",
    "decode_latent_sample",
    "decode_sample",
    "encode_latent_sample",
    "encode_sample",
    "find_sample_folders",
    "five_point_landmarks",
    "load_latent_manifest",
    "load_manifest",
    "make_key",
    "random_sample",
    "random_spec",
    "read_folder_members",
    "read_shard",
    "resolve_rank",
    "shard_name",
    "split_by_rank",
    "stage_fields",
    "subject_of",
    "validate_sample",
    "write_manifest",
    "write_sample_folder",
]

_LAZY = {"FaceDataModule", "ShardDataModule", "resolve_rank"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from fitdiff.data import datamodule

        return getattr(datamodule, name)
    if name == "LatentDataModule":
        from fitdiff.data.latent_datamodule import LatentDataModule

        return LatentDataModule
    raise AttributeError(f"module 'fitdiff.data' has no attribute {name!r}")
