"""A fixed studio scene for looking at generated faces: frontal and three-quarter cameras, soft light.

Samples have no photo and hence no camera; previews (training grids, ``python -m fitdiff.sample``)
render them all under this one scene so that they are comparable with each other and across runs.
"""

from __future__ import annotations

import math

import torch

from fitdiff.face.scene import SceneLights
from fitdiff.render import DirectionalLights, PerspectiveCamera, ambient_sh, look_at

__all__ = ["PREVIEW_VIEWS", "preview_scene"]

#: yaw angles in degrees of the preview cameras (0 = frontal; positive turns toward the subject's left)
PREVIEW_VIEWS: tuple[float, ...] = (0.0, 35.0)


def preview_scene(
    batch_size: int, image_size: int = 128, yaw_degrees: float = 0.0, distance_mm: float = 650.0,
    target_mm: tuple[float, float, float] = (0.0, 0.0, 40.0), fov_degrees: float = 22.0,
    device: torch.device | str | None = None,
) -> tuple[PerspectiveCamera, SceneLights]:
    """(camera, lights) for ``batch_size`` faces seen from ``yaw_degrees`` at ``distance_mm``.

    Light: ambient SH 0.6 plus a white key light from the upper front-left, exposure 1, so albedo 0.5
    shows mid-grey; the camera looks at ``target_mm`` (model frame, face toward +z).
    """
    yaw = math.radians(yaw_degrees)
    target = torch.tensor(target_mm, dtype=torch.float32, device=device)
    offset = torch.tensor([distance_mm * math.sin(yaw), 0.0, distance_mm * math.cos(yaw)], device=device)
    rot, trans = look_at((target + offset).expand(batch_size, 3), target)
    camera = PerspectiveCamera.from_fov(rot, trans, (image_size, image_size), fov_degrees=fov_degrees)
    key = DirectionalLights(torch.tensor([[0.4, 0.5, 1.0]], device=device).expand(batch_size, 3).contiguous())
    lights = SceneLights(sh=ambient_sh(0.6, batch_size).to(device), directional=key,
                         exposure=torch.ones(batch_size, device=device))
    return camera, lights
