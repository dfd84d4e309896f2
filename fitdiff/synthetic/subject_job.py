"""One subject of the synthetic dataset, built in a worker: ground truth, photos, recognizer crops.

:func:`generate_subject` is what the rendering process pool of
:func:`fitdiff.synthetic.generate.generate_dataset` runs per :class:`SubjectJob`: shape coefficients and
reflectance maps, the dataset photos with their projected landmarks, and for training subjects extra
renders; every photo of a training subject is aligned to the ArcFace template (112 px) for recognizer
training. The extra renders are ``n_extra`` of the subject as it is and ``n_shared`` of its shape
wearing appearances of the shared pool (:func:`fitdiff.synthetic.subjects.shared_appearance_plan`), so
that the recognizer cannot tell every training crop apart by its albedo and has to learn the shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fitdiff.data import make_key
from fitdiff.data.landmarks import five_point_landmarks
from fitdiff.face.alignment import align_faces
from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.synthetic.config import load_shape_model
from fitdiff.synthetic.photo import PhotoRenderer, lighting_meta
from fitdiff.synthetic.scene import SceneRanges, sample_scene
from fitdiff.synthetic.subjects import (
    Stream,
    make_subject,
    rng_for,
    shared_appearance,
    shared_appearance_plan,
)
from fitdiff.synthetic.textures import ReflectanceMaps
from fitdiff.synthetic.uv_layout import UVLayout, uv_layout

__all__ = ["CROP_SIZE", "SubjectJob", "SubjectResult", "generate_subject"]

CROP_SIZE = 112
# The camera centres on the mean of the 5 ArcFace landmark vertices raised by this much (mm, +y).
_CENTRE_LIFT = np.array([0.0, 8.0, 0.0])


@dataclass(frozen=True)
class SubjectJob:
    """Everything a worker needs to build one subject."""

    seed: int
    index: int
    split: str
    n_photos: int
    n_extra: int
    n_shared: int
    appearance_pool: int
    uv_res: int
    image_res: int
    shape_model: str | None
    n_vertices: int
    n_components: int
    shape_model_seed: int
    shape_space: str
    scene: SceneRanges


@dataclass
class SubjectResult:
    """A built subject: ground truth, its photos, and recognizer training crops.

    Attributes:
        images: (M, H, W, 3) uint8 dataset photos; landmarks: (M, 68, 2) float32 pixels.
        cameras, lightings: JSON-ready per-photo descriptions.
        crops: (M + E + S, 112, 112, 3) uint8 aligned crops of the dataset photos, the E extra renders
            and the S shared-appearance renders (training subjects only, else empty).
        crop_appearance: (M + E + S,) int64 pool member worn by each crop, -1 for the subject's own.
    """

    index: int
    id: str
    split: str
    diffuse: np.ndarray
    specular: np.ndarray
    normals: np.ndarray
    shape: np.ndarray
    appearance: dict[str, Any]
    images: np.ndarray
    landmarks: np.ndarray
    cameras: list[dict[str, Any]]
    lightings: list[dict[str, Any]]
    crops: np.ndarray
    crop_appearance: np.ndarray

    def key(self, j: int) -> str:
        """Sample key of dataset photo ``j``."""
        return make_key(self.id, f"{j:03d}")


_CONTEXT: dict[tuple, tuple[PCAShapeModel, UVLayout, PhotoRenderer]] = {}
_POOL: dict[tuple, dict[int, ReflectanceMaps]] = {}


def _context(job: SubjectJob) -> tuple[PCAShapeModel, UVLayout, PhotoRenderer]:
    """Shape model, UV layout and renderer of ``job``, kept for the next job with the same settings."""
    key = (
        job.shape_model,
        job.n_vertices,
        job.n_components,
        job.shape_model_seed,
        job.shape_space,
        job.uv_res,
        job.image_res,
    )
    if key not in _CONTEXT:
        model = load_shape_model(
            job.shape_model, job.n_vertices, job.n_components, job.shape_model_seed, job.shape_space
        )
        layout = uv_layout(model, job.uv_res)
        centre = model.mean[model.landmarks_5].double().mean(0).numpy() + _CENTRE_LIFT
        _CONTEXT.clear()
        _CONTEXT[key] = (model, layout, PhotoRenderer(model, job.image_res, centre))
    return _CONTEXT[key]


def _pool_member(job: SubjectJob, layout: UVLayout, member: int) -> ReflectanceMaps:
    """Maps of shared-pool member ``member``, made on first use and kept for the worker's next jobs."""
    key = (job.seed, layout.model_id, job.uv_res)
    if key not in _POOL:
        _POOL.clear()
        _POOL[key] = {}
    pool = _POOL[key]
    if member not in pool:
        pool[member] = shared_appearance(job.seed, member, layout)
    return pool[member]


def _align(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) uint8 ArcFace-aligned crops of (N, H, W, 3) uint8 photos with 68 landmarks."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    points = torch.from_numpy(five_point_landmarks(landmarks))
    crops = align_faces(batch, points, CROP_SIZE)
    return (crops.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def generate_subject(job: SubjectJob) -> SubjectResult:
    """Build one subject (deterministic in ``job``; thread count fixed to 1 by the caller)."""
    model, layout, renderer = _context(job)
    subject = make_subject(job.seed, job.index, layout, model.n_components)
    scenes = [
        sample_scene(rng_for(job.seed, Stream.PHOTO, job.index, j), job.scene) for j in range(job.n_photos)
    ]
    photos = renderer.render(subject.shape, subject.maps, scenes)
    images = np.stack([p.image for p in photos])
    landmarks = np.stack([p.landmarks for p in photos])
    crops = np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    crop_appearance = np.zeros(0, np.int64)
    if job.split == "train":
        all_images, all_landmarks = [images], [landmarks]
        extra_scenes = [
            sample_scene(rng_for(job.seed, Stream.RECOGNIZER_PHOTO, job.index, j), job.scene)
            for j in range(job.n_extra)
        ]
        members = shared_appearance_plan(job.seed, job.index, job.n_shared, job.appearance_pool)
        shared_scenes = [
            sample_scene(rng_for(job.seed, Stream.SHARED_PHOTO, job.index, j), job.scene)
            for j in range(job.n_shared)
        ]
        for maps, batch in (
            (subject.maps, extra_scenes),
            ([_pool_member(job, layout, int(m)) for m in members], shared_scenes),
        ):
            if batch:
                rendered = renderer.render(subject.shape, maps, batch)
                all_images.append(np.stack([p.image for p in rendered]))
                all_landmarks.append(np.stack([p.landmarks for p in rendered]))
        crops = _align(np.concatenate(all_images), np.concatenate(all_landmarks))
        crop_appearance = np.concatenate([np.full(len(images) + job.n_extra, -1, np.int64), members])
    diffuse, specular, normals = subject.maps.to_uint8()
    return SubjectResult(
        index=job.index,
        id=subject.id,
        split=job.split,
        diffuse=diffuse,
        specular=specular,
        normals=normals,
        shape=subject.shape,
        appearance=subject.appearance.to_dict(),
        images=images,
        landmarks=landmarks,
        cameras=[p.camera for p in photos],
        lightings=[lighting_meta(s) for s in scenes],
        crops=crops,
        crop_appearance=crop_appearance,
    )
