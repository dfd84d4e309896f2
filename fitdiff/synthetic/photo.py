"""Render photos of one synthetic subject through the face scene: shading, tone curve, background, noise.

Every photo is made by :class:`fitdiff.face.scene.FaceScene` with the camera and lights rebuilt from the
photo's own ``meta.json`` entries (:func:`fitdiff.face.scene.camera_from_meta`), so re-rendering a
dataset sample from its ground truth and meta gives the same pixels up to the sensor noise, which is
itself reproducible from the meta (:func:`photo_background`, :func:`sensor_noise`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fitdiff.face.scene import FaceScene, camera_from_meta
from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.synthetic.scene import GAMMA, Scene, background_image, scene_cameras
from fitdiff.synthetic.textures import ReflectanceMaps

__all__ = [
    "Photo",
    "PhotoRenderer",
    "SHININESS",
    "camera_meta",
    "lighting_meta",
    "photo_background",
    "sensor_noise",
]

SHININESS = 24.0  # Blinn-Phong exponent of every synthetic render


@dataclass
class Photo:
    """One rendered photo.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        landmarks: (68, 2) float32 projected landmark vertices, image pixels (x right, y down, pixel
            centres at integer + 0.5).
        coverage: fraction of pixels covered by the face mesh.
        camera: JSON-ready camera (extrinsics and intrinsics, see :func:`camera_meta`).
    """

    image: np.ndarray
    landmarks: np.ndarray
    coverage: float
    camera: dict[str, Any]


def camera_meta(camera, index: int, scene: Scene) -> dict[str, Any]:
    """JSON description of camera ``index`` of a batch: ``x_cam = R x_model + t`` (mm), OpenGL view frame
    (looks down -z), pixels ``px = cx + fx X / d``, ``py = cy - fy Y / d`` with ``d = -Z``; triangles with
    a corner nearer than ``znear`` (mm) are not drawn."""
    return {
        "model": "perspective",
        "R": camera.R[index].double().tolist(),
        "t": camera.t[index].double().tolist(),
        "fx": float(camera.fx[index]),
        "fy": float(camera.fy[index]),
        "cx": float(camera.cx[index]),
        "cy": float(camera.cy[index]),
        "image_size": list(camera.image_size),
        "znear": float(camera.znear),
        "zfar": float(camera.zfar),
        "fov_degrees": scene.fov,
        "pose_degrees": {"yaw": scene.yaw, "pitch": scene.pitch, "roll": scene.roll},
    }


def lighting_meta(scene: Scene) -> dict[str, Any]:
    """JSON description of a scene's lights, tone curve, background and sensor noise (model frame, linear
    radiance; the background is display-space, composited over the face's alpha)."""
    return {
        "frame": "model",
        "sh": [list(row) for row in scene.sh],
        "directional": {
            "direction": list(scene.light_direction),
            "color": list(scene.light_color),
            "intensity": scene.light_intensity,
        },
        "shininess": SHININESS,
        "exposure": scene.exposure,
        "gamma": GAMMA,
        "noise_levels": scene.noise,
        "noise_seed": scene.background_seed + 1,
        "background": {"kind": "procedural", "seed": scene.background_seed},
    }


def photo_background(meta: Mapping[str, Any]) -> np.ndarray:
    """(H, W, 3) float64 display-space background in [0, 1] of a synthetic photo, from its meta."""
    background = meta["lighting"]["background"]
    if background.get("kind") != "procedural":
        raise ValueError(f"unknown background kind {background.get('kind')!r}")
    height, width = meta["camera"]["image_size"]
    if height != width:
        raise ValueError(f"procedural backgrounds are square, got image_size {height} x {width}")
    return background_image(int(background["seed"]), int(height))


def sensor_noise(seed: int, levels: float, shape: tuple[int, ...]) -> np.ndarray:
    """Gaussian sensor noise of std ``levels`` 8-bit levels, in [0, 1] units, deterministic for ``seed``."""
    return np.random.default_rng(seed).normal(0.0, levels / 255.0, shape)


class PhotoRenderer:
    """Renders a subject under several scenes in one batch.

    Args:
        model: the PCA shape model (its mesh, UVs and landmarks).
        image_size: side of the square photos in pixels.
        face_centre: (3,) model-frame point the camera centres on, mm.
    """

    def __init__(self, model: PCAShapeModel, image_size: int, face_centre: np.ndarray) -> None:
        self.model = model
        self.image_size = int(image_size)
        self.face_centre = np.asarray(face_centre, dtype=np.float64)
        self.scene = FaceScene(model, landmarks="68", normal_space="tangent")

    @torch.no_grad()
    def render(
        self, shape: np.ndarray, maps: ReflectanceMaps | Sequence[ReflectanceMaps], scenes: list[Scene]
    ) -> list[Photo]:
        """Photos of the subject with coefficients ``shape`` (K,) under each scene, wearing ``maps`` (one set
        for every photo, or one per scene)."""
        cameras = scene_cameras(scenes, self.face_centre, self.image_size)
        metas = [{"camera": camera_meta(cameras, i, s), "lighting": lighting_meta(s)} for i, s in enumerate(scenes)]
        camera, lights = camera_from_meta(metas)
        per_photo = [maps] if isinstance(maps, ReflectanceMaps) else list(maps)
        if len(per_photo) not in (1, len(scenes)):
            raise ValueError(f"got {len(per_photo)} sets of maps for {len(scenes)} scenes")

        def to_map(name: str) -> torch.Tensor:  # (H, W, C) each -> (1 or B, C, H, W)
            arrays = [np.ascontiguousarray(getattr(m, name), dtype=np.float32) for m in per_photo]
            return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

        backgrounds = np.stack([photo_background(m) for m in metas])
        out = self.scene(
            torch.from_numpy(np.asarray(shape, dtype=np.float32))[None],
            to_map("diffuse"),
            to_map("specular"),
            to_map("normals"),
            camera,
            lights,
            background=torch.from_numpy(backgrounds).permute(0, 3, 1, 2).float(),
        )
        images = out.image.permute(0, 2, 3, 1).double().numpy()
        photos = []
        for i, meta in enumerate(metas):
            lighting = meta["lighting"]
            noisy = images[i] + sensor_noise(lighting["noise_seed"], lighting["noise_levels"], images[i].shape)
            photos.append(
                Photo(
                    image=np.round(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8),
                    landmarks=out.landmarks[i].numpy().astype(np.float32),
                    coverage=float(out.alpha[i].mean()),
                    camera=meta["camera"],
                )
            )
        return photos
