"""Per-subject ground truth (shape coefficients + reflectance maps) and the seeding of every random draw.

Every draw comes from its own generator seeded by ``(seed, stream, subject, image)``
(:func:`rng_for`), so a subject, a photo or a recognizer render is the same whatever else is generated,
in whatever order and on whichever worker.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from fitdiff.synthetic.textures import Appearance, ReflectanceMaps, reflectance_maps, sample_appearance
from fitdiff.synthetic.uv_layout import UVLayout

__all__ = ["Stream", "rng_for", "subject_id", "SubjectTruth", "make_subject"]


class Stream(enum.IntEnum):
    """Independent random streams of a dataset build."""

    SUBJECT = 0  # shape coefficients and appearance of a subject
    PHOTO = 1  # scene of a dataset photo
    RECOGNIZER_PHOTO = 2  # scene of an extra render used to train the recognizer
    RECOGNIZER_TRAINING = 3  # initialisation and batch order of recognizer training


def rng_for(seed: int, stream: Stream, *indices: int) -> np.random.Generator:
    """A generator determined by ``(seed, stream, *indices)`` only."""
    if seed < 0 or any(i < 0 for i in indices):
        raise ValueError(f"seed and indices must be non-negative, got seed={seed}, indices={indices}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), *map(int, indices)]))


def subject_id(index: int) -> str:
    """Subject id of subject ``index``: ``syn00000``, ``syn00001``, ..."""
    return f"syn{index:05d}"


@dataclass
class SubjectTruth:
    """One subject's ground truth.

    Attributes:
        index: subject number; ``id``: its id (see :func:`subject_id`).
        shape: (K,) float32 PCA coefficients in std units, N(0, 1).
        appearance: the appearance parameters the maps were drawn from.
        maps: float32 reflectance maps as stored (8-bit albedos, float16 normals).
    """

    index: int
    id: str
    shape: np.ndarray
    appearance: Appearance
    maps: ReflectanceMaps


def make_subject(seed: int, index: int, layout: UVLayout, n_components: int) -> SubjectTruth:
    """Subject ``index`` of the dataset with ``seed``: N(0, 1) shape coefficients and procedural maps."""
    rng = rng_for(seed, Stream.SUBJECT, index)
    shape = rng.standard_normal(n_components).astype(np.float32)
    appearance = sample_appearance(rng)
    maps = reflectance_maps(appearance, layout).quantised()
    return SubjectTruth(index=index, id=subject_id(index), shape=shape, appearance=appearance, maps=maps)
