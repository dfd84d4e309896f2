"""What a dataset's samples must look like (:class:`SampleSpec`) and the check (:func:`validate_sample`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fitdiff.data.errors import SampleError
from fitdiff.data.sample import FIELDS, MEMBERS, FaceSample, check_key, subject_of

__all__ = ["SampleSpec", "validate_sample", "REQUIRED_META"]

#: keys every ``meta.json`` must hold
REQUIRED_META: tuple[str, ...] = ("subject", "source", "recognizer", "shape_model", "uv_resolution")


@dataclass(frozen=True)
class SampleSpec:
    """Expected resolutions, sizes and tolerances of one dataset's samples.

    Attributes:
        image_resolution: side of the square photo crop, pixels.
        uv_resolution: side R of the square UV maps, texels.
        shape_dim: number K of PCA shape coefficients.
        num_landmarks: number N of landmarks (5 or 68 for identity alignment).
        specular_channels: 1 (grey) or 3 (RGB) specular albedo.
        identity_dim: length of the identity embedding.
        recognizer: face-recognition net that made ``id.npy``; ``None`` accepts any.
        shape_model: id of the PCA shape model the coefficients belong to; ``None`` accepts any.
        normal_tolerance: largest allowed | |n| - 1 | of a normal (float16 storage gives ~1e-3).
        identity_tolerance: largest allowed | |e| - 1 | of the identity embedding.
        shape_abs_max: largest allowed |coefficient| (std units).
        landmark_margin: landmarks may lie this fraction of the image side outside the crop.
    """

    image_resolution: int
    uv_resolution: int
    shape_dim: int
    num_landmarks: int
    specular_channels: int = 1
    identity_dim: int = 512
    recognizer: str | None = None
    shape_model: str | None = None
    normal_tolerance: float = 0.02
    identity_tolerance: float = 1e-3
    shape_abs_max: float = 10.0
    landmark_margin: float = 0.5

    def __post_init__(self) -> None:
        if self.specular_channels not in (1, 3):
            raise ValueError(f"specular_channels must be 1 or 3, got {self.specular_channels}")
        for name in ("image_resolution", "uv_resolution", "shape_dim", "num_landmarks", "identity_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"SampleSpec.{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def from_sample(cls, sample: FaceSample, **overrides: Any) -> SampleSpec:
        """The spec a complete sample satisfies (recognizer / shape model from its meta)."""
        meta = sample.meta or {}
        if sample.image is None or sample.diffuse is None or sample.specular is None:
            raise SampleError("cannot infer a spec from a sample without image / diffuse / specular", key=sample.key)
        values: dict[str, Any] = dict(
            image_resolution=int(sample.image.shape[0]),
            uv_resolution=int(sample.diffuse.shape[0]),
            shape_dim=int(np.asarray(sample.shape).shape[0]),
            num_landmarks=int(np.asarray(sample.landmarks).shape[0]),
            specular_channels=int(sample.specular.shape[2]) if sample.specular.ndim == 3 else 1,
            identity_dim=int(np.asarray(sample.identity).shape[0]),
            recognizer=meta.get("recognizer"),
            shape_model=meta.get("shape_model"),
        )
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise TypeError naming them."""
        return cls(**data)


def _fail(reason: str, sample: FaceSample, name: str, shard: str | None) -> SampleError:
    return SampleError(reason, shard=shard, key=sample.key, field=MEMBERS[name])


def _check_array(sample: FaceSample, name: str, dtype: Any, shape: tuple[int, ...], shard: str | None) -> np.ndarray:
    value = getattr(sample, name)
    if not isinstance(value, np.ndarray):
        raise _fail(f"must be a numpy array, got {type(value).__name__}", sample, name, shard)
    if value.dtype != np.dtype(dtype):
        raise _fail(f"dtype must be {np.dtype(dtype)}, got {value.dtype}", sample, name, shard)
    if value.shape != shape:
        raise _fail(f"shape must be {shape}, got {value.shape}", sample, name, shard)
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = int((~np.isfinite(value)).sum())
        raise _fail(f"{bad} non-finite value(s) (NaN or inf)", sample, name, shard)
    return value


def validate_sample(
    sample: FaceSample,
    spec: SampleSpec,
    *,
    fields: tuple[str, ...] | list[str] | None = None,
    shard: str | None = None,
) -> None:
    """Check a decoded sample against ``spec``; raise :class:`SampleError` naming the first problem.

    Checks the key format; presence of every requested field; image and UV resolutions; dtypes;
    finiteness; unit normals (| |n| - 1 | <= ``normal_tolerance``); identity norm ~ 1;
    |shape| <= ``shape_abs_max``; landmark count and that landmarks lie near the crop; meta keys and their
    agreement with the key, the UV resolution, the recognizer and the shape model.

    Args:
        fields: the fields to check (default: all); the others may be ``None``.
        shard: shard name, for error messages.
    """
    try:
        check_key(sample.key)
    except SampleError as exc:
        raise exc.located(shard=shard) from None
    wanted = FIELDS if fields is None else tuple(fields)
    for name in wanted:
        if getattr(sample, name) is None:
            raise _fail("missing", sample, name, shard)
    img, uv = spec.image_resolution, spec.uv_resolution
    if "image" in wanted:
        _check_array(sample, "image", np.uint8, (img, img, 3), shard)
    if "diffuse" in wanted:
        _check_array(sample, "diffuse", np.uint8, (uv, uv, 3), shard)
    if "specular" in wanted:
        _check_array(sample, "specular", np.uint8, (uv, uv, spec.specular_channels), shard)
    if "normals" in wanted:
        normals = _check_array(sample, "normals", np.float16, (uv, uv, 3), shard)
        norm = np.sqrt(np.square(normals.astype(np.float32)).sum(axis=-1))
        error = np.abs(norm - 1.0)
        worst = float(error.max())
        if worst > spec.normal_tolerance:
            row, col = np.unravel_index(int(error.argmax()), error.shape)
            raise _fail(
                f"normals must be unit vectors: |n| = {norm[row, col]:.4f} at texel (row {row}, col {col}); "
                f"{int((error > spec.normal_tolerance).sum())} texel(s) off by more than {spec.normal_tolerance}",
                sample, "normals", shard,
            )
    if "shape" in wanted:
        shape = _check_array(sample, "shape", np.float32, (spec.shape_dim,), shard)
        largest = float(np.abs(shape).max(initial=0.0))
        if largest > spec.shape_abs_max:
            raise _fail(f"coefficient of magnitude {largest:.3g} exceeds {spec.shape_abs_max} std", sample, "shape", shard)
    if "identity" in wanted:
        identity = _check_array(sample, "identity", np.float32, (spec.identity_dim,), shard)
        norm = float(np.linalg.norm(identity.astype(np.float64)))
        if abs(norm - 1.0) > spec.identity_tolerance:
            raise _fail(f"embedding must be L2-normalised, |e| = {norm:.6f}", sample, "identity", shard)
    if "landmarks" in wanted:
        landmarks = _check_array(sample, "landmarks", np.float32, (spec.num_landmarks, 2), shard)
        low, high = -spec.landmark_margin * img, (1.0 + spec.landmark_margin) * img
        if landmarks.size and (landmarks.min() < low or landmarks.max() > high):
            raise _fail(
                f"landmarks lie outside [{low:g}, {high:g}] px (range {landmarks.min():.1f} .. {landmarks.max():.1f})",
                sample, "landmarks", shard,
            )
    if "meta" in wanted:
        _check_meta(sample, spec, shard)


def _check_meta(sample: FaceSample, spec: SampleSpec, shard: str | None) -> None:
    meta = sample.meta
    if not isinstance(meta, dict):
        raise _fail(f"must be an object, got {type(meta).__name__}", sample, "meta", shard)
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise _fail(f"missing key(s) {', '.join(missing)}", sample, "meta", shard)
    if str(meta["subject"]) != subject_of(sample.key):
        raise _fail(f"subject {meta['subject']!r} disagrees with the key's {subject_of(sample.key)!r}", sample, "meta", shard)
    if meta["uv_resolution"] != spec.uv_resolution:
        raise _fail(f"uv_resolution {meta['uv_resolution']!r} != {spec.uv_resolution}", sample, "meta", shard)
    for name in ("recognizer", "shape_model"):
        expected = getattr(spec, name)
        if expected is not None and meta[name] != expected:
            raise _fail(f"{name} {meta[name]!r} != dataset's {expected!r}", sample, "meta", shard)
    for name in ("camera", "lighting"):
        if name in meta and meta[name] is not None and not isinstance(meta[name], dict):
            raise _fail(f"{name} must be an object or null", sample, "meta", shard)
    _check_finite_json(meta, sample, shard)


def _check_finite_json(value: Any, sample: FaceSample, shard: str | None, path: str = "meta") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(f"{path} is not finite ({value})", sample, "meta", shard)
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite_json(v, sample, shard, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite_json(v, sample, shard, f"{path}[{i}]")
