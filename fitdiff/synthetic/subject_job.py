"""One subject of the synthetic dataset, built in a worker: ground truth, photos, recognizer crops.

:func:`generate_subject` is what the rendering process pool of
:func:`fitdiff.synthetic.generate.generate_dataset` runs per :class:`SubjectJob`: shape coefficients and
reflectance maps, the dataset photos with their projected landmarks, and for training subjects extra
renders; every photo of a training subject is aligned to the ArcFace template (112 px) for recognizer
training.
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
from fitdiff.synthetic.subjects import Stream, make_subject, rng_for
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
    uv_res: int
    image_res: int
    shape_model: str | None
    n_vertices: int
    n_components: int
    shape_model_seed: int
    scene: SceneRanges


@dataclass
class SubjectResult:
    """A built subject: ground truth, its photos, and recognizer training crops.

    Attributes:
        images: (M, H, W, 3) uint8 dataset photos; landmarks: (M, 68, 2) float32 pixels.
        cameras, lightings: JSON-ready per-photo descriptions.
        crops: (M + E, 112, 112, 3) uint8 aligned crops of the dataset photos and the E extra renders
            (training subjects only, else empty).
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

    def key(self, j: int) -> str:
        """Sample key of dataset photo ``j``."""
        return make_key(self.id, f"{j:03d}")


_CONTEXT: dict[tuple, tuple[PCAShapeModel, UVLayout, PhotoRenderer]] = {}


def _context(job: SubjectJob) -> tuple[PCAShapeModel, UVLayout, PhotoRenderer]:
    """Shape model, UV layout and renderer of ``job``, kept for the next job with the same settings."""
    key = (job.shape_model, job.n_vertices, job.n_components, job.shape_model_seed, job.uv_res, job.image_res)
    if key not in _CONTEXT:
        model = load_shape_model(job.shape_model, job.n_vertices, job.n_components, job.shape_model_seed)
        layout = uv_layout(model, job.uv_res)
        centre = model.mean[model.landmarks_5].double().mean(0).numpy() + _CENTRE_LIFT
        _CONTEXT.clear()
        _CONTEXT[key] = (model, layout, PhotoRenderer(model, job.image_res, centre))
    return _CONTEXT[key]


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
    if job.split == "train":
        extra_scenes = [
            sample_scene(rng_for(job.seed, Stream.RECOGNIZER_PHOTO, job.index, j), job.scene)
            for j in range(job.n_extra)
        ]
        extra = renderer.render(subject.shape, subject.maps, extra_scenes) if extra_scenes else []
        all_images = np.concatenate([images, np.stack([p.image for p in extra])]) if extra else images
        all_landmarks = (
            np.concatenate([landmarks, np.stack([p.landmarks for p in extra])]) if extra else landmarks
        )
        crops = _align(all_images, all_landmarks)
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
    )
