"""Render photos of one synthetic subject: shaded mesh, tone curve, background, sensor noise, landmarks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.render import Renderer
from fitdiff.synthetic.scene import GAMMA, Scene, background_image, scene_cameras, scene_lights
from fitdiff.synthetic.textures import ReflectanceMaps

__all__ = ["Photo", "PhotoRenderer", "SHININESS"]

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
    (looks down -z), pixels ``px = cx + fx X / d``, ``py = cy - fy Y / d`` with ``d = -Z``."""
    return {
        "model": "perspective",
        "R": camera.R[index].double().tolist(),
        "t": camera.t[index].double().tolist(),
        "fx": float(camera.fx[index]),
        "fy": float(camera.fy[index]),
        "cx": float(camera.cx[index]),
        "cy": float(camera.cy[index]),
        "image_size": list(camera.image_size),
        "fov_degrees": scene.fov,
        "pose_degrees": {"yaw": scene.yaw, "pitch": scene.pitch, "roll": scene.roll},
    }


def lighting_meta(scene: Scene) -> dict[str, Any]:
    """JSON description of a scene's lights and tone curve (model frame, linear radiance)."""
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
    }


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
        self.renderer = Renderer(
            (self.image_size, self.image_size), shininess=SHININESS, normal_space="tangent"
        )

    @torch.no_grad()
    def render(self, shape: np.ndarray, maps: ReflectanceMaps, scenes: list[Scene]) -> list[Photo]:
        """Photos of the subject with coefficients ``shape`` (K,) and ``maps`` under each scene."""
        batch = len(scenes)
        vertices = self.model(torch.from_numpy(np.asarray(shape, dtype=np.float32))[None]).expand(
            batch, -1, -1
        )
        camera = scene_cameras(scenes, self.face_centre, self.image_size)
        sh, lights = scene_lights(scenes)

        def to_map(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None]

        out = self.renderer.render(
            vertices,
            self.model.faces,
            camera,
            uvs=self.model.uvs,
            uv_faces=self.model.uv_faces,
            diffuse=to_map(maps.diffuse),
            specular=to_map(maps.specular),
            normals=to_map(maps.normals),
            sh_coeffs=sh,
            lights=lights,
            background=0.0,
        )
        landmarks, _ = camera.project(vertices[:, self.model.landmarks_68])
        radiance = out.image.permute(0, 2, 3, 1).double().numpy()
        alpha = out.alpha.permute(0, 2, 3, 1).double().numpy()
        photos = []
        for i, scene in enumerate(scenes):
            face = np.clip(radiance[i] * scene.exposure, 0.0, 1.0) ** (1.0 / GAMMA)
            image = alpha[i] * face + (1.0 - alpha[i]) * background_image(
                scene.background_seed, self.image_size
            )
            noise = np.random.default_rng(scene.background_seed + 1).normal(
                0.0, scene.noise / 255.0, image.shape
            )
            image = np.round(np.clip(image + noise, 0.0, 1.0) * 255.0).astype(np.uint8)
            photos.append(
                Photo(
                    image=image,
                    landmarks=landmarks[i].numpy().astype(np.float32),
                    coverage=float(alpha[i].mean()),
                    camera=camera_meta(camera, i, scene),
                )
            )
        return photos
