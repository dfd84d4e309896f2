"""One fitted face in memory (:class:`FaceSample`), its key convention and its shard encoding.

A WebDataset sample is a group of tar members ``<key>.<suffix>`` sharing one key. The suffixes and
their contents (docs/DESIGN.md §4):

==============  =====================  ==========================================================
attribute       member                 content
==============  =====================  ==========================================================
``image``       ``image.png``          photo crop, (H, W, 3) uint8 RGB
``diffuse``     ``diffuse.png``        diffuse albedo UV map, (R, R, 3) uint8 RGB
``specular``    ``specular.png``       specular albedo UV map, (R, R, C) uint8, C in {1, 3}
``normals``     ``normals.npy``        normal UV map, (R, R, 3) float16 unit vectors
``shape``       ``shape.npy``          (K,) float32 PCA coefficients in std units
``identity``    ``id.npy``             (512,) float32 L2-normalised identity embedding
``landmarks``   ``landmarks.npy``      (N, 2) float32 landmarks in image pixels (x right, y down)
``meta``        ``meta.json``          dict: subject, source, recognizer, shape_model, uv_resolution,
                                       camera, lighting, ...
==============  =====================  ==========================================================

Normals are stored only as float16 ``.npy`` (11 significant bits); the 16-bit PNG variant is not
supported. Keys are ``<subject>_<image>``: the subject id is everything before the last underscore.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from fitdiff.data.codecs import decode_json, decode_npy, decode_png, encode_json, encode_npy, encode_png
from fitdiff.data.errors import SampleError

__all__ = [
    "FIELDS",
    "MEMBERS",
    "FaceSample",
    "make_key",
    "subject_of",
    "check_key",
    "decode_sample",
    "encode_sample",
]

#: sample attribute -> tar member suffix, in a fixed order
MEMBERS: dict[str, str] = {
    "image": "image.png",
    "diffuse": "diffuse.png",
    "specular": "specular.png",
    "normals": "normals.npy",
    "shape": "shape.npy",
    "identity": "id.npy",
    "landmarks": "landmarks.npy",
    "meta": "meta.json",
}
#: every data field of a sample
FIELDS: tuple[str, ...] = tuple(MEMBERS)

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*_[A-Za-z0-9-]+$")
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

_NPY_DTYPES = {"normals": np.float16, "shape": np.float32, "identity": np.float32, "landmarks": np.float32}
_NPY_NDIM = {"normals": 3, "shape": 1, "identity": 1, "landmarks": 2}


def make_key(subject: str, image: str) -> str:
    """``<subject>_<image>``; subject: letters, digits, '-', '_'; image: letters, digits, '-'."""
    if not _SUBJECT_RE.match(subject):
        raise ValueError(f"subject id {subject!r} may hold only letters, digits, '-' and '_'")
    if not _PART_RE.match(image):
        raise ValueError(f"image id {image!r} may hold only letters, digits and '-' (no '_' or '.')")
    return f"{subject}_{image}"


def check_key(key: str) -> None:
    """Raise :class:`SampleError` unless ``key`` has the ``<subject>_<image>`` form."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise SampleError(
            "key must be '<subject>_<image>' (letters, digits, '-', '_'; no dots; image id without '_')",
            key=str(key),
        )


def subject_of(key: str) -> str:
    """The subject id of a sample key (everything before the last underscore)."""
    check_key(key)
    return key.rsplit("_", 1)[0]


@dataclass
class FaceSample:
    """One fitted face. Fields that were not loaded are ``None``.

    Attributes:
        key: ``<subject>_<image>``.
        image: (H, W, 3) uint8 RGB photo crop.
        diffuse: (R, R, 3) uint8 diffuse albedo UV map.
        specular: (R, R, C) uint8 specular albedo UV map, C in {1, 3}.
        normals: (R, R, 3) float16 unit normals in [-1, 1].
        shape: (K,) float32 PCA coefficients (units of each component's std).
        identity: (512,) float32 L2-normalised identity embedding of ``image``.
        landmarks: (N, 2) float32 landmark pixel coordinates in ``image``.
        meta: JSON-serialisable dict (subject, source, recognizer, shape_model, uv_resolution, camera,
            lighting, ...).
    """

    key: str
    image: np.ndarray | None = None
    diffuse: np.ndarray | None = None
    specular: np.ndarray | None = None
    normals: np.ndarray | None = None
    shape: np.ndarray | None = None
    identity: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    meta: dict[str, Any] | None = field(default=None)

    @property
    def subject(self) -> str:
        """Subject id, from the key."""
        return subject_of(self.key)

    def present(self) -> tuple[str, ...]:
        """Names of the data fields that are set."""
        return tuple(f.name for f in fields(self) if f.name != "key" and getattr(self, f.name) is not None)

    def encode(self) -> dict[str, bytes | str]:
        """Shard members: ``{"__key__": key, "image.png": bytes, ...}`` (see :func:`encode_sample`)."""
        return encode_sample(self)

    @classmethod
    def decode(
        cls, members: dict[str, Any], *, fields: tuple[str, ...] | list[str] | None = None, shard: str | None = None,
        coerce: bool = False,
    ) -> FaceSample:
        """Inverse of :meth:`encode` (see :func:`decode_sample`)."""
        return decode_sample(members, fields=fields, shard=shard, coerce=coerce)


def encode_sample(sample: FaceSample) -> dict[str, bytes | str]:
    """Encode every set field of ``sample`` to its member bytes, deterministically.

    Arrays are cast to the schema dtype only when that is lossless for the stored values' kind
    (uint8 images must already be uint8; ``.npy`` fields are written in their schema dtype).

    Returns:
        ``{"__key__": key, "<member suffix>": bytes, ...}``.
    """
    check_key(sample.key)
    out: dict[str, bytes | str] = {"__key__": sample.key}
    for name, member in MEMBERS.items():
        value = getattr(sample, name)
        if value is None:
            continue
        try:
            if member.endswith(".png"):
                out[member] = encode_png(np.asarray(value))
            elif member.endswith(".npy"):
                out[member] = encode_npy(np.asarray(value, dtype=_NPY_DTYPES[name]))
            else:
                out[member] = encode_json(value)
        except (ValueError, TypeError) as exc:
            raise SampleError(f"cannot encode: {exc}", key=sample.key, field=member) from exc
    return out


class _BadValues(ValueError):
    """A member that decoded but holds values no sample may have (reported without "cannot decode")."""


def _decode_field(name: str, data: bytes, coerce: bool) -> Any:
    member = MEMBERS[name]
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if member.endswith(".png"):
        array = decode_png(data)
        if array.dtype != np.uint8:
            raise ValueError(f"PNG must be 8-bit, got {array.dtype}")
        channels = (1, 3) if name == "specular" else (3,)
        if array.shape[2] not in channels:
            raise ValueError(f"PNG must have {' or '.join(map(str, channels))} channel(s), got {array.shape[2]}")
        return array
    if member.endswith(".npy"):
        array = decode_npy(data)
        want = np.dtype(_NPY_DTYPES[name])
        if array.dtype != want:
            if coerce and array.dtype.kind == "f":
                array = array.astype(want)
            else:
                raise ValueError(f"dtype must be {want}, got {array.dtype}")
        if array.ndim != _NPY_NDIM[name]:
            raise ValueError(f"array must have {_NPY_NDIM[name]} dimension(s), got shape {array.shape}")
        if not np.isfinite(array).all():  # cheap, and a NaN map must never reach a loss (even unvalidated)
            raise _BadValues(f"{int((~np.isfinite(array)).sum())} non-finite value(s) (NaN or inf)")
        return array
    meta = decode_json(data)
    if not isinstance(meta, dict):
        raise ValueError(f"meta.json must hold an object, got {type(meta).__name__}")
    return meta


def decode_sample(
    members: dict[str, Any],
    *,
    fields: tuple[str, ...] | list[str] | None = None,
    shard: str | None = None,
    coerce: bool = False,
) -> FaceSample:
    """Decode shard members (``{"__key__": ..., "image.png": bytes, ...}``) into a :class:`FaceSample`.

    Only safe decoders run (PNG via OpenCV, ``.npy`` without pickle, JSON). Checks the container
    format, dtype, rank and (``.npy``) finiteness of each field; :func:`fitdiff.data.validate_sample`
    checks the rest.

    Args:
        members: the sample's members; extra members are ignored.
        fields: sample attributes to decode (default: all of :data:`FIELDS`); others stay ``None``.
        shard: shard name, for error messages.
        coerce: cast floating ``.npy`` arrays of another float dtype to the schema dtype (importing
            from fitted folders) instead of failing.

    Raises:
        SampleError: a requested member is missing or undecodable, naming shard, key and field.
    """
    key = members.get("__key__")
    if not isinstance(key, str):
        raise SampleError("sample has no __key__", shard=shard)
    wanted = FIELDS if fields is None else tuple(fields)
    values: dict[str, Any] = {}
    for name in wanted:
        if name not in MEMBERS:
            raise ValueError(f"unknown sample field {name!r}; fields: {', '.join(FIELDS)}")
        member = MEMBERS[name]
        if member not in members:
            have = sorted(k for k in members if not k.startswith("__"))
            raise SampleError(f"missing (the sample has: {', '.join(have) or 'nothing'})", shard=shard, key=key, field=member)
        try:
            values[name] = _decode_field(name, members[member], coerce)
        except _BadValues as exc:
            raise SampleError(str(exc), shard=shard, key=key, field=member) from None
        except Exception as exc:  # decoders raise ValueError, cv2.error, UnicodeError, ...
            raise SampleError(f"cannot decode: {exc}", shard=shard, key=key, field=member) from exc
    return FaceSample(key=key, **values)
