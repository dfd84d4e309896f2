"""The ``Renderer`` facade: mesh + camera + reflectance maps + lights -> image, alpha, depth, shading normals."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fitdiff.render.cameras import Camera
from fitdiff.render.compositing import composite_over
from fitdiff.render.fragments import Fragments
from fitdiff.render.interpolate import interpolate_face_attributes, interpolate_vertex_attributes
from fitdiff.render.lighting import DirectionalLights
from fitdiff.render.mesh import tangent_frames, vertex_normals
from fitdiff.render.rasterizer import rasterize
from fitdiff.render.shading import apply_normal_map, blinn_phong, lambert
from fitdiff.render.texture import sample_texture

__all__ = ["RenderOutput", "Renderer"]

log = logging.getLogger(__name__)


@dataclass
class RenderOutput:
    """What one render returns; all images (B, C, H, W), differentiable where it makes sense.

    Attributes:
        image: (B, 3, H, W) linear radiance composited over the background (not clamped).
        alpha: (B, 1, H, W) coverage in [0, 1] (hard 0/1 unless the antialiasing band is on).
        depth: (B, 1, H, W) view depth in world units, 0 where nothing is drawn.
        shading_normals: (B, 3, H, W) unit world-space per-pixel shading normals (after normal mapping),
            0 on background.
        fragments: the rasteriser's per-pixel visibility, for further interpolation.
    """

    image: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    shading_normals: torch.Tensor
    fragments: Fragments


def _batch_maps(maps: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if maps.dim() != 4 or maps.shape[0] not in (1, batch):
        raise ValueError(f"{name} must be (B, C, H, W) or (1, C, H, W) with B = {batch}, got {tuple(maps.shape)}")
    return maps.expand(batch, -1, -1, -1)


class Renderer:
    """Batched differentiable renderer of meshes sharing one triangle list.

    Shading model per pixel (linear radiance):
        diffuse_albedo * (E_sh(n) / pi + sum_l c_l max(0, n . l)) + specular_albedo * sum_l c_l (n . h)^s
    with n the (optionally normal-mapped) shading normal; see :mod:`fitdiff.render.lighting` for the SH
    convention. Without any light the diffuse albedo is shown unlit. Specular reflection needs
    directional lights (the SH environment lights the diffuse term only).

    Args:
        image_size: (H, W) in pixels.
        cull_backfaces: skip triangles facing away from the camera.
        shininess: Blinn-Phong exponent.
        normal_space: ``"tangent"`` or ``"object"``, how normal maps are read.
        soft_sigma: width in pixels of the soft silhouette band (0 = hard edges, no silhouette gradients);
            see :mod:`fitdiff.render.rasterizer`.
        backend: ``"pytorch"`` (built in) or ``"pytorch3d"`` (optional dependency) for the visibility pass.
        max_candidates: memory bound for the rasteriser, in (triangle, pixel) pairs per chunk.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        cull_backfaces: bool = True,
        shininess: float = 32.0,
        normal_space: str = "tangent",
        soft_sigma: float = 0.0,
        backend: str = "pytorch",
        max_candidates: int = 4_000_000,
    ) -> None:
        if normal_space not in ("tangent", "object"):
            raise ValueError(f"normal_space must be 'tangent' or 'object', got {normal_space!r}")
        if backend not in ("pytorch", "pytorch3d"):
            raise ValueError(f"backend must be 'pytorch' or 'pytorch3d', got {backend!r}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.cull_backfaces = cull_backfaces
        self.shininess = shininess
        self.normal_space = normal_space
        self.soft_sigma = soft_sigma
        self.backend = backend
        self.max_candidates = max_candidates

    def rasterize(self, vertices: torch.Tensor, faces: torch.Tensor, camera: Camera) -> Fragments:
        """Project (B, V, 3) world vertices with ``camera`` and rasterise the (F, 3) triangles."""
        if camera.image_size != self.image_size:
            raise ValueError(f"camera image_size {camera.image_size} != renderer image_size {self.image_size}")
        xy, depth = camera.project(vertices)
        return rasterize(
            xy,
            depth,
            faces,
            self.image_size,
            perspective=camera.perspective,
            cull_backfaces=self.cull_backfaces,
            znear=camera.znear,
            zfar=camera.zfar,
            soft_sigma=self.soft_sigma,
            max_candidates=self.max_candidates,
            backend=self.backend,
        )

    def render(
        self,
        vertices: torch.Tensor,
        faces: torch.Tensor,
        camera: Camera,
        *,
        uvs: torch.Tensor | None = None,
        uv_faces: torch.Tensor | None = None,
        diffuse: torch.Tensor | None = None,
        specular: torch.Tensor | None = None,
        normals: torch.Tensor | None = None,
        vertex_colors: torch.Tensor | None = None,
        sh_coeffs: torch.Tensor | None = None,
        lights: DirectionalLights | None = None,
        background: torch.Tensor | float = 0.0,
    ) -> RenderOutput:
        """Render a batch of meshes.

        Args:
            vertices: (B, V, 3) world positions (mm).
            faces: (F, 3) long, counter-clockwise seen from outside.
            camera: batch-B camera with this renderer's image size.
            uvs: (T, 2) UVs in [0, 1] (v = 0 bottom row); uv_faces: (F, 3) long into ``uvs``. Required with
                any texture.
            diffuse: (B or 1, 3, Hd, Wd) diffuse albedo map in [0, 1].
            specular: (B or 1, 1 or 3, Hs, Ws) specular albedo map in [0, 1].
            normals: (B or 1, 3, Hn, Wn) normal UV map of unit normals in [-1, 1] (space per
                ``normal_space``).
            vertex_colors: (B, V, 3) per-vertex diffuse albedo, used when ``diffuse`` is None.
            sh_coeffs: (B, 9, 3) radiance SH coefficients; lights: directional lights.
            background: scalar, (3,) colour or (B, 3, H, W) photo to composite over.

        Returns:
            RenderOutput.
        """
        if vertices.dim() != 3 or vertices.shape[-1] != 3:
            raise ValueError(f"vertices must be (B, V, 3), got {tuple(vertices.shape)}")
        batch = vertices.shape[0]
        if camera.batch_size != batch:
            raise ValueError(f"camera batch {camera.batch_size} != vertices batch {batch}")
        faces = faces.to(vertices.device)
        textures = {k: v for k, v in (("diffuse", diffuse), ("specular", specular), ("normals", normals))
                    if v is not None}
        if textures and (uvs is None or uv_faces is None):
            raise ValueError(f"textures {sorted(textures)} need uvs and uv_faces")
        frags = self.rasterize(vertices, faces, camera)

        # One gather for every per-vertex attribute (normal frame, position, colours), then the padded
        # (B, P, C) layout so per-image textures and lights apply with batched ops.
        tangent_mapped = normals is not None and self.normal_space == "tangent"
        per_vertex: dict[str, torch.Tensor] = {}
        if tangent_mapped:
            tan, bitan, nrm = tangent_frames(vertices, faces, uvs.to(vertices), uv_faces.to(faces))  # type: ignore[union-attr]
            per_vertex.update(normal=nrm, tangent=tan, bitangent=bitan)
        else:
            per_vertex["normal"] = vertex_normals(vertices, faces)
        want_view = specular is not None and lights is not None
        if want_view and camera.perspective:
            per_vertex["position"] = vertices
        if diffuse is None and vertex_colors is not None:
            if vertex_colors.shape[:2] != vertices.shape[:2]:
                raise ValueError(f"vertex_colors must be {tuple(vertices.shape[:2])} + (C,), got {tuple(vertex_colors.shape)}")
            per_vertex["color"] = vertex_colors.to(vertices)
        packed = interpolate_vertex_attributes(frags, torch.cat(list(per_vertex.values()), dim=-1))
        widths = {name: value.shape[-1] for name, value in per_vertex.items()}
        if textures:
            assert uvs is not None and uv_faces is not None
            packed = torch.cat([packed, interpolate_face_attributes(frags, uvs.to(packed), uv_faces)], dim=-1)
            widths["uv"] = 2
        # One split rather than a slice per attribute: the split's backward is a single concatenation,
        # whereas every slice would zero-fill a gradient the size of the whole padded tensor.
        attrs = dict(zip(widths, frags.to_padded(packed).split(list(widths.values()), dim=-1)))
        geo_normal = F.normalize(attrs["normal"], dim=-1, eps=1e-12)
        view_dirs = None
        if want_view and camera.perspective:
            view_dirs = F.normalize(camera.centre().unsqueeze(1) - attrs["position"], dim=-1, eps=1e-12)
        elif want_view:
            view_dirs = camera.backward_axis().unsqueeze(1)
        sampled = self._sample_textures(textures, attrs["uv"], batch) if textures else {}
        if "diffuse" in sampled:
            albedo = sampled["diffuse"]
        elif "color" in attrs:
            albedo = attrs["color"]
        else:
            albedo = torch.ones_like(geo_normal)

        normal = geo_normal
        if normals is not None:
            normal = apply_normal_map(
                sampled["normals"], geo_normal, attrs.get("tangent"), attrs.get("bitangent"), self.normal_space
            )

        if sh_coeffs is None and lights is None:
            color = albedo
        else:
            color = lambert(albedo, normal, sh_coeffs, lights)
            if want_view:
                assert lights is not None and view_dirs is not None
                color = color + blinn_phong(sampled["specular"], normal, view_dirs, lights, self.shininess)

        color = frags.from_padded(color)
        alpha = frags.soft_alpha if frags.soft_alpha is not None else color.new_ones(color.shape[0])
        alpha = alpha.to(color.dtype).unsqueeze(1)
        alpha_img = frags.to_image(alpha)
        if isinstance(background, torch.Tensor) and background.dim() == 4:
            background = _batch_maps(background, batch, "background").to(color)
        image = composite_over(frags.to_image(color * alpha), alpha_img, background)
        return RenderOutput(
            image=image,
            alpha=alpha_img,
            depth=frags.to_image(frags.depth.unsqueeze(1).to(color.dtype)),
            shading_normals=frags.to_image(frags.from_padded(normal)),
            fragments=frags,
        )

    __call__ = render

    def _sample_textures(
        self, textures: dict[str, torch.Tensor], uv: torch.Tensor, batch: int
    ) -> dict[str, torch.Tensor]:
        """Sample every map at (B, P, 2) UVs -> name: (B, P, C).

        One ``grid_sample`` per map: concatenating maps of equal size into one call costs a copy of every
        texture forward and backward, more than the repeated bilinear weights it saves."""
        return {name: sample_texture(_batch_maps(tex, batch, name).to(uv), uv) for name, tex in textures.items()}
