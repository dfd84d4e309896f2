"""Procedural reflectance maps of synthetic subjects: ranges, unit normals, feature placement, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from fitdiff.face import make_procedural_shape_model
from fitdiff.synthetic.subjects import Stream, make_subject, rng_for
from fitdiff.synthetic.textures import height_to_normals, reflectance_maps, sample_appearance
from fitdiff.synthetic.uv_layout import texel_uvs, uv_layout


@pytest.fixture(scope="module")
def model():
    return make_procedural_shape_model(2000, 20, seed=0)


@pytest.fixture(scope="module")
def layout(model):
    return uv_layout(model, 48)


def test_texel_uvs_follow_the_v_up_convention():
    uv = texel_uvs(4)
    assert uv.shape == (4, 4, 2)
    assert np.allclose(uv[0, :, 1], 0.875) and np.allclose(uv[-1, :, 1], 0.125)  # row 0 is the top (v ~ 1)
    assert np.allclose(uv[:, 0, 0], 0.125) and np.allclose(uv[:, -1, 0], 0.875)


def test_layout_maps_texels_onto_the_mean_face(model, layout):
    assert layout.position.shape == (48, 48, 3) and layout.covered.all()
    # The chart runs chin (bottom rows) to forehead (top rows) and subject's right (-x) to left (+x).
    assert layout.y[0].mean() > 50 > -50 > layout.y[-1].mean()
    assert layout.x[:, 0].mean() < -50 and layout.x[:, -1].mean() > 50
    # A texel at a landmark's UV sits on that landmark's vertex (up to interpolation inside a triangle).
    lm = int(model.landmarks_68[30])  # nose tip
    u, v = model.uvs[lm].tolist()
    row, col = int((1 - v) * 48), int(u * 48)
    assert np.linalg.norm(layout.position[row, col] - model.mean[lm].numpy()) < 3 * layout.mm_per_texel


def test_maps_are_in_range_finite_and_normals_are_unit(layout):
    for index in range(4):
        maps = reflectance_maps(sample_appearance(rng_for(0, Stream.SUBJECT, index)), layout)
        assert maps.diffuse.shape == (48, 48, 3) and maps.specular.shape == (48, 48, 1)
        assert maps.normals.shape == (48, 48, 3)
        for array in (maps.diffuse, maps.specular, maps.normals):
            assert array.dtype == np.float32 and np.isfinite(array).all()
        assert maps.diffuse.min() >= 0 and maps.diffuse.max() <= 1
        assert maps.specular.min() >= 0 and maps.specular.max() <= 1
        assert np.allclose(np.linalg.norm(maps.normals, axis=-1), 1.0, atol=1e-5)
        assert maps.normals[..., 2].min() > 0.5  # tangent-space detail, not a different surface
        assert maps.normals[..., :2].std() > 1e-3  # but there is detail
        diffuse, specular, normals = maps.to_uint8()
        assert diffuse.dtype == specular.dtype == np.uint8 and normals.dtype == np.float16
        assert np.allclose(np.linalg.norm(normals.astype(np.float32), axis=-1), 1.0, atol=2e-3)


def _region(layout, centre_xy, radius):
    d = np.hypot(layout.x - centre_xy[0], layout.y - centre_xy[1])
    return d < radius


def test_features_land_in_their_facial_regions(model):
    """Lips redder than the chin, sclera more specular than the forehead, brows darker than the forehead."""
    layout = uv_layout(model, 128)
    lm = layout.landmarks[:, :2]
    lips = _region(layout, lm[[51, 57]].mean(0), 3.0)
    chin = _region(layout, lm[8] + [0.0, 20.0], 6.0)
    eye = _region(layout, lm[[37, 41]].mean(0), 2.0) | _region(layout, lm[[44, 46]].mean(0), 2.0)
    forehead = _region(layout, [0.0, 60.0], 6.0)
    brow = _region(layout, lm[19], 2.5) | _region(layout, lm[24], 2.5)
    assert lips.any() and chin.any() and eye.any() and brow.any()
    beardless, dark_browed = [], []  # subjects for which the lip and brow checks are meaningful
    for index in range(12):
        appearance = sample_appearance(rng_for(1, Stream.SUBJECT, index))
        maps = reflectance_maps(appearance, layout)
        d, s = maps.diffuse, maps.specular[..., 0]
        redness = d[..., 0] / (d[..., 1] + 1e-3)
        assert s[eye].mean() > s[forehead].mean()
        assert s[lips].mean() < s[forehead].mean()
        if appearance.beard == 0:
            beardless.append(bool(redness[lips].mean() > redness[chin].mean()))
        if np.mean(appearance.hair) < 0.5 * np.mean(appearance.skin):  # brows take the hair colour
            lifted = [0.0, appearance.brow_lift]
            brow = _region(layout, lm[19] + lifted, 2.5) | _region(layout, lm[24] + lifted, 2.5)
            dark_browed.append(bool(d[brow].mean() < d[forehead].mean()))
    # the seeded subjects include both kinds, so neither check is vacuous
    assert beardless and all(beardless), beardless
    assert dark_browed and all(dark_browed), dark_browed


def test_height_to_normals_points_away_from_uphill():
    cols = np.arange(8.0)
    ramp = np.tile(cols * 0.5, (8, 1))  # height rises along +u by 0.5 mm per texel
    n = height_to_normals(ramp, mm_per_texel=1.0)
    expected = np.array([-0.5, 0.0, 1.0]) / np.sqrt(1.25)
    assert np.allclose(n, expected, atol=1e-9)
    up = np.tile((7 - cols)[:, None] * 0.5, (1, 8))  # rises toward the top rows = +v
    assert np.allclose(height_to_normals(up, 1.0), np.array([0.0, -0.5, 1.0]) / np.sqrt(1.25), atol=1e-9)


def test_subjects_are_deterministic_and_distinct(layout):
    a = make_subject(3, 5, layout, 20)
    b = make_subject(3, 5, layout, 20)
    c = make_subject(3, 6, layout, 20)
    d = make_subject(4, 5, layout, 20)
    assert np.array_equal(a.shape, b.shape) and np.array_equal(a.maps.diffuse, b.maps.diffuse)
    assert np.array_equal(a.maps.normals, b.maps.normals) and a.appearance == b.appearance
    for other in (c, d):
        assert not np.array_equal(a.shape, other.shape)
        assert np.abs(a.maps.diffuse - other.maps.diffuse).mean() > 1e-3
    assert a.shape.dtype == np.float32 and a.shape.shape == (20,)
    # stored maps are what the photos use: 8-bit albedos
    assert np.allclose(a.maps.diffuse * 255, np.round(a.maps.diffuse * 255), atol=1e-3)


def test_shape_coefficients_are_standard_normal(layout):
    coeffs = np.stack([make_subject(0, i, layout, 20).shape for i in range(60)])
    assert abs(coeffs.mean()) < 0.1 and 0.9 < coeffs.std() < 1.1
