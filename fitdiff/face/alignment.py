"""Differentiable 5-point face alignment to the ArcFace 112x112 template.

Coordinates follow the project convention: pixel ``(0, 0)`` is the top-left pixel, its centre lies at
``(0.5, 0.5)``, x grows to the right and y downwards. Landmarks are ordered as ArcFace expects them:
image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.

The warp is a bilinear ``F.grid_sample`` driven by a closed-form least-squares similarity transform, so
gradients reach both the image pixels and the landmarks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "ARCFACE_TEMPLATE_INSIGHTFACE",
    "ARCFACE_TEMPLATE",
    "ARCFACE_SIZE",
    "arcface_template",
    "similarity_transform",
    "invert_affine",
    "transform_points",
    "transform_scale",
    "alignment_transform",
    "warp_affine",
    "align_faces",
]

ARCFACE_SIZE = 112

# The standard insightface ``arcface_src`` template for 112x112 crops. insightface warps with
# cv2.warpAffine, whose pixel centres sit at integer coordinates.
ARCFACE_TEMPLATE_INSIGHTFACE: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

# The same points in the project convention (pixel centres at integer + 0.5): shifting both the
# landmarks and the template by half a pixel reproduces insightface's crops exactly.
ARCFACE_TEMPLATE: tuple[tuple[float, float], ...] = tuple(
    (x + 0.5, y + 0.5) for x, y in ARCFACE_TEMPLATE_INSIGHTFACE
)


def arcface_template(
    size: int = ARCFACE_SIZE,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """ArcFace 5-point template for a ``size`` x ``size`` crop, (5, 2) in crop pixels (project convention).

    For ``size != 112`` the 112-pixel template is scaled uniformly by ``size / 112`` (continuous
    coordinates scale exactly), so the crop covers the same part of the face at another resolution.
    """
    template = torch.tensor(ARCFACE_TEMPLATE, device=device, dtype=dtype)
    return template * (size / ARCFACE_SIZE)


def similarity_transform(src: torch.Tensor, dst: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Least-squares similarity transform (rotation, uniform scale, translation; no reflection).

    Solves ``min_{s,R,t} sum_i |dst_i - (s R src_i + t)|^2`` in closed form; in 2-D this equals
    Umeyama's solution: with centred points ``P, Q``, ``a = sum(P.Q) / sum|P|^2`` and
    ``b = sum(P x Q) / sum|P|^2`` give ``s R = [[a, -b], [b, a]]``. Differentiable everywhere except for
    coincident source points (guarded by ``eps``).

    Args:
        src: (B, N, 2) source points, N >= 2.
        dst: (N, 2) or (B, N, 2) destination points (same units as ``src``).
        eps: lower bound of the source spread ``sum|P|^2``.

    Returns:
        (B, 2, 3) matrices ``M`` with ``dst ~= M[:, :, :2] @ src + M[:, :, 2]``.
    """
    if src.ndim != 3 or src.shape[-1] != 2 or src.shape[1] < 2:
        raise ValueError(f"similarity_transform: src must be (B, N>=2, 2), got {tuple(src.shape)}")
    if dst.ndim == 2:
        dst = dst.unsqueeze(0).expand(src.shape[0], -1, -1)
    if dst.shape != src.shape:
        raise ValueError(
            f"similarity_transform: dst must be (N, 2) or (B, N, 2) matching src {tuple(src.shape)}, "
            f"got {tuple(dst.shape)}"
        )
    dst = dst.to(device=src.device, dtype=src.dtype)
    src_mean = src.mean(dim=1, keepdim=True)
    dst_mean = dst.mean(dim=1, keepdim=True)
    p = src - src_mean
    q = dst - dst_mean
    spread = (p * p).sum(dim=(1, 2)).clamp_min(eps)
    a = (p * q).sum(dim=(1, 2)) / spread
    b = (p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]).sum(dim=1) / spread
    linear = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=-2)  # (B, 2, 2)
    translation = dst_mean.squeeze(1) - (linear @ src_mean.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([linear, translation.unsqueeze(-1)], dim=-1)


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of batched 2-D affine maps, (B, 2, 3) -> (B, 2, 3); closed form, differentiable."""
    if matrix.ndim != 3 or matrix.shape[1:] != (2, 3):
        raise ValueError(f"invert_affine: expected (B, 2, 3), got {tuple(matrix.shape)}")
    a, b, tx = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
    c, d, ty = matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    itx = -(ia * tx + ib * ty)
    ity = -(ic * tx + id_ * ty)
    row0 = torch.stack([ia, ib, itx], dim=-1)
    row1 = torch.stack([ic, id_, ity], dim=-1)
    return torch.stack([row0, row1], dim=1)


def transform_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply (B, 2, 3) affine maps to (B, N, 2) points; returns (B, N, 2)."""
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] != matrix.shape[0]:
        raise ValueError(
            f"transform_points: points must be (B, N, 2) with B={matrix.shape[0]}, got {tuple(points.shape)}"
        )
    return points @ matrix[:, :, :2].transpose(1, 2) + matrix[:, :, 2].unsqueeze(1)


def transform_scale(matrix: torch.Tensor) -> torch.Tensor:
    """Isotropic scale factor of (B, 2, 3) maps, sqrt(|det|), shape (B,)."""
    det = matrix[:, 0, 0] * matrix[:, 1, 1] - matrix[:, 0, 1] * matrix[:, 1, 0]
    return det.abs().sqrt()


def alignment_transform(
    landmarks: torch.Tensor,
    size: int = ARCFACE_SIZE,
    template: torch.Tensor | None = None,
) -> torch.Tensor:
    """Similarity map from image pixels to aligned-crop pixels, (B, 2, 3).

    Args:
        landmarks: (B, 5, 2) landmarks in image pixels, ArcFace order.
        size: side of the square crop in pixels.
        template: (5, 2) or (B, 5, 2) target points in crop pixels; default ``arcface_template(size)``.
    """
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"alignment_transform: landmarks must be (B, N, 2), got {tuple(landmarks.shape)}")
    if template is None:
        template = arcface_template(size, device=landmarks.device, dtype=landmarks.dtype)
    if template.shape[-2] != landmarks.shape[1]:
        raise ValueError(
            f"alignment_transform: template has {template.shape[-2]} points, landmarks {landmarks.shape[1]}"
        )
    return similarity_transform(landmarks, template)


def _pixel_to_normalised(width: int, height: int, like: torch.Tensor) -> torch.Tensor:
    """3x3 map from pixel coordinates to grid_sample coordinates (align_corners=False)."""
    return like.new_tensor([[2.0 / width, 0.0, -1.0], [0.0, 2.0 / height, -1.0], [0.0, 0.0, 1.0]])


def _homogeneous(matrix: torch.Tensor) -> torch.Tensor:
    bottom = matrix.new_tensor([0.0, 0.0, 1.0]).expand(matrix.shape[0], 1, 3)
    return torch.cat([matrix, bottom], dim=1)


def warp_affine(
    images: torch.Tensor,
    matrix: torch.Tensor,
    size: int | tuple[int, int],
    *,
    padding_mode: str = "zeros",
    antialias: bool = True,
) -> torch.Tensor:
    """Warp images by affine maps from image pixels to output pixels (like cv2.warpAffine), differentiably.

    Output pixel centre ``u`` samples the input at ``M^-1 u`` with bilinear interpolation; both sides use
    the project pixel convention, which is exactly grid_sample's ``align_corners=False`` convention.

    Args:
        images: (B, C, H, W) float images.
        matrix: (B, 2, 3) maps from input pixels to output pixels.
        size: output side ``S`` or ``(height, width)``.
        padding_mode: grid_sample padding for samples outside the image ("zeros", "border", "reflection").
        antialias: when the map shrinks the image by more than 2x, first downsample the batch with an
            antialiased resize (by the factor of its least-shrunk sample) so bilinear sampling does not alias.

    Returns:
        (B, C, S_h, S_w) warped images.
    """
    if images.ndim != 4:
        raise ValueError(f"warp_affine: images must be (B, C, H, W), got {tuple(images.shape)}")
    if matrix.shape != (images.shape[0], 2, 3):
        raise ValueError(
            f"warp_affine: matrix must be ({images.shape[0]}, 2, 3) for images {tuple(images.shape)}, "
            f"got {tuple(matrix.shape)}"
        )
    out_h, out_w = (size, size) if isinstance(size, int) else size
    matrix = matrix.to(device=images.device, dtype=images.dtype)
    in_h, in_w = images.shape[-2:]

    if antialias:
        # Scale is constant for the sampling decision only; gradients still flow through ``matrix``.
        max_scale = float(transform_scale(matrix.detach()).max())
        factor = min(1.0, 2.0 * max_scale)
        new_h, new_w = max(1, math.floor(in_h * factor)), max(1, math.floor(in_w * factor))
        if factor < 1.0 and (new_h < in_h or new_w < in_w):
            images = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False,
                                   antialias=True)
            # Resizing maps continuous pixel coordinates by per-axis factors; fold them into the matrix.
            shrink = matrix.new_tensor([[new_w / in_w, 0.0, 0.0], [0.0, new_h / in_h, 0.0], [0.0, 0.0, 1.0]])
            matrix = matrix @ torch.linalg.inv(shrink)
            in_h, in_w = new_h, new_w

    inverse = _homogeneous(invert_affine(matrix))  # output pixels -> input pixels
    to_norm_in = _pixel_to_normalised(in_w, in_h, matrix)
    from_norm_out = torch.linalg.inv(_pixel_to_normalised(out_w, out_h, matrix))
    theta = (to_norm_in @ inverse @ from_norm_out)[:, :2, :]
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def align_faces(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    size: int = ARCFACE_SIZE,
    template: torch.Tensor | None = None,
    *,
    padding_mode: str = "zeros",
    antialias: bool = True,
) -> torch.Tensor:
    """Crop faces aligned to the ArcFace template, differentiable w.r.t. images and landmarks.

    Args:
        images: (B, 3, H, W) RGB in [0, 1].
        landmarks: (B, 5, 2) image pixels, ArcFace order.
        size: crop side in pixels (112 for ArcFace).
        template: (5, 2) or (B, 5, 2) target points in crop pixels; default ``arcface_template(size)``.

    Returns:
        (B, 3, size, size) aligned crops. The image-to-crop map is ``alignment_transform(landmarks, size,
        template)``; map other points with :func:`transform_points`.
    """
    if landmarks.shape[0] != images.shape[0]:
        raise ValueError(
            f"align_faces: {images.shape[0]} images but landmarks of shape {tuple(landmarks.shape)}"
        )
    matrix = alignment_transform(landmarks.to(device=images.device, dtype=images.dtype), size, template)
    return warp_affine(images, matrix, size, padding_mode=padding_mode, antialias=antialias)
