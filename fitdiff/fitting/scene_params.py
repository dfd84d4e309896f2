"""The camera and lights a fit refines, as one module of learnable parameters.

:class:`SceneParameters` holds, per photo, an initial camera (from :mod:`fitdiff.fitting.camera_init`)
and initial SH lighting (from :mod:`fitdiff.fitting.lighting_init`) as buffers and learns updates of
comparable scale, so one Adam learning rate suits all of them:

- rotation: axis-angle update ``omega`` (radians) applied before the initial rotation;
- translation: ``tau`` in units of the initial depth (``t = t0 + d0 * tau``);
- SH lighting: ``sh`` (B, 9, 3) radiance coefficients, learned directly;
- one directional light per photo (direction and log intensity; it starts off at intensity ``1e-3``,
  so the fit can turn on a key light and with it the specular lobe, which SH light does not produce).

The focal length, principal point, exposure (1) and gamma stay fixed.
"""

from __future__ import annotations

import torch
from torch import nn

from fitdiff.face.scene import DEFAULT_GAMMA, DEFAULT_SHININESS, SceneLights
from fitdiff.fitting.camera_init import axis_angle_to_matrix
from fitdiff.render import DirectionalLights, PerspectiveCamera

__all__ = ["SceneParameters"]

_LIGHT_OFF = 1e-3  # initial directional intensity


class SceneParameters(nn.Module):
    """Learnable camera and lights of B photos (see the module docstring).

    Args:
        camera: the initial cameras (batch B).
        sh: (B, 9, 3) initial SH radiance coefficients.
        shininess, gamma: of the returned :class:`SceneLights`.
    """

    def __init__(self, camera: PerspectiveCamera, sh: torch.Tensor, shininess: float = DEFAULT_SHININESS,
                 gamma: float = DEFAULT_GAMMA) -> None:
        super().__init__()
        batch = camera.batch_size
        if sh.shape != (batch, 9, 3):
            raise ValueError(f"sh must be ({batch}, 9, 3), got {tuple(sh.shape)}")
        self.image_size = camera.image_size
        self.znear, self.zfar = camera.znear, camera.zfar
        for name in ("R", "t", "fx", "fy", "cx", "cy"):
            self.register_buffer(f"{name}0", getattr(camera, name).detach().float().clone())
        self.register_buffer("depth0", (-self.t0[:, 2]).abs().clamp(min=1.0))
        self.omega = nn.Parameter(torch.zeros(batch, 3, device=sh.device))
        self.tau = nn.Parameter(torch.zeros(batch, 3, device=sh.device))
        self.sh = nn.Parameter(sh.detach().float().clone())
        # key light from the camera's side by default: toward +z of the view, in the model frame
        self.light_dir = nn.Parameter(self.R0[:, 2, :].clone())
        self.log_intensity = nn.Parameter(torch.full((batch,), float(torch.log(torch.tensor(_LIGHT_OFF))),
                                                     device=sh.device))
        self.shininess, self.gamma = float(shininess), float(gamma)

    @property
    def batch_size(self) -> int:
        return int(self.R0.shape[0])

    def camera_parameters(self) -> list[nn.Parameter]:
        return [self.omega, self.tau]

    def light_parameters(self) -> list[nn.Parameter]:
        return [self.sh, self.light_dir, self.log_intensity]

    def camera(self) -> PerspectiveCamera:
        """The current cameras (differentiable in ``omega`` and ``tau``)."""
        rot = axis_angle_to_matrix(self.omega) @ self.R0
        return PerspectiveCamera(rot, self.t0 + self.depth0[:, None] * self.tau, self.fx0, self.fy0, self.cx0,
                                 self.cy0, self.image_size, znear=self.znear, zfar=self.zfar)

    def lights(self) -> SceneLights:
        """The current lights (differentiable in ``sh``, ``light_dir`` and ``log_intensity``)."""
        directional = DirectionalLights(
            direction=self.light_dir[:, None, :],
            color=torch.ones(self.batch_size, 1, 3, device=self.sh.device),
            intensity=self.log_intensity.exp()[:, None],
        )
        return SceneLights(sh=self.sh, directional=directional, exposure=torch.ones_like(self.log_intensity),
                           shininess=self.shininess, gamma=self.gamma)

    def describe(self) -> list[dict]:
        """JSON-ready camera and lights per photo (the ``meta.json`` layout of the dataset's photos)."""
        with torch.no_grad():
            cam, lights = self.camera(), self.lights()
            out = []
            for i in range(self.batch_size):
                out.append({
                    "camera": {
                        "model": "perspective", "R": cam.R[i].tolist(), "t": cam.t[i].tolist(),
                        "fx": float(cam.fx[i]), "fy": float(cam.fy[i]), "cx": float(cam.cx[i]),
                        "cy": float(cam.cy[i]), "image_size": list(self.image_size), "znear": self.znear,
                        "zfar": self.zfar,
                    },
                    "lighting": {
                        "frame": "model", "sh": lights.sh[i].tolist(),
                        "directional": {
                            "direction": lights.directional.unit_directions()[i].tolist(),
                            "color": lights.directional.color[i].tolist(),
                            "intensity": lights.directional.intensity[i].tolist(),
                        },
                        "exposure": float(lights.exposure[i]), "shininess": self.shininess, "gamma": self.gamma,
                    },
                })
            return out
