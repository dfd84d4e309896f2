"""Visibility pass by pytorch3d's rasteriser (optional; imported only when this back-end is chosen).

Only the discrete z-buffer step is delegated: pytorch3d returns the nearest triangle per pixel and the
shared code in :mod:`fitdiff.render.rasterizer` recomputes differentiable barycentrics and depth, so both
back-ends give the same outputs and gradients up to ties on shared edges.
"""

from __future__ import annotations

import torch

from fitdiff.render.edges import drawable_faces

__all__ = ["is_available", "visibility"]


def is_available() -> bool:
    """True when pytorch3d's rasteriser can be imported."""
    try:
        import pytorch3d.renderer.mesh.rasterize_meshes  # noqa: F401
    except ImportError:
        return False
    return True


@torch.no_grad()
def visibility(
    xy: torch.Tensor,
    depth: torch.Tensor,
    faces: torch.Tensor,
    image_size: tuple[int, int],
    perspective: bool,
    cull_backfaces: bool,
    znear: float,
    zfar: float,
    max_candidates: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as the built-in ``_visibility``: (B*H*W,) nearest triangle or -1, and (B, F) bool
    front-facing drawable triangles. ``max_candidates`` is unused (pytorch3d bins internally)."""
    try:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes
    except ImportError as err:
        raise ImportError("the 'pytorch3d' renderer back-end needs pytorch3d installed") from err
    del max_candidates
    height, width = image_size
    batch = xy.shape[0]
    tri_xy = xy[:, faces]
    tri_z = depth[:, faces]
    drawable, front = drawable_faces(tri_xy, tri_z, cull_backfaces, znear, zfar)
    # pytorch3d screen space: NDC with +x left, +y up, the shorter image side spanning [-1, 1]. Depth is
    # interpolated linearly in screen space here, which orders fragments like the built-in pass for
    # perspective cameras only approximately within a triangle; ties at overlaps are rare for meshes.
    half = min(height, width) / 2.0
    ndc = torch.stack([-(xy[..., 0] - width / 2.0) / half, -(xy[..., 1] - height / 2.0) / half, depth], -1)
    kept = [torch.nonzero(drawable[b]).squeeze(1) for b in range(batch)]
    meshes = Meshes(verts=list(ndc.float()), faces=[faces[k] for k in kept])
    pix_to_face, _, _, _ = rasterize_meshes(
        meshes, image_size=(height, width), blur_radius=0.0, faces_per_pixel=1, perspective_correct=False
    )
    packed = pix_to_face[..., 0].long()  # (B, H, W) index into the packed kept faces, -1 background
    first = meshes.mesh_to_faces_packed_first_idx().to(packed.device)
    out = torch.full_like(packed, -1)
    for b in range(batch):
        hit = packed[b] >= 0
        out[b][hit] = kept[b][packed[b][hit] - first[b]]
    return out.reshape(-1), drawable & front
