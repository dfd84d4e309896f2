"""The identity linear probe of the synthetic dataset: errors in mm and albedo units, baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fitdiff.face.template import make_procedural_shape_model
from fitdiff.synthetic.identity_probe import ProbeData, identity_probe


@pytest.fixture(scope="module")
def model():
    return make_procedural_shape_model(n_vertices=600, n_components=6, seed=0).double()


def _data(rng, n_subjects, photos, k, res, mixing, encode_albedo=True) -> ProbeData:
    shape = rng.standard_normal((n_subjects, k)).astype(np.float32)
    tone = rng.uniform(0.2, 0.8, (n_subjects, 1, 1, 1)).astype(np.float32)
    diffuse = np.broadcast_to(tone, (n_subjects, res, res, 3)).copy()
    code = np.hstack([shape, tone[:, :, 0, 0] if encode_albedo else np.zeros((n_subjects, 1))])
    identity = code @ mixing
    rep = lambda a: np.repeat(a, photos, axis=0)  # noqa: E731
    return ProbeData(
        identity=rep(identity).astype(np.float32),
        subjects=[f"s{i:03d}" for i in range(n_subjects) for _ in range(photos)],
        shape=rep(shape),
        diffuse=rep(diffuse),
    )


def test_an_embedding_that_encodes_shape_and_albedo_linearly_is_read_back(model):
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((7, 32))
    train = _data(rng, 60, 2, 6, 4, mixing)
    held = _data(rng, 20, 2, 6, 4, mixing)
    report = identity_probe(train, held, model, alphas=[1e-9, 1e-3])
    assert report.shape_probe_mm < 1e-3 and report.diffuse_probe < 1e-4
    assert report.shape_gain > 0.999 and report.diffuse_gain > 0.999
    assert np.all(report.component_correlation > 0.999)
    assert (report.train_photos, report.heldout_photos, report.heldout_subjects) == (120, 40, 20)
    assert "linear probe" in str(report) and "mean face" in str(report)


def test_baselines_match_closed_forms(model):
    rng = np.random.default_rng(1)
    mixing = rng.standard_normal((7, 32))
    train = _data(rng, 40, 1, 6, 4, mixing, encode_albedo=False)
    held = _data(rng, 10, 1, 6, 4, mixing, encode_albedo=False)
    report = identity_probe(train, held, model)
    # Orthonormal components: the mean-face error of coefficients c is ||std * c|| / sqrt(V).
    std = model.std.numpy()
    expected = np.mean(np.linalg.norm(held.shape * std, axis=1) / math.sqrt(model.n_vertices))
    assert report.shape_mean_face_mm == pytest.approx(expected, rel=1e-6)
    mean_albedo = train.diffuse.mean(0)
    expected_albedo = np.mean([np.sqrt(((d - mean_albedo) ** 2).mean()) for d in held.diffuse])
    assert report.diffuse_mean == pytest.approx(expected_albedo, rel=1e-5)
    assert report.shape_random_subject_mm > report.shape_mean_face_mm


def test_component_count_must_match_the_model(model):
    rng = np.random.default_rng(2)
    mixing = rng.standard_normal((6, 8))
    data = _data(rng, 10, 1, 5, 4, mixing)
    with pytest.raises(ValueError, match="components"):
        identity_probe(data, data, model)


def test_probe_runs_on_float32_models_too():
    model = make_procedural_shape_model(n_vertices=600, n_components=6, seed=0)
    assert model.std.dtype == torch.float32
    rng = np.random.default_rng(3)
    mixing = rng.standard_normal((7, 16))
    report = identity_probe(_data(rng, 30, 1, 6, 4, mixing), _data(rng, 10, 1, 6, 4, mixing), model)
    assert report.shape_gain > 0.99
