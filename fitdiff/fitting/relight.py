"""Novel lighting of a fitted avatar: the same face, camera and exposure under other lights.

:func:`novel_lights` returns three lighting set-ups defined in each photo's camera frame (so "left" is
the viewer's left whatever the head pose) and rotated into the model frame: a key light from the upper
left, one from the upper right and one from above, each a white directional light of intensity 0.9 over
a dim uniform environment (radiance 0.25). Directional light gives the specular lobe, so the relit
renders show the specular albedo map as well as the diffuse one. :func:`view_light` builds one such
set-up for any direction (:func:`light_direction`: azimuth and elevation in the camera frame), colour and
intensity (the demo's light sliders).
"""

from __future__ import annotations

import math

import torch

from fitdiff.face.scene import DEFAULT_GAMMA, DEFAULT_SHININESS, FaceRender, FaceScene, SceneLights
from fitdiff.fitting.scene_params import SceneParameters
from fitdiff.ldm.pipeline import DecodedFace
from fitdiff.render import DirectionalLights, PerspectiveCamera
from fitdiff.render.lighting import ambient_sh

__all__ = ["NOVEL_LIGHTS", "light_direction", "novel_lights", "render_face", "view_light"]

#: name -> direction toward the light in the camera's view frame (x right, y up, z toward the viewer)
NOVEL_LIGHTS: dict[str, tuple[float, float, float]] = {
    "left": (-0.8, 0.4, 0.6),
    "right": (0.8, 0.4, 0.6),
    "top": (0.0, 0.9, 0.45),
}
_KEY_INTENSITY = 0.9
_AMBIENT = 0.25


def light_direction(azimuth_degrees: float, elevation_degrees: float) -> tuple[float, float, float]:
    """Unit direction toward a light in the camera's view frame: azimuth 0 is the camera's own direction,
    positive azimuth moves the light to the viewer's right, positive elevation up (both in degrees)."""
    az, el = math.radians(azimuth_degrees), math.radians(elevation_degrees)
    return (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))


def view_light(camera: PerspectiveCamera, view_dir: tuple[float, float, float],
               color: tuple[float, float, float] = (1.0, 1.0, 1.0), intensity: float = _KEY_INTENSITY,
               ambient: float = _AMBIENT, exposure: torch.Tensor | None = None,
               shininess: float = DEFAULT_SHININESS, gamma: float = DEFAULT_GAMMA) -> SceneLights:
    """One directional light of linear ``color`` (RGB in [0, 1]) and ``intensity``, coming from
    ``view_dir`` of each camera's view frame (x right, y up, z toward the viewer), over a uniform
    environment of radiance ``ambient``; exposure 1 unless given (B,)."""
    batch = camera.batch_size
    d = camera.R.new_tensor(view_dir)
    # view = R model  =>  model direction = R^T view direction
    direction = (camera.R.transpose(1, 2) @ d.expand(batch, 3)[..., None])[..., 0]
    return SceneLights(
        sh=ambient_sh(ambient, batch).to(camera.R),
        directional=DirectionalLights(direction=direction[:, None], color=camera.R.new_tensor(color).expand(
            batch, 1, 3).contiguous(), intensity=camera.R.new_full((batch, 1), float(intensity))),
        exposure=exposure if exposure is not None else camera.R.new_ones(batch),
        shininess=shininess, gamma=gamma,
    )


def novel_lights(params: SceneParameters) -> dict[str, SceneLights]:
    """The set-ups of :data:`NOVEL_LIGHTS` for the photos of ``params`` (exposure, gamma and shininess kept)."""
    with torch.no_grad():
        camera, fitted = params.camera(), params.lights()
        return {name: view_light(camera, view_dir, exposure=fitted.exposure.detach(), shininess=fitted.shininess,
                                 gamma=fitted.gamma) for name, view_dir in NOVEL_LIGHTS.items()}


@torch.no_grad()
def render_face(scene: FaceScene, face: DecodedFace, params: SceneParameters, background: torch.Tensor,
                lights: SceneLights | None = None) -> FaceRender:
    """``face`` rendered with the fitted camera over ``background`` (B, 3, H, W), under ``lights``
    (default: the fitted lights)."""
    maps = face.maps
    return scene(face.shape, maps["diffuse"], maps["specular"], maps["normals"], params.camera(),
                 lights if lights is not None else params.lights(), background=background)
