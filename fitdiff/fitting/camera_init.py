"""Camera from 2D landmarks: a closed-form scaled-orthographic fit, then a perspective refinement.

Given N detected landmarks ``u`` (pixels, x right, y down) and the shape model's N landmark vertices
``X`` (model frame, mm), :func:`camera_from_landmarks` returns the pinhole camera that projects ``X``
onto ``u`` (conventions of :mod:`fitdiff.render.cameras`):

1. closed form: centre both point sets and flip the image y axis (``v = (u_x - ū_x, ū_y - u_y)``); the
   least-squares 2x3 map ``M`` with ``v ≈ M (X - X̄)`` is projected onto ``s * [r1; r2]`` (the nearest
   pair of orthonormal rows times a scale, from the SVD of ``M``), ``r3 = r1 x r2``. The scale ``s`` is
   pixels per mm, so with focal ``f`` the centroid lies at depth ``d = f / s`` and its view-space x, y
   follow from ``ū`` through the pinhole equations;
2. refinement: L-BFGS on a rotation update (axis-angle, radians), a translation update in units of the
   initial depth and, optionally, the log focal length, minimising the mean squared perspective
   reprojection error in pixels.

The focal length of an unknown photo is an assumption (``fov_degrees``, vertical field of view); the
dataset's photos span 12°-35°.
"""

from __future__ import annotations

import math

import torch

from fitdiff.render.cameras import PerspectiveCamera

__all__ = ["axis_angle_to_matrix", "camera_from_landmarks", "orthographic_pose", "rotation_angle_deg"]


def axis_angle_to_matrix(omega: torch.Tensor) -> torch.Tensor:
    """(B, 3) axis-angle vectors (radians) -> (B, 3, 3) rotation matrices (Rodrigues), differentiable at 0."""
    theta2 = (omega * omega).sum(-1, keepdim=True)
    theta = theta2.clamp(min=1e-24).sqrt()
    small = theta2 < 1e-12
    # sin(θ)/θ and (1 - cos θ)/θ² with their Taylor series near 0
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp(min=1e-24))
    zero = torch.zeros_like(omega[:, 0])
    wx, wy, wz = omega.unbind(-1)
    k = torch.stack([zero, -wz, wy, wz, zero, -wx, -wy, wx, zero], -1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def rotation_angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) angle in degrees of the relative rotation between (B, 3, 3) rotations ``a`` and ``b``."""
    rel = a @ b.transpose(1, 2)
    cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def orthographic_pose(points_2d: torch.Tensor, points_3d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form scaled-orthographic pose (step 1 of the module docstring).

    Args:
        points_2d: (B, N, 2) pixels; points_3d: (B, N, 3) or (N, 3) model-frame points, N >= 4, not
            all on a line.

    Returns:
        R (B, 3, 3) world-to-view rotation and s (B,) pixels per model unit.
    """
    u = points_2d.double()
    x = points_3d.double().expand(u.shape[0], -1, -1) if points_3d.dim() == 2 else points_3d.double()
    v = u - u.mean(1, keepdim=True)
    v = torch.stack([v[..., 0], -v[..., 1]], -1)
    xc = x - x.mean(1, keepdim=True)
    # least squares v = xc @ M^T, M (B, 2, 3)
    m = torch.linalg.lstsq(xc, v).solution.transpose(1, 2)
    uu, sigma, vh = torch.linalg.svd(m, full_matrices=False)
    rows = uu @ vh  # (B, 2, 3) orthonormal rows nearest to M / s
    r3 = torch.cross(rows[:, 0], rows[:, 1], dim=-1)
    rot = torch.cat([rows, r3[:, None]], 1)
    return rot, sigma.mean(-1)


def camera_from_landmarks(
    points_2d: torch.Tensor,
    points_3d: torch.Tensor,
    image_size: tuple[int, int],
    fov_degrees: float = 25.0,
    refine_steps: int = 30,
    refine_focal: bool = False,
    znear: float = 10.0,
) -> PerspectiveCamera:
    """Pinhole camera projecting ``points_3d`` onto ``points_2d`` (see the module docstring).

    Args:
        points_2d: (B, N, 2) landmark pixels (x right, y down).
        points_3d: (N, 3) or (B, N, 3) the same landmarks on the mesh, model frame (mm).
        image_size: (H, W) of the photo.
        fov_degrees: assumed vertical field of view (the focal length), degrees.
        refine_steps: L-BFGS iterations of the perspective refinement (0 = the closed form only).
        refine_focal: refine the focal length too (ill-posed for near-frontal, distant faces).
        znear: near clip plane of the returned camera (mm).

    Returns:
        A :class:`PerspectiveCamera` of batch B (float32, on ``points_2d``'s device), detached; each
        photo is solved on its own, so its camera does not depend on the rest of the batch.
    """
    if points_2d.dim() != 3 or points_2d.shape[-1] != 2:
        raise ValueError(f"points_2d must be (B, N, 2), got {tuple(points_2d.shape)}")
    n = points_2d.shape[1]
    if points_3d.shape[-2:] != (n, 3):
        raise ValueError(f"points_3d must be ({n}, 3) or (B, {n}, 3), got {tuple(points_3d.shape)}")
    if n < 4:
        raise ValueError(f"a camera from landmarks needs at least 4 points, got {n}")
    if points_2d.shape[0] > 1:  # each photo on its own: a shared line search would couple them
        x = points_3d if points_3d.dim() == 3 else points_3d.expand(points_2d.shape[0], -1, -1)
        cams = [camera_from_landmarks(points_2d[i:i + 1], x[i], image_size, fov_degrees, refine_steps,
                                      refine_focal, znear) for i in range(points_2d.shape[0])]
        return PerspectiveCamera(*(torch.cat([getattr(c, k) for c in cams]) for k in ("R", "t", "fx", "fy", "cx", "cy")),
                                 image_size, znear=znear)
    height, width = image_size
    device = points_2d.device
    u = points_2d.detach().double()
    batch = u.shape[0]
    x = points_3d.detach().double().to(device)
    x = x.expand(batch, -1, -1) if x.dim() == 2 else x
    rot0, scale = orthographic_pose(u, x)
    focal0 = torch.full((batch,), 0.5 * height / math.tan(math.radians(fov_degrees) / 2.0), dtype=u.dtype,
                        device=device)
    depth0 = focal0 / scale
    cx, cy = torch.full_like(focal0, width / 2.0), torch.full_like(focal0, height / 2.0)
    ubar = u.mean(1)
    centroid_view = torch.stack([(ubar[:, 0] - cx) * depth0 / focal0, -(ubar[:, 1] - cy) * depth0 / focal0,
                                 -depth0], -1)
    t0 = centroid_view - (rot0 @ x.mean(1, keepdim=True).transpose(1, 2)).squeeze(-1)

    omega = torch.zeros(batch, 3, dtype=u.dtype, device=device, requires_grad=True)
    tau = torch.zeros(batch, 3, dtype=u.dtype, device=device, requires_grad=True)
    log_f = torch.zeros(batch, dtype=u.dtype, device=device, requires_grad=refine_focal)

    def camera() -> PerspectiveCamera:
        rot = axis_angle_to_matrix(omega) @ rot0
        focal = focal0 * log_f.exp()
        return PerspectiveCamera(rot, t0 + depth0[:, None] * tau, focal, focal, cx, cy, image_size, znear=znear)

    if refine_steps > 0:
        params = [omega, tau] + ([log_f] if refine_focal else [])
        optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=refine_steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = (camera().project(x)[0] - u).pow(2).sum(-1).mean()
            loss.backward()
            return loss

        optimizer.step(closure)
    with torch.no_grad():
        cam = camera()
        return PerspectiveCamera(cam.R.float(), cam.t.float(), cam.fx.float(), cam.fy.float(), cam.cx.float(),
                                 cam.cy.float(), image_size, znear=znear)
