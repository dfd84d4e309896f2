"""Novel lighting of a fitted avatar: the same face, camera and exposure under other lights.

:func:`novel_lights` returns three lighting set-ups defined in each photo's camera frame (so "left" is
the viewer's left whatever the head pose) and rotated into the model frame: a key light from the upper
left, one from the upper right and one from above, each a white directional light of intensity 0.9 over
a dim uniform environment (radiance 0.25). Directional light gives the specular lobe, so the relit
renders show the specular albedo map as well as the diffuse one.
"""

from __future__ import annotations

import torch

from fitdiff.face.scene import FaceRender, FaceScene, SceneLights
from fitdiff.fitting.scene_params import SceneParameters
from fitdiff.ldm.pipeline import DecodedFace
from fitdiff.render import DirectionalLights
from fitdiff.render.lighting import ambient_sh

__all__ = ["NOVEL_LIGHTS", "novel_lights", "render_face"]

#: name -> direction toward the light in the camera's view frame (x right, y up, z toward the viewer)
NOVEL_LIGHTS: dict[str, tuple[float, float, float]] = {
    "left": (-0.8, 0.4, 0.6),
    "right": (0.8, 0.4, 0.6),
    "top": (0.0, 0.9, 0.45),
}
_KEY_INTENSITY = 0.9
_AMBIENT = 0.25


def novel_lights(params: SceneParameters) -> dict[str, SceneLights]:
    """The set-ups of :data:`NOVEL_LIGHTS` for the photos of ``params`` (exposure, gamma and shininess kept)."""
    with torch.no_grad():
        camera, fitted = params.camera(), params.lights()
        batch = camera.batch_size
        out = {}
        for name, view_dir in NOVEL_LIGHTS.items():
            d = camera.R.new_tensor(view_dir)
            # view = R model  =>  model direction = R^T view direction
            direction = (camera.R.transpose(1, 2) @ d.expand(batch, 3)[..., None])[..., 0]
            out[name] = SceneLights(
                sh=ambient_sh(_AMBIENT, batch).to(camera.R),
                directional=DirectionalLights(direction=direction[:, None], intensity=camera.R.new_full(
                    (batch, 1), _KEY_INTENSITY)),
                exposure=fitted.exposure.detach(), shininess=fitted.shininess, gamma=fitted.gamma,
            )
        return out


@torch.no_grad()
def render_face(scene: FaceScene, face: DecodedFace, params: SceneParameters, background: torch.Tensor,
                lights: SceneLights | None = None) -> FaceRender:
    """``face`` rendered with the fitted camera over ``background`` (B, 3, H, W), under ``lights``
    (default: the fitted lights)."""
    maps = face.maps
    return scene(face.shape, maps["diffuse"], maps["specular"], maps["normals"], params.camera(),
                 lights if lights is not None else params.lights(), background=background)
