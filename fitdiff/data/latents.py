"""One pre-encoded sample of the diffusion stage (:class:`LatentSample`), its shard encoding and its batch.

Latent shards are written by ``data_prep/encode_latents.py`` (one per face shard, same name and split)
with the deterministic shard writer; ``latents.json`` beside them is
:class:`fitdiff.data.latent_manifest.LatentManifest`. Members of one sample:

==============  ==============  ==================================================================
attribute       member          content
==============  ==============  ==================================================================
``latent``      ``latent.npy``  (Cm, H, W) float32 (or float16) pre-quantisation branch latents
                                ``[z_diffuse | z_specular | z_normals]``, unnormalised
``shape``       ``shape.npy``   (K,) float32 PCA coefficients in std units (copied from the face sample)
``identity``    ``id.npy``      (512,) float32 L2-normalised identity embedding (copied)
``meta``        ``meta.json``   the face sample's ``meta.json`` (camera, lighting, ...), canonical JSON
==============  ==============  ==================================================================

``__key__`` is the face sample's key. The shape coefficients are not packed into the latent here: the
packing (:class:`fitdiff.ldm.layout.LatentLayout`) is the model's business, and its description travels
as a plain dict in the manifest. Decoding uses the safe ``.npy`` / JSON decoders (no pickle) and names the
shard, key and member of any problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from fitdiff.data.codecs import decode_json, decode_npy, encode_json, encode_npy
from fitdiff.data.errors import SampleError
from fitdiff.data.sample import check_key
from fitdiff.data.stream import ShardStream, read_shard

__all__ = [
    "LATENT_MEMBERS",
    "LATENT_FIELDS",
    "DEFAULT_LATENT_FIELDS",
    "LATENT_DTYPES",
    "LatentSample",
    "LatentBatch",
    "LatentCollate",
    "LatentShardStream",
    "encode_latent_sample",
    "decode_latent_sample",
]

#: sample attribute -> tar member suffix
LATENT_MEMBERS: dict[str, str] = {"latent": "latent.npy", "shape": "shape.npy", "identity": "id.npy",
                                  "meta": "meta.json"}
#: every field of a latent sample
LATENT_FIELDS: tuple[str, ...] = tuple(LATENT_MEMBERS)
#: what diffusion training reads by default (``meta`` only when a loss renders with the sample's camera)
DEFAULT_LATENT_FIELDS: tuple[str, ...] = ("latent", "shape", "identity")
#: storage dtypes of ``latent.npy``
LATENT_DTYPES: tuple[str, ...] = ("float32", "float16")

_NDIM = {"latent": 3, "shape": 1, "identity": 1}


@dataclass
class LatentSample:
    """One pre-encoded face; fields not loaded are ``None``.

    Attributes:
        key: ``<subject>_<image>``.
        latent: (Cm, H, W) float32 or float16 branch latents (pre-quantisation, unnormalised).
        shape: (K,) float32 PCA coefficients (std units).
        identity: (512,) float32 unit-norm identity embedding.
        meta: the face sample's meta dict.
    """

    key: str
    latent: np.ndarray | None = None
    shape: np.ndarray | None = None
    identity: np.ndarray | None = None
    meta: dict[str, Any] | None = None


def encode_latent_sample(sample: LatentSample) -> dict[str, bytes | str]:
    """Shard members ``{"__key__": key, "latent.npy": bytes, ...}`` of the set fields, deterministically.

    ``latent`` keeps its dtype (float32 or float16); ``shape`` and ``identity`` are written as float32.
    """
    check_key(sample.key)
    out: dict[str, bytes | str] = {"__key__": sample.key}
    for name, member in LATENT_MEMBERS.items():
        value = getattr(sample, name)
        if value is None:
            continue
        try:
            if name == "meta":
                out[member] = encode_json(value)
                continue
            array = np.asarray(value)
            if name == "latent" and array.dtype.name not in LATENT_DTYPES:
                raise ValueError(f"latent dtype must be one of {', '.join(LATENT_DTYPES)}, got {array.dtype}")
            if name != "latent":
                array = array.astype(np.float32, copy=False)
            if array.ndim != _NDIM[name]:
                raise ValueError(f"must have {_NDIM[name]} dimension(s), got shape {array.shape}")
            if not np.isfinite(array).all():
                raise ValueError(f"{int((~np.isfinite(array)).sum())} non-finite value(s)")
            out[member] = encode_npy(array)
        except (ValueError, TypeError) as exc:
            raise SampleError(f"cannot encode: {exc}", key=sample.key, field=member) from exc
    return out


def _expected_shape(name: str, expected: Mapping[str, Any]) -> tuple[int, ...] | None:
    if name == "latent" and expected.get("latent_shape") is not None:
        return tuple(int(v) for v in expected["latent_shape"])
    if name == "shape" and expected.get("shape_dim") is not None:
        return (int(expected["shape_dim"]),)
    if name == "identity" and expected.get("identity_dim") is not None:
        return (int(expected["identity_dim"]),)
    return None


def decode_latent_sample(
    members: Mapping[str, Any],
    *,
    fields: Sequence[str] | None = None,
    shard: str | None = None,
    expected: Mapping[str, Any] | None = None,
    check_values: bool = True,
) -> LatentSample:
    """Decode shard members into a :class:`LatentSample` (no pickle).

    Args:
        members: ``{"__key__": key, "latent.npy": bytes, ...}``; extra members are ignored.
        fields: attributes to decode (default :data:`DEFAULT_LATENT_FIELDS`).
        shard: shard name for messages.
        expected: the manifest's ``sample`` entry (``latent_dtype``, ``latent_shape``, ``shape_dim``,
            ``identity_dim``): each decoded array must match it.
        check_values: also require finite values.

    Raises:
        SampleError: a member is missing, undecodable, or of the wrong dtype / shape, naming shard, key
            and member.
    """
    key = members.get("__key__")
    if not isinstance(key, str):
        raise SampleError("sample has no __key__", shard=shard)
    expected = expected or {}
    values: dict[str, Any] = {}
    for name in DEFAULT_LATENT_FIELDS if fields is None else fields:
        if name not in LATENT_MEMBERS:
            raise ValueError(f"unknown latent sample field {name!r}; fields: {', '.join(LATENT_FIELDS)}")
        member = LATENT_MEMBERS[name]
        data = members.get(member)
        if data is None:
            have = sorted(k for k in members if not k.startswith("__"))
            raise SampleError(f"missing (the sample has: {', '.join(have) or 'nothing'})", shard=shard, key=key,
                              field=member)
        try:
            if name == "meta":
                value = decode_json(bytes(data))
                if not isinstance(value, dict):
                    raise ValueError(f"must hold an object, got {type(value).__name__}")
            else:
                value = decode_npy(bytes(data))
                want = expected.get("latent_dtype") if name == "latent" else "float32"
                if value.dtype.name not in ((want,) if want else LATENT_DTYPES):
                    raise ValueError(f"dtype must be {want or ' or '.join(LATENT_DTYPES)}, got {value.dtype}")
                shape = _expected_shape(name, expected)
                if value.ndim != _NDIM[name] or (shape is not None and value.shape != shape):
                    raise ValueError(f"shape must be {shape or f'{_NDIM[name]}-D'}, got {value.shape}")
                if check_values and not np.isfinite(value).all():
                    raise ValueError(f"{int((~np.isfinite(value)).sum())} non-finite value(s)")
        except Exception as exc:  # decoders raise ValueError, UnicodeError, ...
            raise SampleError(f"cannot decode: {exc}", shard=shard, key=key, field=member) from exc
        values[name] = value
    return LatentSample(key=key, **values)


@dataclass
class LatentBatch:
    """B pre-encoded faces; fields not loaded are ``None``.

    Attributes:
        keys: B sample keys.
        latent: (B, Cm, H, W) float32 branch latents (unnormalised; the shape is not packed in).
        shape: (B, K) float32 PCA coefficients.
        identity: (B, 512) float32 identity embeddings.
        meta: B meta dicts.
    """

    keys: list[str]
    latent: torch.Tensor | None = None
    shape: torch.Tensor | None = None
    identity: torch.Tensor | None = None
    meta: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def _map(self, fn) -> LatentBatch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return LatentBatch(**{k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in values.items()})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LatentBatch:
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> LatentBatch:
        """A copy with every tensor in pinned memory."""
        return self._map(lambda t: t.pin_memory())


class LatentCollate:
    """Batch :class:`LatentSample` objects into a :class:`LatentBatch` (float32 tensors)."""

    def __init__(self, fields: Sequence[str] | None = None) -> None:
        self.fields = tuple(DEFAULT_LATENT_FIELDS if fields is None else fields)

    def __call__(self, samples: list[LatentSample]) -> LatentBatch:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        batch = LatentBatch(keys=[s.key for s in samples])
        for name in self.fields:
            values = [getattr(s, name) for s in samples]
            if name == "meta":
                batch.meta = values
            else:
                setattr(batch, name, torch.from_numpy(np.stack(values).astype(np.float32, copy=False)))
        return batch


class LatentShardStream(ShardStream):
    """:class:`~fitdiff.data.stream.ShardStream` of latent shards: yields :class:`LatentSample` objects.

    Args:
        shards: shard paths.
        sample: the manifest's ``sample`` entry (dtype and shapes every sample must have).
        fields: latent fields to decode (default :data:`DEFAULT_LATENT_FIELDS`); other members are skipped.
        validate: also require finite values.
        **kwargs: as :class:`ShardStream` (``counts``, ``train``, ``rank``, ``world_size``, ...).
    """

    def __init__(self, shards: list[str], *, sample: Mapping[str, Any] | None = None,
                 fields: Sequence[str] | None = None, validate: bool = True, **kwargs: Any) -> None:
        kwargs.pop("spec", None)
        chosen = tuple(DEFAULT_LATENT_FIELDS if fields is None else fields)
        unknown = [f for f in chosen if f not in LATENT_MEMBERS]
        if unknown:
            raise ValueError(f"unknown latent field(s) {', '.join(unknown)}; fields: {', '.join(LATENT_FIELDS)}")
        super().__init__(shards, fields=chosen, validate=False, **kwargs)
        self.sample = dict(sample or {})
        self.check_values = bool(validate)

    def _read(self, sources: Iterator[dict]) -> Iterator[dict]:
        counts = dict(zip(self.shards, self.counts))
        members = [LATENT_MEMBERS[f] for f in self.fields]
        for source in sources:
            yield from read_shard(source["url"], expected=counts.get(source["url"]), members=members)

    def _decode(self, source: Iterator[dict]) -> Iterator[LatentSample]:  # type: ignore[override]
        for raw in source:
            shard = os.path.basename(raw.get("__url__", "?"))
            yield decode_latent_sample(raw, fields=self.fields, shard=shard, expected=self.sample,
                                       check_values=self.check_values)
