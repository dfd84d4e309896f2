"""Random photo conditions of a synthetic render: head pose, camera, lighting, exposure and background.

Frames. The mesh stays in the shape model's frame (mm, +y up, face toward +z). The head pose is a
rotation ``R_head = Rz(roll) Rx(pitch) Ry(yaw)`` about the model origin (the head centre); the camera
looks down -z at the rotated face from a distance, so its extrinsics for model-space points are
``x_cam = R_head x + t`` (OpenGL view frame, see :mod:`fitdiff.render.cameras`). Positive yaw turns the
face toward the subject's left (+x), positive pitch tilts it down, positive roll turns it
counter-clockwise in the image.

Lighting is stored in the model frame (what the renderer needs with model-space vertices): order-2 SH
radiance coefficients (B, 9, 3) and one directional light; both are drawn in the camera frame (so that
the face is mostly lit from the front) and rotated into the model frame. Radiance is linear; the photo
is ``clip(exposure * radiance, 0, 1) ** (1 / 2.2)`` composited over a display-space background
(:class:`fitdiff.face.scene.FaceScene`, which reads these lights back from ``meta.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from fitdiff.render import PerspectiveCamera
from fitdiff.render.lighting import SH_CONSTANTS

__all__ = [
    "SceneRanges",
    "Scene",
    "head_rotation",
    "sample_scene",
    "scene_cameras",
    "background_image",
    "GAMMA",
    "EYE_DISTANCE_MM",
]

GAMMA = 2.2
EYE_DISTANCE_MM = 65.0  # nominal inter-ocular distance used to frame the face


@dataclass(frozen=True)
class SceneRanges:
    """Ranges of the random photo conditions (angles in degrees).

    Attributes:
        max_yaw, max_pitch, max_roll: uniform in [-max, max].
        fov: vertical field of view range.
        eye_fraction: inter-ocular distance as a fraction of the image width.
        max_offset: face centre offset from the image centre, fraction of the image side.
        ambient: SH ambient radiance range; directional: directional light intensity range.
        max_noise: largest sensor noise std in 8-bit levels.
    """

    max_yaw: float = 30.0
    max_pitch: float = 15.0
    max_roll: float = 8.0
    fov: tuple[float, float] = (12.0, 35.0)
    eye_fraction: tuple[float, float] = (0.24, 0.31)
    max_offset: float = 0.05
    ambient: tuple[float, float] = (0.25, 0.7)
    directional: tuple[float, float] = (0.2, 1.2)
    max_noise: float = 2.0


@dataclass(frozen=True)
class Scene:
    """One photo's conditions (see the module docstring for frames and units)."""

    yaw: float
    pitch: float
    roll: float
    fov: float
    eye_fraction: float
    offset: tuple[float, float]
    sh: tuple[tuple[float, float, float], ...]
    light_direction: tuple[float, float, float]
    light_color: tuple[float, float, float]
    light_intensity: float
    exposure: float
    noise: float
    background_seed: int

    def rotation(self) -> np.ndarray:
        """(3, 3) head rotation R_head."""
        return head_rotation(self.yaw, self.pitch, self.roll)


def head_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R_head = Rz(roll) Rx(pitch) Ry(yaw) for angles in degrees, (3, 3) float64."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0.0, math.sin(y)], [0.0, 1.0, 0.0], [-math.sin(y), 0.0, math.cos(y)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0.0], [math.sin(r), math.cos(r), 0.0], [0.0, 0.0, 1.0]])
    return rz @ rx @ ry


def _tint(rng: np.random.Generator, strength: float) -> np.ndarray:
    """A colour-temperature tint (warm to cool) with unit green channel."""
    temperature = rng.uniform(-1.0, 1.0)
    tint = np.array([1.0 + strength * temperature, 1.0, 1.0 - strength * temperature])
    return tint * np.exp(rng.normal(0.0, 0.02, 3))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def sample_scene(rng: np.random.Generator, ranges: SceneRanges = SceneRanges()) -> Scene:
    """Draw one photo's conditions (a fixed number of draws)."""
    yaw = rng.uniform(-ranges.max_yaw, ranges.max_yaw)
    pitch = rng.uniform(-ranges.max_pitch, ranges.max_pitch)
    roll = rng.uniform(-ranges.max_roll, ranges.max_roll)
    rot = head_rotation(yaw, pitch, roll)
    # Directional light in the camera frame: in front of the face, from above more often than below.
    azimuth = math.radians(rng.uniform(-75.0, 75.0))
    elevation = math.radians(rng.uniform(-25.0, 65.0))
    light_cam = np.array(
        [
            math.sin(azimuth) * math.cos(elevation),
            math.sin(elevation),
            math.cos(azimuth) * math.cos(elevation),
        ]
    )
    light_model = rot.T @ light_cam
    # SH environment: ambient + a linear gradient (sky above) + weak second-order terms, camera frame.
    ambient = rng.uniform(*ranges.ambient)
    gradient_dir = _unit(np.array([rng.normal(0, 0.5), 1.0 + rng.normal(0, 0.3), rng.normal(0, 0.5)]))
    gradient = ambient * rng.uniform(0.0, 0.6) * (rot.T @ gradient_dir)  # rotate the l = 1 band to the model
    env_tint = _tint(rng, 0.12)
    sh = np.zeros((9, 3))
    sh[0] = ambient / SH_CONSTANTS[0]
    sh[1:4] = np.array([gradient[1], gradient[2], gradient[0]])[:, None] / SH_CONSTANTS[1]
    sh[4:] = rng.normal(0.0, 0.08 * ambient, (5, 1)) / SH_CONSTANTS[2]
    sh = sh * env_tint
    intensity = rng.uniform(*ranges.directional)
    light_color = _tint(rng, 0.15)
    # Exposure brings a mid-grey surface facing the camera to roughly the same brightness.
    exposure = rng.uniform(0.85, 1.3) / (ambient + 0.6 * intensity)
    return Scene(
        yaw=float(yaw),
        pitch=float(pitch),
        roll=float(roll),
        fov=float(rng.uniform(*ranges.fov)),
        eye_fraction=float(rng.uniform(*ranges.eye_fraction)),
        offset=(float(rng.uniform(-1, 1) * ranges.max_offset), float(rng.uniform(-1, 1) * ranges.max_offset)),
        sh=tuple(tuple(float(c) for c in row) for row in sh),
        light_direction=tuple(float(c) for c in light_model),
        light_color=tuple(float(c) for c in light_color),
        light_intensity=float(intensity),
        exposure=float(exposure),
        noise=float(rng.uniform(0.0, ranges.max_noise)),
        background_seed=int(rng.integers(0, 2**31 - 1)),
    )


def scene_cameras(scenes: list[Scene], face_centre: np.ndarray, image_size: int) -> PerspectiveCamera:
    """A batch of cameras that frame the face: the rotated ``face_centre`` (mm, model frame) appears at the
    image centre shifted by each scene's offset, at a distance giving the scene's inter-ocular fraction."""
    rots, trans, focals = [], [], []
    for scene in scenes:
        rot = scene.rotation()
        focal = 0.5 * image_size / math.tan(math.radians(scene.fov) / 2.0)
        distance = focal * EYE_DISTANCE_MM / (scene.eye_fraction * image_size)
        centre = rot @ np.asarray(face_centre, dtype=np.float64)
        # Shift the camera so the face centre lands at (offset * image_size) pixels from the image centre.
        shift = np.array([scene.offset[0], -scene.offset[1], 0.0]) * image_size * distance / focal
        eye = centre + np.array([0.0, 0.0, distance]) - shift
        rots.append(rot)
        trans.append(-eye)
        focals.append(focal)
    return PerspectiveCamera(
        torch.tensor(np.stack(rots), dtype=torch.float32),
        torch.tensor(np.stack(trans), dtype=torch.float32),
        torch.tensor(focals, dtype=torch.float32),
        torch.tensor(focals, dtype=torch.float32),
        image_size / 2.0,
        image_size / 2.0,
        (image_size, image_size),
        znear=10.0,
    )


def background_image(seed: int, size: int) -> np.ndarray:
    """(size, size, 3) display-space background in [0, 1]: a two-colour gradient plus smooth noise and
    soft blobs, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    angle = rng.uniform(0.0, 2 * math.pi)
    coords = (np.arange(size) + 0.5) / size - 0.5
    xx, yy = np.meshgrid(coords, coords)
    t = np.clip(0.5 + math.cos(angle) * xx + math.sin(angle) * yy, 0.0, 1.0)[..., None]
    image = a * (1.0 - t) + b * t
    cells = int(rng.integers(2, 7))
    noise = rng.normal(0.0, rng.uniform(0.02, 0.12), (cells, cells, 3)).astype(np.float32)
    image = image + cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(-0.5, 0.5, 2)
        radius = rng.uniform(0.05, 0.3)
        weight = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / radius**2)[..., None]
        image = image * (1.0 - 0.6 * weight) + 0.6 * weight * rng.uniform(0.0, 1.0, 3)
    return np.clip(image, 0.0, 1.0)
