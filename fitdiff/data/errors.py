"""Errors of the data pipeline; each names the shard, the sample key and the field it concerns."""

from __future__ import annotations

__all__ = [
    "DataError", "SampleError", "ShardError", "ManifestError", "AutoencoderMismatchError", "BadSampleLimitError",
    "InvalidShardsError",
]


class DataError(ValueError):
    """Base class of the data errors."""


class SampleError(DataError):
    """A sample is missing a field, cannot be decoded, or breaks the schema.

    Attributes:
        reason: what is wrong, without the location.
        shard: shard file name or path, when the sample came from a shard.
        key: the sample's ``__key__``, when known.
        field: the file suffix concerned (``"normals.npy"``), when one is.
    """

    def __init__(self, reason: str, *, shard: str | None = None, key: str | None = None, field: str | None = None):
        self.reason = reason
        self.shard = shard
        self.key = key
        self.field = field
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.shard is not None:
            where.append(f"shard {self.shard}")
        if self.key is not None:
            where.append(f"sample {self.key!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def located(self, shard: str | None = None, key: str | None = None) -> SampleError:
        """A copy with the shard and/or key filled in where they were unknown."""
        return SampleError(
            self.reason,
            shard=self.shard if self.shard is not None else shard,
            key=self.key if self.key is not None else key,
            field=self.field,
        )


class ShardError(DataError):
    """A shard file cannot be read as a tar archive (corrupt, truncated, unreadable)."""


class ManifestError(DataError):
    """``manifest.json`` is missing, malformed, of another schema version, or disagrees with the shards."""


class AutoencoderMismatchError(ManifestError):
    """Latent shards were made by another autoencoder than the configured one (both hashes in the message)."""


class BadSampleLimitError(DataError):
    """More samples were skipped as bad than ``max_bad_fraction`` allows (see :mod:`fitdiff.data.bad_samples`)."""


class InvalidShardsError(DataError):
    """Indexing found invalid samples in existing shards; no manifest was written.

    Attributes:
        problems: one :class:`SampleError` per invalid sample (shard path, key and field in each).
    """

    def __init__(self, message: str, problems: list[SampleError]):
        self.problems = list(problems)
        super().__init__(message)
