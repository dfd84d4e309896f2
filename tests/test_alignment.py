"""Tests of the differentiable 5-point alignment (fitdiff.face.alignment)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fitdiff.face.alignment import (
    ARCFACE_TEMPLATE_INSIGHTFACE,
    align_faces,
    alignment_transform,
    arcface_template,
    invert_affine,
    similarity_transform,
    transform_points,
    transform_scale,
    warp_affine,
)


def _similarity(scale: float, angle_deg: float, tx: float, ty: float, dtype=torch.float64) -> torch.Tensor:
    """(2, 3) similarity matrix."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return torch.tensor([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]], dtype=dtype)


def _umeyama_reference(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama (1991) with SVD and reflection guard, (2, 3); independent of the closed form under test."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    p, q = src - mu_s, dst - mu_d
    cov = q.T @ p / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / ((p**2).sum() / len(src))
    t = mu_d - scale * rot @ mu_s
    return np.concatenate([scale * rot, t[:, None]], axis=1)


def test_template_values_and_scaling():
    t112 = arcface_template()
    assert t112.shape == (5, 2)
    assert torch.allclose(t112, torch.tensor(ARCFACE_TEMPLATE_INSIGHTFACE) + 0.5)
    # eyes above the nose above the mouth, image-left points to the left
    assert t112[0, 0] < t112[1, 0] and t112[3, 0] < t112[4, 0]
    assert t112[0, 1] < t112[2, 1] < t112[3, 1]
    assert torch.allclose(arcface_template(224), t112 * 2)


def test_identity_transform_for_template_input():
    template = arcface_template(dtype=torch.float64)
    matrix = similarity_transform(template[None], template)
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(matrix[0], expected, atol=1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-8), (torch.float32, 1e-4)])
def test_known_similarity_is_recovered_and_inverted(dtype, tol):
    template = arcface_template(dtype=torch.float64)
    truths = [_similarity(2.3, 17.0, 140.0, 95.0), _similarity(0.6, -40.0, 20.0, 300.0)]
    # image landmarks = known map applied to the template; alignment must send them back onto it
    images_lmk = torch.stack([transform_points(t[None], template[None])[0] for t in truths]).to(dtype)
    matrix = similarity_transform(images_lmk, template.to(dtype))
    mapped = transform_points(matrix, images_lmk)
    assert (mapped - template.to(dtype)).abs().max() < tol
    for b, truth in enumerate(truths):
        assert torch.allclose(matrix[b].double(), invert_affine(truth[None])[0], atol=tol * 10)
    assert torch.allclose(transform_scale(matrix).double(), torch.tensor([1 / 2.3, 1 / 0.6]).double(), atol=1e-5)


def test_least_squares_matches_svd_umeyama_and_never_reflects():
    gen = torch.Generator().manual_seed(0)
    src = torch.rand(4, 5, 2, generator=gen, dtype=torch.float64) * 200
    dst = torch.rand(4, 5, 2, generator=gen, dtype=torch.float64) * 112
    dst[3] = dst[3] * torch.tensor([-1.0, 1.0], dtype=torch.float64)  # a mirrored target
    matrix = similarity_transform(src, dst)
    for b in range(4):
        ref = _umeyama_reference(src[b].numpy(), dst[b].numpy())
        np.testing.assert_allclose(matrix[b].numpy(), ref, atol=1e-9)
    det = matrix[:, 0, 0] * matrix[:, 1, 1] - matrix[:, 0, 1] * matrix[:, 1, 0]
    assert (det > 0).all()
    # optimality: nudging any parameter increases the residual
    residual = ((transform_points(matrix, src) - dst) ** 2).sum()
    for idx in [(0, 0, 0), (1, 1, 2), (2, 0, 2)]:
        nudged = matrix.clone()
        nudged[idx] += 1e-3
        assert ((transform_points(nudged, src) - dst) ** 2).sum() > residual


def test_similarity_transform_gradcheck():
    gen = torch.Generator().manual_seed(1)
    src = (torch.rand(2, 5, 2, generator=gen, dtype=torch.float64) * 50).requires_grad_()
    dst = (torch.rand(2, 5, 2, generator=gen, dtype=torch.float64) * 50).requires_grad_()
    assert torch.autograd.gradcheck(similarity_transform, (src, dst))
    assert torch.autograd.gradcheck(lambda m: invert_affine(m), (similarity_transform(src, dst),))


def _dots_image(points: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """(1, 3, H, W) image with Gaussian dots at the given continuous pixel positions (N, 2)."""
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    img = torch.zeros(height, width, dtype=torch.float64)
    for x, y in points.tolist():
        img += torch.exp(-((xs[None] - x) ** 2 + (ys[:, None] - y) ** 2) / (2 * sigma**2))
    return img.clamp(max=1).float().expand(3, -1, -1)[None].clone()


def _centroids(crop: torch.Tensor, around: torch.Tensor, radius: int = 7) -> torch.Tensor:
    """Intensity centroids (N, 2), in continuous pixels, of the blobs near each (N, 2) point."""
    img = crop[0, 0].double()
    ys = torch.arange(img.shape[0], dtype=torch.float64) + 0.5
    xs = torch.arange(img.shape[1], dtype=torch.float64) + 0.5
    out = []
    for x, y in around.tolist():
        mask = ((xs[None] - x).abs() <= radius) & ((ys[:, None] - y).abs() <= radius)
        w = img * mask
        out.append([(w * xs[None]).sum() / w.sum(), (w * ys[:, None]).sum() / w.sum()])
    return torch.tensor(out)


@pytest.mark.parametrize("scale,angle,antialias", [(1.7, 23.0, True), (4.0, -12.0, True), (4.0, -12.0, False)])
def test_warp_puts_dots_on_template(scale, angle, antialias):
    template = arcface_template(dtype=torch.float64)
    truth = _similarity(scale, angle, 60.0, 40.0)
    landmarks = transform_points(truth[None], template[None])  # (1, 5, 2) in image pixels
    height, width = int(140 * scale) + 80, int(120 * scale) + 100
    assert landmarks[..., 0].max() < width and landmarks[..., 1].max() < height
    image = _dots_image(landmarks[0], height, width, sigma=1.2 * scale)
    crop = align_faces(image, landmarks.float(), antialias=antialias)
    assert crop.shape == (1, 3, 112, 112)
    found = _centroids(crop, template)
    assert (found - template).abs().max() < 1.0, (found, template)
    # the dots are actually there (not an empty crop)
    assert crop[0, 0, template[:, 1].long(), template[:, 0].long()].min() > 0.5


def test_matches_cv2_warp_affine_with_half_pixel_shift():
    cv2 = pytest.importorskip("cv2")
    gen = torch.Generator().manual_seed(3)
    # smooth random image (float32: OpenCV interpolates without fixed-point rounding)
    coarse = torch.rand(1, 3, 12, 10, generator=gen)
    image = torch.nn.functional.interpolate(coarse, size=(240, 200), mode="bicubic", align_corners=False)
    image = image.clamp(0, 1)
    template_idx = torch.tensor(ARCFACE_TEMPLATE_INSIGHTFACE, dtype=torch.float64)
    # landmarks in cv2/insightface convention (pixel centres at integers)
    lmk_idx = transform_points(_similarity(1.6, 9.0, 30.0, 20.0)[None], template_idx[None])
    m_idx = similarity_transform(lmk_idx, template_idx)[0].numpy()
    hwc = image[0].permute(1, 2, 0).numpy().astype(np.float32)
    ref = cv2.warpAffine(hwc, m_idx, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    ours = align_faces(image, (lmk_idx + 0.5).float(), antialias=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours[4:-4, 4:-4], ref[4:-4, 4:-4], atol=1e-3)
    # a half-pixel error in the convention would show clearly
    shifted = align_faces(image, lmk_idx.float(), antialias=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(shifted - ref)[4:-4, 4:-4].mean() > 3 * np.abs(ours - ref)[4:-4, 4:-4].mean()


def test_alignment_transform_maps_landmarks_and_rejects_bad_shapes():
    gen = torch.Generator().manual_seed(4)
    landmarks = torch.rand(3, 5, 2, generator=gen) * 100 + 50
    matrix = alignment_transform(landmarks, size=224)
    mapped = transform_points(matrix, landmarks)
    back = transform_points(invert_affine(matrix), mapped)
    assert torch.allclose(back, landmarks, atol=1e-3)
    # mapped landmarks are the least-squares fit to the template: their mean equals the template mean
    assert torch.allclose(mapped.mean(1), arcface_template(224).mean(0).expand(3, 2), atol=1e-3)
    with pytest.raises(ValueError, match="src must be"):
        similarity_transform(torch.zeros(5, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="dst must be"):
        similarity_transform(torch.zeros(2, 5, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="matrix must be"):
        warp_affine(torch.zeros(2, 3, 8, 8), torch.zeros(3, 2, 3), 4)
    with pytest.raises(ValueError, match="landmarks"):
        align_faces(torch.zeros(2, 3, 8, 8), torch.zeros(1, 5, 2))


def test_gradients_reach_pixels_and_landmarks():
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(2, 3, 200, 180, generator=gen, requires_grad=True)
    template = arcface_template()
    landmarks = torch.stack([template * 1.5 + 20, template * 1.2 + 30]).requires_grad_()
    crop = align_faces(image, landmarks)
    (crop * torch.rand_like(crop)).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert landmarks.grad is not None and torch.isfinite(landmarks.grad).all() and landmarks.grad.abs().sum() > 0
    # float64 gradcheck of the whole warp on a tiny problem
    small = torch.rand(1, 1, 9, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    lmk = (arcface_template(8, dtype=torch.float64) * 1.1 + 0.3)[None].requires_grad_()
    assert torch.autograd.gradcheck(
        lambda img, pts: align_faces(img.expand(1, 3, -1, -1), pts, size=8, antialias=False), (small, lmk)
    )
