"""The differentiable face scene: (shape, reflectance maps, camera, lights) -> photo, alpha, landmarks.

One function renders a face the way the embedded dataset's photos are made, so data generation, fitting
and evaluation share it (:class:`FaceScene`). The steps:

1. vertices = PCA shape model(shape coefficients) in the model frame (mm);
2. linear radiance from :class:`fitdiff.render.Renderer`: diffuse albedo x (SH irradiance / pi + Lambert
   directional lights) + specular albedo x Blinn-Phong(shininess), with the tangent-space normal map;
3. tone curve: display = clip(exposure x radiance, 0, 1) ** (1 / gamma);
4. composite in display space: image = alpha x display + (1 - alpha) x background.

:func:`camera_from_meta` rebuilds the exact camera and lights of a dataset photo from its ``meta.json``
(keys ``camera`` and ``lighting``, written by :mod:`fitdiff.synthetic.photo`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.render import DirectionalLights, PerspectiveCamera, Renderer
from fitdiff.render.cameras import Camera

__all__ = ["SceneLights", "FaceRender", "FaceScene", "camera_from_meta", "tone_map", "DEFAULT_GAMMA"]

DEFAULT_GAMMA = 2.2
DEFAULT_SHININESS = 24.0
DEFAULT_ZNEAR = 10.0  # mm; what meta.json files without a ``znear`` were rendered with
DEFAULT_ZFAR = 1e5
_TONE_EPS = 1e-8  # radiance floor of the power curve: keeps its gradient finite (display value 2e-4)


@dataclass
class SceneLights:
    """How a face is lit and exposed, in the shape model's frame (linear radiance).

    Attributes:
        sh: (B, 9, 3) radiance SH coefficients (order and convention: :mod:`fitdiff.render.lighting`).
        directional: directional lights, batch B (direction toward the light, colour, intensity).
        exposure: (B,) gain applied to radiance before the tone curve, > 0.
        shininess: Blinn-Phong exponent of the specular lobe.
        gamma: display gamma of the tone curve (> 0).
    """

    sh: torch.Tensor
    directional: DirectionalLights
    exposure: torch.Tensor
    shininess: float = DEFAULT_SHININESS
    gamma: float = DEFAULT_GAMMA

    @property
    def batch_size(self) -> int:
        return int(self.sh.shape[0])


@dataclass
class FaceRender:
    """One render of :class:`FaceScene`; every tensor differentiable.

    Attributes:
        image: (B, 3, H, W) display-space photo in [0, 1], composited over the background.
        alpha: (B, 1, H, W) face coverage in [0, 1] (0/1 unless the scene's ``soft_sigma`` > 0).
        landmarks: (B, N, 2) projected landmark vertices, pixels (x right, y down, pixel centres at
            integer + 0.5).
        radiance: (B, 3, H, W) linear radiance of the face before exposure, 0 where alpha is 0.
        vertices: (B, V, 3) the mesh in the model frame, mm.
        normals: (B, 3, H, W) unit model-frame shading normals (after normal mapping), 0 where nothing
            is drawn.
    """

    image: torch.Tensor
    alpha: torch.Tensor
    landmarks: torch.Tensor
    radiance: torch.Tensor
    vertices: torch.Tensor
    normals: torch.Tensor


def tone_map(radiance: torch.Tensor, exposure: torch.Tensor, gamma: float) -> torch.Tensor:
    """Display values ``clip(exposure * radiance, 0, 1) ** (1 / gamma)`` of (B, C, H, W) radiance and
    (B,) exposure; values below 1e-8 are raised to it so the gradient stays finite."""
    exposed = radiance * exposure.to(radiance).view(-1, 1, 1, 1)
    return exposed.clamp(_TONE_EPS, 1.0) ** (1.0 / gamma)


class FaceScene(nn.Module):
    """Renders faces of a PCA shape model; see the module docstring for the image formation.

    Args:
        model: the shape model (mesh, UV layout, landmark vertices); its buffers follow ``.to()``.
        landmarks: ``"68"``, ``"5"`` or a (N,) long tensor of vertex indices projected as landmarks.
        normal_space: ``"tangent"`` or ``"object"``, how the normal UV map is read.
        soft_sigma: antialiasing band of the silhouette in pixels (0: hard edges, as the dataset).
        backend: rasteriser visibility pass, ``"pytorch"`` or ``"pytorch3d"``.
    """

    def __init__(
        self,
        model: PCAShapeModel,
        landmarks: str | torch.Tensor = "68",
        normal_space: str = "tangent",
        soft_sigma: float = 0.0,
        backend: str = "pytorch",
    ) -> None:
        super().__init__()
        self.model = model
        if isinstance(landmarks, str):
            if landmarks not in ("68", "5"):
                raise ValueError(f"landmarks must be '68', '5' or an index tensor, got {landmarks!r}")
            landmarks = model.landmarks_68 if landmarks == "68" else model.landmarks_5
        self.register_buffer("landmark_vertices", torch.as_tensor(landmarks, dtype=torch.long).clone(),
                             persistent=False)
        if normal_space not in ("tangent", "object"):
            raise ValueError(f"normal_space must be 'tangent' or 'object', got {normal_space!r}")
        if backend not in ("pytorch", "pytorch3d"):
            raise ValueError(f"backend must be 'pytorch' or 'pytorch3d', got {backend!r}")
        self.normal_space = normal_space
        self.soft_sigma = soft_sigma
        self.backend = backend

    def forward(
        self,
        shape: torch.Tensor,
        diffuse: torch.Tensor,
        specular: torch.Tensor,
        normals: torch.Tensor,
        camera: Camera,
        lights: SceneLights,
        background: torch.Tensor | float = 0.0,
    ) -> FaceRender:
        """Render a batch of faces.

        Args:
            shape: (B, K) or (1, K) shape coefficients in units of each component's std.
            diffuse: (B or 1, 3, R, R) diffuse albedo UV map, linear, in [0, 1] (row 0 = top, v = 1).
            specular: (B or 1, 1 or 3, R, R) specular albedo UV map in [0, 1].
            normals: (B or 1, 3, R, R) normal UV map, unit vectors in [-1, 1] (``normal_space``).
            camera: batch-B camera (model frame to view), its ``image_size`` sets the output size.
            lights: batch-B :class:`SceneLights`.
            background: display-space background in [0, 1]: scalar, (3,) colour or (B or 1, 3, H, W).

        Returns:
            :class:`FaceRender`.
        """
        batch = camera.batch_size
        if shape.dim() != 2 or shape.shape[0] not in (1, batch):
            raise ValueError(f"shape must be ({batch}, K) or (1, K), got {tuple(shape.shape)}")
        if lights.batch_size != batch:
            raise ValueError(f"lights batch {lights.batch_size} != camera batch {batch}")
        vertices = self.model(shape).expand(batch, -1, -1)
        renderer = Renderer(camera.image_size, shininess=lights.shininess, normal_space=self.normal_space,
                            soft_sigma=self.soft_sigma, backend=self.backend)
        out = renderer(
            vertices, self.model.faces, camera, uvs=self.model.uvs, uv_faces=self.model.uv_faces,
            diffuse=diffuse, specular=specular, normals=normals, sh_coeffs=lights.sh, lights=lights.directional,
            background=0.0,
        )
        alpha = out.alpha
        # The renderer composites over black: out.image is radiance premultiplied by alpha.
        radiance = torch.where(alpha > 0, out.image / alpha.clamp(min=1e-6), torch.zeros_like(out.image))
        display = tone_map(radiance, lights.exposure, lights.gamma)
        bg = torch.as_tensor(background, dtype=display.dtype, device=display.device)
        if bg.dim() == 1:
            bg = bg.view(1, -1, 1, 1)
        image = alpha * display + (1.0 - alpha) * bg
        landmarks = camera.project(vertices.index_select(1, self.landmark_vertices))[0]
        return FaceRender(image=image, alpha=alpha, landmarks=landmarks, radiance=radiance, vertices=vertices,
                          normals=out.shading_normals)


def _tensor(value: Any, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64).to(device=device, dtype=dtype)


def camera_from_meta(
    meta: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[PerspectiveCamera, SceneLights]:
    """The camera and lights a dataset photo was rendered with, from its ``meta.json``.

    Args:
        meta: one photo's meta (batch of 1) or a sequence of them (batch B; one image size, shininess and
            gamma). Uses ``meta["camera"]`` (``R``, ``t``: x_view = R x_model + t in mm, OpenGL view
            frame; ``fx``, ``fy``, ``cx``, ``cy`` in pixels; ``image_size`` [H, W]; optional ``znear``,
            ``zfar``) and ``meta["lighting"]`` (model frame: ``sh`` 9 x 3, ``directional`` with
            ``direction``, ``color``, ``intensity``; ``exposure``; optional ``shininess``, ``gamma``).
        device, dtype: of the returned tensors (plain tensors: set ``requires_grad_`` to fit them).

    Returns:
        (camera, lights) for :class:`FaceScene`.
    """
    metas = [meta] if isinstance(meta, Mapping) else list(meta)
    if not metas:
        raise ValueError("camera_from_meta needs at least one meta")
    cams, lits = [], []
    for i, m in enumerate(metas):
        cam, lit = m.get("camera"), m.get("lighting")
        if not isinstance(cam, Mapping) or not isinstance(lit, Mapping):
            raise KeyError(f"meta {i} needs 'camera' and 'lighting' objects")
        if cam.get("model", "perspective") != "perspective":
            raise ValueError(f"meta {i}: camera model {cam.get('model')!r} is not supported (perspective only)")
        if lit.get("frame", "model") != "model":
            raise ValueError(f"meta {i}: lights in frame {lit.get('frame')!r}, expected 'model'")
        cams.append(cam)
        lits.append(lit)
    for key, source in (("image_size", cams), ("znear", cams), ("zfar", cams), ("shininess", lits), ("gamma", lits)):
        values = {str(s.get(key)) for s in source}
        if len(values) > 1:
            raise ValueError(f"metas of one batch must share {key}, got {sorted(values)}")
    first_cam, first_lit = cams[0], lits[0]
    camera = PerspectiveCamera(
        _tensor([c["R"] for c in cams], dtype, device),
        _tensor([c["t"] for c in cams], dtype, device),
        _tensor([c["fx"] for c in cams], dtype, device),
        _tensor([c["fy"] for c in cams], dtype, device),
        _tensor([c["cx"] for c in cams], dtype, device),
        _tensor([c["cy"] for c in cams], dtype, device),
        (int(first_cam["image_size"][0]), int(first_cam["image_size"][1])),
        znear=float(first_cam.get("znear", DEFAULT_ZNEAR)),
        zfar=float(first_cam.get("zfar", DEFAULT_ZFAR)),
    )
    directional = [lit["directional"] for lit in lits]
    lights = SceneLights(
        sh=_tensor([lit["sh"] for lit in lits], dtype, device),
        directional=DirectionalLights(
            direction=_tensor([d["direction"] for d in directional], dtype, device),
            color=_tensor([d["color"] for d in directional], dtype, device),
            intensity=_tensor([d["intensity"] for d in directional], dtype, device),
        ),
        exposure=_tensor([lit["exposure"] for lit in lits], dtype, device),
        shininess=float(first_lit.get("shininess", DEFAULT_SHININESS)),
        gamma=float(first_lit.get("gamma", DEFAULT_GAMMA)),
    )
    return camera, lights
