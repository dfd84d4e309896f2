"""Unwrapping a photo into a partial UV map with the fitted camera (the photo's side of reflectance completion).

For every texel of an R x R UV map, :func:`unwrap_photo`:

1. finds the mesh point it maps to: the shape model's UV triangles are rasterised in UV space
   (texel centres, row 0 = the top of the map, v = 1), giving each covered texel its triangle and
   barycentric weights, hence its 3D position on the fitted mesh;
2. projects that point with the fitted camera and keeps it when it is **visible**: inside the photo,
   on a triangle facing the camera (``n . view >= min_cos``), and not hidden by another part of the face
   (its depth within ``depth_tol`` mm of the camera rasteriser's z-buffer at that pixel);
3. samples the photo there (bilinear). With ``lights`` (the fitted ones) it also **de-lights**: the
   photo's display values are taken back to linear radiance (the inverse of the scene's tone curve) and
   divided by the radiance of the same face rendered with a white diffuse and no specular albedo and the
   mesh's own normals (the photo's fine normals are unknown), which leaves the diffuse albedo where the
   specular highlight is weak.

Returns the partial map and its validity mask, the inputs of :func:`fitdiff.completion.complete_maps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fitdiff.face.scene import FaceScene, SceneLights
from fitdiff.render import rasterize
from fitdiff.render.cameras import Camera

__all__ = ["Unwrapped", "unwrap_photo"]


@dataclass
class Unwrapped:
    """A photo unwrapped onto the UV map.

    Attributes:
        texture: (B, 3, R, R) the photo's values per texel (display space), or the de-lit diffuse albedo
            (linear) when lights were given; 0 where not valid.
        valid: (B, R, R) bool, texel seen in the photo.
        covered: (R, R) bool, texel inside the UV chart (the face region).
    """

    texture: torch.Tensor
    valid: torch.Tensor
    covered: torch.Tensor


def _uv_fragments(scene: FaceScene, resolution: int):
    model = scene.model
    uv = model.uvs.float()
    xy = torch.stack([uv[:, 0] * resolution, (1.0 - uv[:, 1]) * resolution], -1)[None]
    return rasterize(xy, torch.ones(1, uv.shape[0], device=uv.device), model.uv_faces, (resolution, resolution),
                     perspective=False, cull_backfaces=False)


@torch.no_grad()
def unwrap_photo(scene: FaceScene, shape: torch.Tensor, camera: Camera, photo: torch.Tensor, resolution: int,
                 lights: SceneLights | None = None, depth_tol: float = 2.0, min_cos: float = 0.2) -> Unwrapped:
    """Unwrap (B, 3, H, W) photos in [0, 1] of faces with (B, K) shapes seen by ``camera`` (see the module
    docstring); ``lights`` turns on de-lighting."""
    model = scene.model
    batch = camera.batch_size
    height, width = camera.image_size
    uvf = _uv_fragments(scene, resolution)
    face_of_texel = uvf.face_index  # (N,) triangles of the (F, 3) list shared by faces and uv_faces
    texel = uvf.pixel_index  # flat y * R + x of the covered texels (batch 1)
    corners = model.faces[face_of_texel]  # (N, 3) mesh vertices of each texel's triangle
    vertices = model(shape).expand(batch, -1, -1)
    points = (vertices[:, corners] * uvf.bary[None, :, :, None]).sum(2)  # (B, N, 3)
    xy, depth = camera.project(points)
    # visibility: the camera's z-buffer at the texel's pixel
    vxy, vdepth = camera.project(vertices)
    frags = rasterize(vxy, vdepth, model.faces, (height, width), cull_backfaces=True)
    zbuffer = frags.dense_depth(background=float("inf"))[:, 0]  # (B, H, W)
    px = xy[..., 0].floor().long()
    py = xy[..., 1].floor().long()
    inside = (px >= 0) & (px < width) & (py >= 0) & (py < height) & (depth > 0)
    flat = (py.clamp(0, height - 1) * width + px.clamp(0, width - 1))
    seen_depth = zbuffer.flatten(1).gather(1, flat)
    unoccluded = (depth - seen_depth).abs() <= depth_tol
    tri = vertices[:, model.faces[face_of_texel]]  # (B, N, 3, 3)
    normal = F.normalize(torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1), dim=-1)
    facing = (normal * camera.view_directions(points)).sum(-1) >= min_cos
    visible = inside & unoccluded & facing  # (B, N)

    image = photo.float()
    if lights is not None:  # linear radiance of the photo over that of a white diffuse, no specular face
        exposed = image.clamp(1e-6, 1.0) ** lights.gamma / lights.exposure.to(image).view(-1, 1, 1, 1)
        ones = model.uvs.new_ones(1, 3, 1, 1)
        flat = torch.cat([torch.zeros_like(ones[:, :2]), ones[:, :1]], 1)  # tangent-space +z: the mesh's own normal
        white = FaceScene(model, normal_space="tangent")(shape, ones, torch.zeros_like(ones[:, :1]), flat, camera,
                                                          lights).radiance
        image = exposed / white.clamp(min=1e-3)
    grid = torch.stack([xy[..., 0] / width * 2 - 1, xy[..., 1] / height * 2 - 1], -1)[:, :, None]  # (B, N, 1, 2)
    values = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0]  # (B, 3, N)
    texture = photo.new_zeros(batch, 3, resolution * resolution)
    valid = torch.zeros(batch, resolution * resolution, dtype=torch.bool, device=photo.device)
    texture[:, :, texel] = torch.where(visible[:, None], values, torch.zeros_like(values))
    valid[:, texel] = visible
    covered = torch.zeros(resolution * resolution, dtype=torch.bool, device=photo.device)
    covered[texel] = True
    return Unwrapped(texture.view(batch, 3, resolution, resolution), valid.view(batch, resolution, resolution),
                     covered.view(resolution, resolution))
