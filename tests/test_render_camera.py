"""Cameras: look-at frames, projection against hand-computed pixels, differentiability."""

import math

import pytest
import torch

from fitdiff.render.cameras import OrthographicCamera, PerspectiveCamera, intrinsics_for_image, look_at


def test_look_at_frame_is_orthonormal_and_maps_eye_and_target():
    eye = torch.tensor([[100.0, 50.0, 400.0], [0.0, 0.0, 300.0]])
    at = torch.tensor([10.0, -5.0, 0.0])
    rot, trans = look_at(eye, at)
    eye_h = torch.eye(3).expand(2, 3, 3)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye_h, atol=1e-6)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(2), atol=1e-6)
    cam_eye = (rot @ eye.unsqueeze(-1)).squeeze(-1) + trans
    assert torch.allclose(cam_eye, torch.zeros(2, 3), atol=1e-4)
    cam_at = (rot @ at.view(1, 3, 1)).squeeze(-1) + trans
    dist = (eye - at).norm(dim=-1)
    assert torch.allclose(cam_at, torch.stack([0 * dist, 0 * dist, -dist], -1), atol=1e-3)
    # +y stays up: the world up vector has a positive camera-y component.
    assert (rot[:, 1, 1] > 0).all()


def test_look_at_rejects_parallel_up():
    with pytest.raises(ValueError, match="parallel"):
        look_at(torch.tensor([0.0, 10.0, 0.0]))


def test_perspective_projection_matches_pinhole_formula():
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 500.0]]))
    cam = PerspectiveCamera(rot, trans, fx=1000.0, fy=900.0, cx=128.0, cy=100.0, image_size=(200, 256))
    pts = torch.tensor([[[0.0, 0.0, 0.0], [10.0, 20.0, 0.0], [-5.0, 0.0, 100.0]]])
    xy, depth = cam.project(pts)
    expected = torch.tensor([[[128.0, 100.0], [128.0 + 1000 * 10 / 500, 100.0 - 900 * 20 / 500],
                              [128.0 - 1000 * 5 / 400, 100.0]]])
    assert torch.allclose(xy, expected, atol=1e-4)
    assert torch.allclose(depth, torch.tensor([[500.0, 500.0, 400.0]]))
    # +x of the world (the subject's left) is image right in a frontal view.
    assert xy[0, 1, 0] > xy[0, 0, 0]


def test_fov_and_intrinsics_helper_agree():
    fx, fy, cx, cy = intrinsics_for_image((256, 320), 60.0)
    assert math.isclose(float(fy), 128.0 / math.tan(math.radians(30.0)), rel_tol=1e-6)
    assert (float(cx), float(cy)) == (160.0, 128.0)
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 10.0]]))
    cam = PerspectiveCamera.from_fov(rot, trans, (256, 320), 60.0)
    assert torch.allclose(cam.fy, fy.expand(1)) and torch.allclose(cam.cx, cx.expand(1))
    # A point on the top edge of the vertical field of view lands on the top image border.
    top = torch.tensor([[[0.0, 10.0 * math.tan(math.radians(30.0)), 0.0]]])
    assert abs(float(cam.project(top)[0][0, 0, 1])) < 1e-3


def test_orthographic_projection_ignores_depth():
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 100.0]]))
    cam = OrthographicCamera(rot, trans, fx=2.0, fy=2.0, cx=64.0, cy=64.0, image_size=(128, 128))
    xy, depth = cam.project(torch.tensor([[[10.0, 5.0, 0.0], [10.0, 5.0, 50.0]]]))
    assert torch.allclose(xy[0, 0], torch.tensor([84.0, 54.0])) and torch.allclose(xy[0, 0], xy[0, 1])
    assert torch.allclose(depth, torch.tensor([[100.0, 50.0]]))


def test_projection_is_differentiable_in_all_camera_parameters():
    pts = torch.randn(2, 5, 3, dtype=torch.float64) * 20

    def fn(eye, fov, cx, cy):
        rot, trans = look_at(eye, torch.zeros(3, dtype=torch.float64))
        cam = PerspectiveCamera.from_fov(rot, trans, (64, 64), fov)
        cam.cx = cam.cx + cx
        cam.cy = cam.cy + cy
        return cam.project(pts)

    eye = torch.tensor([[10.0, 20.0, 300.0], [-30.0, 5.0, 250.0]], dtype=torch.float64, requires_grad=True)
    fov = torch.tensor([25.0, 30.0], dtype=torch.float64, requires_grad=True)
    cx = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    cy = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (eye, fov, cx, cy))


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="R must be"):
        PerspectiveCamera(torch.eye(3), torch.zeros(1, 3), 1.0, 1.0, 0.0, 0.0, (8, 8))
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 5.0]]))
    cam = PerspectiveCamera(rot, trans, 1.0, 1.0, 0.0, 0.0, (8, 8))
    with pytest.raises(ValueError, match="points must be"):
        cam.project(torch.zeros(2, 4, 3))
