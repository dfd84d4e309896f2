"""Random but schema-valid samples, for tests and benchmarks (no rendering, no face content)."""

from __future__ import annotations

import cv2
import numpy as np

from fitdiff.data.sample import FaceSample, subject_of
from fitdiff.data.validation import SampleSpec

__all__ = ["random_sample", "random_spec"]


def random_spec(
    image_resolution: int = 32,
    uv_resolution: int = 16,
    shape_dim: int = 8,
    num_landmarks: int = 68,
    specular_channels: int = 1,
) -> SampleSpec:
    """A small spec with placeholder recognizer / shape-model ids."""
    return SampleSpec(
        image_resolution=image_resolution,
        uv_resolution=uv_resolution,
        shape_dim=shape_dim,
        num_landmarks=num_landmarks,
        specular_channels=specular_channels,
        recognizer="random-recognizer",
        shape_model="random-shape-model",
    )


def _smooth_image(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """Low-frequency colour field plus mild noise (compresses like a photo, unlike pure noise)."""
    coarse = rng.uniform(0, 255, size=(max(2, size // 16), max(2, size // 16), channels)).astype(np.float32)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, channels)
    noisy = smooth + rng.normal(0.0, 4.0, size=smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def random_sample(key: str, spec: SampleSpec, rng: np.random.Generator | int = 0) -> FaceSample:
    """A sample that passes :func:`~fitdiff.data.validate_sample` for ``spec``.

    Args:
        key: ``<subject>_<image>``.
        spec: resolutions and sizes to produce.
        rng: generator or seed; the same seed gives the same sample.
    """
    rng = np.random.default_rng(rng)
    img, uv = spec.image_resolution, spec.uv_resolution
    normals = rng.normal(size=(uv, uv, 3))
    normals[..., 2] = np.abs(normals[..., 2]) + 1.0
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    identity = rng.normal(size=spec.identity_dim)
    identity /= np.linalg.norm(identity)
    landmarks = rng.uniform(0.2 * img, 0.8 * img, size=(spec.num_landmarks, 2))
    return FaceSample(
        key=key,
        image=_smooth_image(rng, img, 3),
        diffuse=_smooth_image(rng, uv, 3),
        specular=_smooth_image(rng, uv, spec.specular_channels),
        normals=normals.astype(np.float16),
        shape=rng.normal(size=spec.shape_dim).astype(np.float32),
        identity=identity.astype(np.float32),
        landmarks=landmarks.astype(np.float32),
        meta={
            "subject": subject_of(key),
            "source": "random",
            "recognizer": spec.recognizer or "random-recognizer",
            "shape_model": spec.shape_model or "random-shape-model",
            "uv_resolution": uv,
            "camera": {"focal_px": float(rng.uniform(2.0, 4.0) * img), "rotation": rng.normal(size=3).tolist()},
            "lighting": {"sh": rng.normal(scale=0.3, size=9).tolist()},
        },
    )
