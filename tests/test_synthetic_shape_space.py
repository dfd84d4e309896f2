"""The synthetic dataset's observable shape space: no similarity directions, same per-vertex RMS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fitdiff.face.template import make_procedural_shape_model
from fitdiff.synthetic.config import load_shape_model, shape_model_from_config
from fitdiff.synthetic.shape_space import observable_shape_model, similarity_basis, similarity_fraction


@pytest.fixture(scope="module")
def models():
    return make_procedural_shape_model(2000, 12, seed=0), observable_shape_model(2000, 12, seed=0)


def _flat(model) -> np.ndarray:
    return model.components.double().numpy().reshape(model.n_components, -1)


def test_similarity_basis_spans_translation_rotation_and_scale():
    rng = np.random.default_rng(0)
    mean = rng.standard_normal((50, 3)) * 40.0
    basis = similarity_basis(mean)
    assert basis.shape == (150, 7)
    np.testing.assert_allclose(basis.T @ basis, np.eye(7), atol=1e-10)
    # A small similarity transform of the mesh is (to first order) inside the span.
    angle, scale, shift = 1e-4, 1e-4, np.array([0.3, -0.2, 0.1])
    rot = np.array([[1.0, -angle, 0.0], [angle, 1.0, 0.0], [0.0, 0.0, 1.0]])
    centre = mean.mean(0)
    moved = (1.0 + scale) * (mean - centre) @ rot.T + centre + shift
    delta = (moved - mean).reshape(-1)
    residual = delta - basis @ (basis.T @ delta)
    assert np.linalg.norm(residual) < 1e-6 * np.linalg.norm(delta)


def test_observable_components_are_orthonormal_and_free_of_similarity(models):
    source, model = models
    flat = _flat(model)
    np.testing.assert_allclose(flat @ flat.T, np.eye(model.n_components), atol=1e-5)
    basis = similarity_basis(model.mean.double().numpy())
    assert np.abs(flat @ basis).max() < 1e-5
    assert similarity_fraction(model) < 1e-8
    assert similarity_fraction(source) > 0.1  # what the procedural model spends on similarity
    std = model.std.double().numpy()
    assert np.all(np.diff(std) <= 0) and std[-1] > 0


def test_observable_model_keeps_the_per_vertex_rms_of_its_source():
    model = observable_shape_model(2000, 12, seed=0)
    source = make_procedural_shape_model(2000, 12 + 16, seed=0)
    rms = lambda m, k: math.sqrt((m.std.double().numpy()[:k] ** 2).sum() / m.n_vertices)  # noqa: E731
    assert rms(model, 12) == pytest.approx(rms(source, 12), rel=1e-6)
    assert model.model_id == f"procedural-observable-v1-{model.n_vertices}v-12k-s0"
    assert np.array_equal(model.mean.numpy(), source.mean.numpy())


def test_shape_spaces_by_name_and_from_a_build_config(models):
    source, model = models
    again = load_shape_model(None, 2000, 12, 0)
    assert again.model_id == model.model_id
    np.testing.assert_array_equal(again.components.numpy(), model.components.numpy())
    assert load_shape_model(None, 2000, 12, 0, "procedural").model_id == source.model_id
    with pytest.raises(ValueError, match="shape space"):
        load_shape_model(None, 2000, 12, 0, "unknown")
    config = {"shape_model": None, "n_vertices": 2000, "n_components": 12, "shape_model_seed": 0}
    assert shape_model_from_config(config).model_id == source.model_id  # builds before shape spaces
    assert shape_model_from_config({**config, "shape_space": "observable"}).model_id == model.model_id
