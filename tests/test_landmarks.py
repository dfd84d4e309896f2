"""The iBUG-68 -> ArcFace 5-point rule: one definition, template order on a rendered frontal face."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitdiff.data.landmarks import IBUG68_TO_ARCFACE5, five_from_68, five_point_landmarks
from fitdiff.face.alignment import ARCFACE_TEMPLATE, similarity_transform, transform_points
from fitdiff.face.lsfm import _landmarks_5_from_68
from fitdiff.face.template import LANDMARKS_5_XY, LANDMARKS_68_XY, make_procedural_shape_model
from fitdiff.render import PerspectiveCamera, look_at


@pytest.fixture(scope="module")
def frontal_landmarks() -> np.ndarray:
    """(68, 2) pixel landmarks of the procedural face seen from the front (camera on +z)."""
    model = make_procedural_shape_model(n_vertices=3000)
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 600.0]]), torch.tensor([0.0, 0.0, 40.0]))
    camera = PerspectiveCamera.from_fov(rot, trans, (224, 224), fov_degrees=25.0)
    with torch.no_grad():
        pixels, _ = camera.project(model.mean[model.landmarks_68][None])
    return pixels[0].numpy()


def test_five_points_of_a_frontal_face_follow_the_arcface_template_order(frontal_landmarks):
    five = five_point_landmarks(frontal_landmarks)
    template = np.asarray(ARCFACE_TEMPLATE)
    # The first eye and mouth corner are on the image's left, as in the template.
    assert template[0, 0] < template[1, 0] and template[3, 0] < template[4, 0]
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]
    assert five[0, 1] < five[2, 1] < five[3, 1]  # eyes above the nose above the mouth (y down)
    # Aligning to the template needs no mirror image: the similarity fit is close, its swapped twin is not.
    residual = []
    for order in ([0, 1, 2, 3, 4], [1, 0, 2, 4, 3]):
        src = torch.from_numpy(five[order])[None].double()
        matrix = similarity_transform(src, torch.tensor(template))
        residual.append(float((transform_points(matrix, src)[0] - torch.tensor(template)).norm(dim=-1).mean()))
    assert residual[0] < 3.0 and residual[1] > 3 * residual[0]


def test_five_from_68_uses_the_group_means_for_any_dimension():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(2, 68, 3))
    five = five_from_68(points)
    assert five.shape == (2, 5, 3) and five.dtype == np.float64
    for k, group in enumerate(IBUG68_TO_ARCFACE5):
        assert np.allclose(five[:, k], points[:, list(group)].mean(1))
    assert five_from_68(np.zeros((68, 2), dtype=np.int64)).dtype == np.float64
    with pytest.raises(ValueError, match="68"):
        five_from_68(points[:, :60])


def test_template_and_lsfm_take_their_five_points_from_the_shared_rule():
    assert np.array_equal(LANDMARKS_5_XY, five_from_68(LANDMARKS_68_XY))
    assert LANDMARKS_5_XY[0, 0] < 0 < LANDMARKS_5_XY[1, 0]  # subject's right eye (-x) first
    vertices = np.random.default_rng(1).normal(size=(400, 3))
    lm68 = np.arange(100, 168)
    lm5 = _landmarks_5_from_68(vertices, lm68)
    assert list(lm5[2:]) == [lm68[30], lm68[48], lm68[54]]
    for k in (0, 1):
        centre = vertices[lm68[list(IBUG68_TO_ARCFACE5[k])]].mean(0)
        assert lm5[k] == np.argmin(((vertices - centre) ** 2).sum(1))
