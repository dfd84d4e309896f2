"""Synthetic photo conditions and rendering: pose ranges, framing, landmarks, lighting frames, determinism."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from fitdiff.face import make_procedural_shape_model
from fitdiff.synthetic.photo import PhotoRenderer
from fitdiff.synthetic.scene import (
    SceneRanges,
    background_image,
    head_rotation,
    sample_scene,
    scene_cameras,
)
from fitdiff.synthetic.subjects import Stream, make_subject, rng_for
from fitdiff.synthetic.uv_layout import uv_layout


@pytest.fixture(scope="module")
def setup():
    model = make_procedural_shape_model(2000, 20, seed=0)
    layout = uv_layout(model, 32)
    centre = model.mean[model.landmarks_5].double().mean(0).numpy() + np.array([0.0, 8.0, 0.0])
    return model, layout, PhotoRenderer(model, 64, centre), centre


def test_head_rotation_is_a_rotation_with_the_documented_senses():
    rot = head_rotation(20.0, -10.0, 5.0)
    assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-12) and np.linalg.det(rot) == pytest.approx(1.0)
    forward = np.array([0.0, 0.0, 1.0])
    assert (head_rotation(30, 0, 0) @ forward)[0] > 0.4  # yaw turns the face toward +x
    assert (head_rotation(0, 15, 0) @ forward)[1] < -0.2  # pitch tilts it down
    assert (head_rotation(0, 0, 10) @ np.array([1.0, 0.0, 0.0]))[1] > 0.1  # roll counter-clockwise


def test_scenes_stay_in_range_and_are_deterministic():
    ranges = SceneRanges()
    scenes = [sample_scene(rng_for(0, Stream.PHOTO, 0, j)) for j in range(200)]
    yaws = np.array([s.yaw for s in scenes])
    assert np.abs(yaws).max() <= 30 and np.abs([s.pitch for s in scenes]).max() <= 15
    assert np.abs([s.roll for s in scenes]).max() <= ranges.max_roll
    assert yaws.std() > 10  # the range is actually used
    assert all(abs(np.linalg.norm(s.light_direction) - 1) < 1e-9 for s in scenes)
    assert all(ranges.fov[0] <= s.fov <= ranges.fov[1] for s in scenes)
    assert sample_scene(rng_for(0, Stream.PHOTO, 0, 7)) == scenes[7]
    assert sample_scene(rng_for(1, Stream.PHOTO, 0, 7)) != scenes[7]


def test_directional_light_is_drawn_in_front_of_the_face():
    """Light directions are sampled in the camera frame: rotated back, they face the camera (+z)."""
    for j in range(50):
        scene = sample_scene(rng_for(2, Stream.PHOTO, 1, j))
        in_camera = scene.rotation() @ np.asarray(scene.light_direction)
        assert in_camera[2] > math.cos(math.radians(80.0)) - 1e-9


def test_camera_puts_the_face_centre_at_the_requested_offset(setup):
    _, _, _, centre = setup
    scenes = [sample_scene(rng_for(0, Stream.PHOTO, 3, j)) for j in range(5)]
    camera = scene_cameras(scenes, centre, 64)
    pixels, depth = camera.project(torch.tensor(centre, dtype=torch.float32).expand(5, 1, 3).contiguous())
    for i, s in enumerate(scenes):
        assert pixels[i, 0, 0].item() == pytest.approx(32 + s.offset[0] * 64, abs=1e-2)
        assert pixels[i, 0, 1].item() == pytest.approx(32 + s.offset[1] * 64, abs=1e-2)
        assert depth[i, 0].item() > 100


def test_photos_have_landmarks_inside_and_consistent_with_the_stored_camera(setup):
    model, layout, renderer, _ = setup
    subject = make_subject(0, 0, layout, model.n_components)
    scenes = [sample_scene(rng_for(0, Stream.PHOTO, 0, j)) for j in range(4)]
    photos = renderer.render(subject.shape, subject.maps, scenes)
    vertices = model(torch.from_numpy(subject.shape)[None])[0].double().numpy()
    for photo in photos:
        assert photo.image.shape == (64, 64, 3) and photo.image.dtype == np.uint8
        assert 0.15 < photo.coverage < 0.8
        lm = photo.landmarks
        assert lm.shape == (68, 2) and lm.dtype == np.float32
        assert lm.min() > 0 and lm.max() < 64
        # re-project the landmark vertices with the camera recorded in meta.json
        cam = photo.camera
        view = vertices[model.landmarks_68.numpy()] @ np.asarray(cam["R"]).T + np.asarray(cam["t"])
        d = -view[:, 2]
        px = cam["cx"] + cam["fx"] * view[:, 0] / d
        py = cam["cy"] - cam["fy"] * view[:, 1] / d
        assert np.allclose(np.stack([px, py], 1), lm, atol=1e-2)
        # image-left eye first (ArcFace order)
        assert lm[36:42, 0].mean() < lm[42:48, 0].mean()
    repeat = renderer.render(subject.shape, subject.maps, scenes)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(photos, repeat))
    assert not np.array_equal(photos[0].image, photos[1].image)


def test_render_shows_the_albedo_change(setup):
    """A brighter diffuse map gives a brighter face (the maps reach the pixels)."""
    model, layout, renderer, _ = setup
    subject = make_subject(0, 1, layout, model.n_components)
    scene = sample_scene(rng_for(0, Stream.PHOTO, 1, 0))
    dark = renderer.render(subject.shape, subject.maps, [scene])[0]
    bright_maps = dataclasses.replace(subject.maps, diffuse=np.clip(subject.maps.diffuse * 2.0, 0, 1))
    bright = renderer.render(subject.shape, bright_maps, [scene])[0]
    lm = np.round(dark.landmarks[[29, 30, 33]]).astype(int)
    assert (
        bright.image[lm[:, 1], lm[:, 0]].astype(int).sum() > dark.image[lm[:, 1], lm[:, 0]].astype(int).sum()
    )


def test_background_is_deterministic_and_in_range():
    a, b, c = background_image(5, 32), background_image(5, 32), background_image(6, 32)
    assert a.shape == (32, 32, 3) and a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
