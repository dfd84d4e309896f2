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

__all__ = [
    "Stream",
    "rng_for",
    "subject_id",
    "SubjectTruth",
    "make_subject",
    "shared_appearance",
    "shared_appearance_plan",
]


class Stream(enum.IntEnum):
    """Independent random streams of a dataset build."""

    SUBJECT = 0  # shape coefficients and appearance of a subject
    PHOTO = 1  # scene of a dataset photo
    RECOGNIZER_PHOTO = 2  # scene of an extra render used to train the recognizer
    RECOGNIZER_TRAINING = 3  # initialisation and batch order of recognizer training
    SHARED_APPEARANCE = 4  # appearance of a member of the shared appearance pool
    SHARED_PHOTO = 5  # scene of a shared-appearance recognizer render
    SHARED_PLAN = 6  # which pool appearances a subject's shared-appearance renders wear
    EVAL_RECOGNIZER_TRAINING = 7  # initialisation and batch order of the evaluation recognizer


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


def shared_appearance(seed: int, member: int, layout: UVLayout) -> ReflectanceMaps:
    """Member ``member`` of the shared appearance pool: reflectance maps of no subject, drawn like a
    subject's (:func:`sample_appearance`) from their own stream, as stored (quantised)."""
    appearance = sample_appearance(rng_for(seed, Stream.SHARED_APPEARANCE, member))
    return reflectance_maps(appearance, layout).quantised()


def shared_appearance_plan(seed: int, index: int, n_renders: int, pool_size: int) -> np.ndarray:
    """(n_renders,) int64 pool members worn by subject ``index``'s shared-appearance renders.

    Every member is drawn uniformly from the pool independently of the subject, so each pool
    appearance is worn by many subjects and the albedo of these renders says nothing about whose face
    it is: only the shape does.
    """
    if n_renders and pool_size < 1:
        raise ValueError(f"the shared appearance pool must have at least one member, got {pool_size}")
    if n_renders == 0:
        return np.zeros(0, dtype=np.int64)
    return rng_for(seed, Stream.SHARED_PLAN, index).integers(0, pool_size, n_renders).astype(np.int64)
