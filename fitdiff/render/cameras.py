"""Batched pinhole (perspective) and orthographic cameras, differentiable in every parameter.

Frames. World: right-handed, +y up, millimetres. Camera (view) frame: OpenGL style, the camera looks
down its -z axis with +y up and +x to the image right. Pixels: x to the right, y down, pixel (0, 0) is
the top-left pixel and its centre sits at (0.5, 0.5), so a W x H image spans [0, W] x [0, H].

Projection of a view-space point (X, Y, Z) with depth d = -Z (positive in front of the camera):
    perspective:   px = cx + fx * X / d,   py = cy - fy * Y / d      (fx, fy, cx, cy in pixels)
    orthographic:  px = cx + fx * X,       py = cy - fy * Y          (fx, fy in pixels per mm)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "Camera",
    "PerspectiveCamera",
    "OrthographicCamera",
    "look_at",
    "intrinsics_for_image",
]


def _batched(x: torch.Tensor | float, batch: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """Broadcast a scalar or (B,) value to a (B,) tensor on ``like``'s device and dtype."""
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(batch)
    if t.dim() != 1 or t.shape[0] not in (1, batch):
        raise ValueError(f"{name} must be a scalar, (1,) or ({batch},), got {tuple(t.shape)}")
    return t.expand(batch)


def look_at(
    eye: torch.Tensor, at: torch.Tensor | None = None, up: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera rotation and translation of a camera at ``eye`` looking at ``at``.

    Args:
        eye: (B, 3) or (3,) camera centres in world units.
        at: (B, 3) or (3,) points looked at; default the origin.
        up: (B, 3) or (3,) world up hint; default +y. Must not be parallel to ``at - eye``.

    Returns:
        R (B, 3, 3) and t (B, 3) with x_cam = R @ x_world + t; the camera looks down its -z axis.
    """
    eye = eye.unsqueeze(0) if eye.dim() == 1 else eye
    if eye.dim() != 2 or eye.shape[-1] != 3:
        raise ValueError(f"eye must be (3,) or (B, 3), got {tuple(eye.shape)}")
    at = eye.new_zeros(3) if at is None else at
    up = eye.new_tensor([0.0, 1.0, 0.0]) if up is None else up
    at, up = torch.broadcast_tensors(at.to(eye), eye)[0], torch.broadcast_tensors(up.to(eye), eye)[0]
    back = F.normalize(eye - at, dim=-1)  # camera +z points away from the target
    right = torch.cross(up, back, dim=-1)
    if bool((right.norm(dim=-1) < 1e-9).any()):
        raise ValueError("up is parallel to the viewing direction (at - eye); choose another up vector")
    right = F.normalize(right, dim=-1)
    true_up = torch.cross(back, right, dim=-1)
    rot = torch.stack([right, true_up, back], dim=1)  # rows are camera axes in world coordinates
    trans = -(rot @ eye.unsqueeze(-1)).squeeze(-1)
    return rot, trans


def intrinsics_for_image(
    image_size: tuple[int, int], fov_degrees: float | torch.Tensor = 30.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pinhole intrinsics (fx, fy, cx, cy) in pixels for an (H, W) image and a vertical field of view.

    Square pixels; the principal point is the image centre (W / 2, H / 2).
    """
    height, width = image_size
    fov = torch.as_tensor(fov_degrees, dtype=torch.get_default_dtype())
    fy = 0.5 * height / torch.tan(0.5 * fov * math.pi / 180.0)
    return fy.clone(), fy.clone(), torch.tensor(width / 2.0), torch.tensor(height / 2.0)


@dataclass
class Camera:
    """Base camera: extrinsics R (B, 3, 3), t (B, 3) (x_cam = R x_world + t) and intrinsics fx, fy, cx, cy,
    each (B,) in pixels (orthographic fx, fy: pixels per world unit); image_size (H, W); depth clip range
    [znear, zfar] in world units along the viewing axis."""

    R: torch.Tensor
    t: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    image_size: tuple[int, int]
    znear: float = 1.0
    zfar: float = 1e5

    def __post_init__(self) -> None:
        if self.R.dim() != 3 or self.R.shape[-2:] != (3, 3):
            raise ValueError(f"R must be (B, 3, 3), got {tuple(self.R.shape)}")
        batch = self.R.shape[0]
        if self.t.shape != (batch, 3):
            raise ValueError(f"t must be ({batch}, 3) to match R, got {tuple(self.t.shape)}")
        self.fx = _batched(self.fx, batch, self.R, "fx")
        self.fy = _batched(self.fy, batch, self.R, "fy")
        self.cx = _batched(self.cx, batch, self.R, "cx")
        self.cy = _batched(self.cy, batch, self.R, "cy")
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {self.image_size}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    perspective: bool = True

    @property
    def batch_size(self) -> int:
        return self.R.shape[0]

    @property
    def device(self) -> torch.device:
        return self.R.device

    def world_to_view(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) world points -> (B, N, 3) view-space points (camera looks down -z)."""
        if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != self.batch_size:
            raise ValueError(f"points must be ({self.batch_size}, N, 3), got {tuple(points.shape)}")
        return points @ self.R.transpose(1, 2) + self.t.unsqueeze(1)

    def view_to_pixels(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) view-space points -> pixel xy (B, N, 2) and depth (B, N) (= -z, positive in front)."""
        raise NotImplementedError

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) world points -> pixel coordinates (B, N, 2) (x right, y down) and depth (B, N) in
        world units (distance along the viewing axis, positive in front of the camera)."""
        return self.view_to_pixels(self.world_to_view(points))

    def centre(self) -> torch.Tensor:
        """(B, 3) camera centres in world coordinates (-R^T t)."""
        return -(self.R.transpose(1, 2) @ self.t.unsqueeze(-1)).squeeze(-1)

    def backward_axis(self) -> torch.Tensor:
        """(B, 3) world direction of the camera's +z axis (pointing from the scene toward the camera)."""
        return self.R[:, 2, :]

    def view_directions(self, points: torch.Tensor) -> torch.Tensor:
        """Unit directions from world points (B, N, 3) toward the camera -> (B, N, 3)."""
        if self.perspective:
            return F.normalize(self.centre().unsqueeze(1) - points, dim=-1, eps=1e-12)
        return self.backward_axis().unsqueeze(1).expand_as(points)

    def intrinsic_matrix(self) -> torch.Tensor:
        """(B, 3, 3) OpenCV-style K for a y-down camera frame (perspective only; fx, fy, cx, cy)."""
        zero = torch.zeros_like(self.fx)
        one = torch.ones_like(self.fx)
        rows = [
            torch.stack([self.fx, zero, self.cx], -1),
            torch.stack([zero, self.fy, self.cy], -1),
            torch.stack([zero, zero, one], -1),
        ]
        return torch.stack(rows, dim=1)


class PerspectiveCamera(Camera):
    """Pinhole camera; see the module docstring for the projection."""

    def __init__(
        self,
        R: torch.Tensor,
        t: torch.Tensor,
        fx: torch.Tensor | float,
        fy: torch.Tensor | float,
        cx: torch.Tensor | float,
        cy: torch.Tensor | float,
        image_size: tuple[int, int],
        znear: float = 1.0,
        zfar: float = 1e5,
    ) -> None:
        super().__init__(R, t, fx, fy, cx, cy, image_size, znear, zfar, perspective=True)  # type: ignore[arg-type]

    @classmethod
    def from_fov(
        cls,
        R: torch.Tensor,
        t: torch.Tensor,
        image_size: tuple[int, int],
        fov_degrees: float | torch.Tensor = 30.0,
        znear: float = 1.0,
        zfar: float = 1e5,
    ) -> PerspectiveCamera:
        """Camera with a vertical field of view in degrees (scalar or (B,)), square pixels, centred
        principal point; differentiable w.r.t. ``fov_degrees`` when it is a tensor."""
        height, width = image_size
        fov = torch.as_tensor(fov_degrees, dtype=R.dtype, device=R.device)
        focal = 0.5 * height / torch.tan(0.5 * fov * math.pi / 180.0)
        return cls(R, t, focal, focal, width / 2.0, height / 2.0, image_size, znear, zfar)

    def view_to_pixels(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        depth = -view[..., 2]
        # Points at or behind the camera centre are clamped to avoid inf; the rasteriser discards
        # triangles with a vertex in front of znear anyway.
        inv = 1.0 / depth.clamp(min=1e-6)
        px = self.cx[:, None] + self.fx[:, None] * view[..., 0] * inv
        py = self.cy[:, None] - self.fy[:, None] * view[..., 1] * inv
        return torch.stack([px, py], dim=-1), depth


class OrthographicCamera(Camera):
    """Orthographic camera; fx, fy are the scale in pixels per world unit (see the module docstring)."""

    def __init__(
        self,
        R: torch.Tensor,
        t: torch.Tensor,
        fx: torch.Tensor | float,
        fy: torch.Tensor | float,
        cx: torch.Tensor | float,
        cy: torch.Tensor | float,
        image_size: tuple[int, int],
        znear: float = 1.0,
        zfar: float = 1e5,
    ) -> None:
        super().__init__(R, t, fx, fy, cx, cy, image_size, znear, zfar, perspective=False)  # type: ignore[arg-type]

    def view_to_pixels(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        px = self.cx[:, None] + self.fx[:, None] * view[..., 0]
        py = self.cy[:, None] - self.fy[:, None] * view[..., 1]
        return torch.stack([px, py], dim=-1), -view[..., 2]
