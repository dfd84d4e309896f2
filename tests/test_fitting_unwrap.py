"""Unwrapping a photo into a partial UV map: visible texels get the photo's (or the de-lit albedo's) values."""

from __future__ import annotations

import pytest
import torch

from fitdiff.face import make_procedural_shape_model
from fitdiff.face.preview import preview_scene
from fitdiff.face.scene import FaceScene, SceneLights
from fitdiff.fitting.unwrap import unwrap_photo
from fitdiff.render import DirectionalLights
from fitdiff.render.lighting import ambient_sh

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RES = 32


@pytest.fixture(scope="module")
def scene():
    return FaceScene(make_procedural_shape_model(n_vertices=2000, n_components=6, seed=0), normal_space="tangent")


def _maps():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, RES), torch.linspace(0, 1, RES), indexing="ij")
    diffuse = torch.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * yy, 0.4 + 0.1 * xx * yy])[None]  # smooth, known
    normals = torch.cat([torch.zeros(1, 2, RES, RES), torch.ones(1, 1, RES, RES)], 1)
    return diffuse, torch.zeros(1, 1, RES, RES), normals


def _render(scene, yaw: float):
    camera, _ = preview_scene(1, 128, yaw)
    lights = SceneLights(sh=ambient_sh(0.7, 1), directional=DirectionalLights(torch.tensor([[[0.3, 0.4, 1.0]]]),
                         intensity=torch.tensor([[0.6]])), exposure=torch.ones(1))
    shape = torch.zeros(1, 6)
    diffuse, specular, normals = _maps()
    photo = scene(shape, diffuse, specular, normals, camera, lights, background=0.0).image
    return shape, camera, lights, photo, diffuse


def test_frontal_unwrap_recovers_the_albedo_where_seen(scene):
    shape, camera, lights, photo, diffuse = _render(scene, 0.0)
    out = unwrap_photo(scene, shape, camera, photo, RES, lights=lights)
    share = out.valid.float().sum() / out.covered.float().sum()
    assert 0.3 < float(share) <= 1.0 and not bool((out.valid[0] & ~out.covered).any())
    error = (out.texture - diffuse).abs().mean(1)[out.valid]
    assert float(error.mean()) < 0.03, float(error.mean())
    raw = unwrap_photo(scene, shape, camera, photo, RES)  # no lights: the photo's own display values
    assert float((raw.texture - out.texture).abs().mean(1)[out.valid].mean()) > 0.01
    assert torch.all(raw.texture[:, :, ~raw.valid[0]] == 0)


def test_a_turned_head_hides_its_far_side(scene):
    shape, camera, lights, photo, _ = _render(scene, 0.0)
    front = unwrap_photo(scene, shape, camera, photo, RES, lights=lights).valid[0]
    shape, camera, lights, photo, diffuse = _render(scene, 60.0)  # the camera moves to the subject's left
    side = unwrap_photo(scene, shape, camera, photo, RES, lights=lights)
    assert side.valid.sum() < front.sum()
    from fitdiff.synthetic.uv_layout import uv_layout

    x = torch.from_numpy(uv_layout(scene.model, RES).x)
    seen = side.valid[0]
    assert float(x[seen].mean()) > 5.0  # the visible texels lie on the subject's left (x > 0, mm)
    error = (side.texture - diffuse).abs().mean(1)[side.valid]
    assert float(error.mean()) < 0.04
