"""Camera from landmarks, SH lighting by least squares and relighting (fitdiff/fitting)."""

from __future__ import annotations

import math

import pytest
import torch

from fitdiff.face import make_procedural_shape_model
from fitdiff.face.scene import FaceScene, SceneLights
from fitdiff.fitting.camera_init import axis_angle_to_matrix, camera_from_landmarks, rotation_angle_deg
from fitdiff.fitting.lighting_init import sh_from_photo
from fitdiff.fitting.relight import novel_lights, render_face
from fitdiff.fitting.scene_params import SceneParameters
from fitdiff.ldm.pipeline import DecodedFace
from fitdiff.render import DirectionalLights, PerspectiveCamera, look_at
from fitdiff.render.lighting import ambient_sh

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (96, 96)


@pytest.fixture(scope="module")
def model():
    return make_procedural_shape_model(n_vertices=800, n_components=6, seed=0)


def _camera(yaw_deg: float, pitch_deg: float, distance: float, fov: float) -> PerspectiveCamera:
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    eye = torch.tensor([[distance * math.sin(yaw) * math.cos(pitch), distance * math.sin(pitch),
                         distance * math.cos(yaw) * math.cos(pitch)]])
    rot, trans = look_at(eye, at=torch.tensor([0.0, 0.0, 40.0]))
    return PerspectiveCamera.from_fov(rot, trans, SIZE, fov_degrees=fov, znear=10.0)


def _maps(batch: int = 1, res: int = 32):
    diffuse = torch.full((batch, 3, res, res), 0.55)
    diffuse[:, 0] = 0.7
    specular = torch.full((batch, 1, res, res), 0.2)
    normals = torch.zeros(batch, 3, res, res)
    normals[:, 2] = 1.0
    return diffuse, specular, normals


@pytest.mark.parametrize("yaw,pitch,fov", [(0.0, 0.0, 20.0), (25.0, -10.0, 30.0), (-35.0, 12.0, 15.0)])
def test_camera_from_landmarks_recovers_a_known_pose_and_scale(model, yaw, pitch, fov):
    shape = torch.tensor([[0.8, -0.5, 0.3, 0.0, 1.0, -0.7]])
    truth = _camera(yaw, pitch, 600.0, fov)
    points = model(shape).index_select(1, model.landmarks_68)
    pixels = truth.project(points)[0]
    est = camera_from_landmarks(pixels, points[0], SIZE, fov_degrees=fov)
    assert float(rotation_angle_deg(est.R, truth.R)[0]) < 1.0
    scale, true_scale = est.fx / -est.t[:, 2], truth.fx / -truth.t[:, 2]  # pixels per mm at the face
    assert abs(float(scale / true_scale) - 1.0) < 0.01
    assert float((est.project(points)[0] - pixels).norm(dim=-1).max()) < 0.05
    # the closed form alone is already close (scaled orthographic vs perspective)
    rough = camera_from_landmarks(pixels, points[0], SIZE, fov_degrees=fov, refine_steps=0)
    assert float(rotation_angle_deg(rough.R, truth.R)[0]) < 6.0


def test_camera_from_landmarks_rejects_bad_input(model):
    with pytest.raises(ValueError, match="at least 4"):
        camera_from_landmarks(torch.zeros(1, 3, 2), torch.zeros(3, 3), SIZE)
    with pytest.raises(ValueError, match="points_3d"):
        camera_from_landmarks(torch.zeros(1, 68, 2), torch.zeros(5, 3), SIZE)


def test_axis_angle_is_a_rotation_and_zero_is_identity():
    omega = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.5], [1e-8, 0.0, 0.0]])
    rot = axis_angle_to_matrix(omega)
    assert torch.allclose(rot[0], torch.eye(3))
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(3), atol=1e-6)
    assert abs(float(rotation_angle_deg(rot[1:2], torch.eye(3)[None])[0]) - math.degrees(float(omega[1].norm()))) < 1e-3


def test_sh_from_photo_explains_a_photo_lit_by_sh(model):
    scene = FaceScene(model)
    camera = _camera(15.0, 5.0, 600.0, 25.0)
    diffuse, specular, normals = _maps()
    shape = torch.zeros(1, model.n_components)
    sh = ambient_sh(0.5, 1)
    sh[0, 1] = 0.25  # light from above
    sh[0, 3] = torch.tensor([0.3, 0.2, 0.1])  # coloured, from +x
    lights = SceneLights(sh=sh, directional=DirectionalLights(direction=torch.tensor([[0.0, 0.0, 1.0]]),
                                                              intensity=torch.zeros(1, 1)),
                         exposure=torch.ones(1))
    photo = scene(shape, diffuse, specular * 0, normals, camera, lights, background=0.3).image
    est = sh_from_photo(scene, shape, diffuse, normals, camera, photo)
    params = SceneParameters(camera, est)
    params.log_intensity.data.fill_(-30.0)  # the directional light off
    with torch.no_grad():
        again = scene(shape, diffuse, specular * 0, normals, params.camera(), params.lights(), background=0.3)
    face = again.alpha > 0.99
    error = (again.image - photo).abs()[face.expand_as(photo)]
    assert float(error.mean()) < 1e-3 and float(error.max()) < 0.01  # the ridge term's small bias
    # a wrong (uniform) guess explains the photo much worse
    flat = scene(shape, diffuse, specular * 0, normals, camera, SceneLights(
        sh=ambient_sh(0.5, 1), directional=lights.directional, exposure=torch.ones(1)), background=0.3).image
    assert float((flat - photo).abs()[face.expand_as(photo)].mean()) > 0.02


def test_relit_renders_differ_exactly_where_the_lights_change_the_shading(model):
    scene = FaceScene(model)
    camera = _camera(-10.0, 0.0, 600.0, 25.0)
    diffuse, specular, normals = _maps()
    shape = torch.zeros(1, model.n_components)
    params = SceneParameters(camera, ambient_sh(0.8, 1))
    face = DecodedFace(maps={"diffuse": diffuse, "specular": specular, "normals": normals}, shape=shape,
                       z_maps=torch.zeros(1))
    photo = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    fitted = render_face(scene, face, params, photo)
    relit = novel_lights(params)
    assert set(relit) == {"left", "right", "top"}
    renders = {name: render_face(scene, face, params, photo, lights).image for name, lights in relit.items()}
    outside = (fitted.alpha == 0).expand_as(photo)
    inside = (fitted.alpha > 0).expand_as(photo)
    for name, image in renders.items():
        changed = (image - fitted.image).abs() > 1e-4
        assert torch.equal(image[outside], fitted.image[outside]), name  # the photo around the face is untouched
        assert not bool(changed[outside].any()), name
        assert float(changed[inside].float().mean()) > 0.9, name  # the shading changes over the face
    # the left and right key lights light opposite halves of the face
    left_minus_right = (renders["left"] - renders["right"]).mean(1)[0]
    cols = fitted.alpha[0, 0].nonzero()[:, 1]
    mid = int(cols.float().median())
    mask = fitted.alpha[0, 0] > 0
    assert float(left_minus_right[:, :mid][mask[:, :mid]].mean()) > 0.0
    assert float(left_minus_right[:, mid:][mask[:, mid:]].mean()) < 0.0


def test_several_detected_faces_pick_the_largest_and_say_so(monkeypatch, caplog, tmp_path):
    import numpy as np

    from fitdiff import reconstruct
    from fitdiff.face import detection

    small = detection.Detection(box=torch.tensor([0.0, 0.0, 10.0, 10.0]), score=0.99,
                                landmarks=torch.full((5, 2), 5.0))
    large = detection.Detection(box=torch.tensor([20.0, 20.0, 60.0, 70.0]), score=0.9,
                                landmarks=torch.full((5, 2), 40.0))

    class TwoFaces:
        def detect(self, image):
            return [small, large]

    class NoFaces:
        def detect(self, image):
            return []

    image = np.zeros((80, 80, 3), dtype=np.uint8)
    monkeypatch.setattr(detection, "FaceDetector", TwoFaces)
    with caplog.at_level("WARNING"):
        points = reconstruct.photo_landmarks(image, tmp_path / "group.png", None, aligned=False)
    assert np.allclose(points, 40.0) and "2 faces found" in caplog.text and "group.png" in caplog.text
    monkeypatch.setattr(detection, "FaceDetector", NoFaces)
    with pytest.raises(reconstruct.ReconstructionError, match="no face found in .*empty.png"):
        reconstruct.photo_landmarks(image, tmp_path / "empty.png", None, aligned=False)
