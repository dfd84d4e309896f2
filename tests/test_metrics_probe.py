"""Closed-form ridge probe: against numpy least squares, a linearly encoded toy problem, cross-validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitdiff.metrics.probe import RidgeProbe, fit_ridge, fit_ridge_cv, group_folds, predict, ridge_cv


def _toy(n: int = 120, d: int = 16, m: int = 5, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    w = rng.standard_normal((d, m))
    y = x @ w + rng.standard_normal(m) + noise * rng.standard_normal((n, m))
    return x, y


def test_ridge_equals_the_augmented_lstsq_solution():
    x, y = _toy(noise=0.3)
    alpha = 2.5
    probe = fit_ridge(x, y, alpha)
    # Reference: centre, then solve [Xc; sqrt(alpha) I] W = [Yc; 0] by numpy least squares.
    xm, ym = x.mean(0), y.mean(0)
    a = np.vstack([x - xm, np.sqrt(alpha) * np.eye(x.shape[1])])
    b = np.vstack([y - ym, np.zeros((x.shape[1], y.shape[1]))])
    w_ref = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(probe.weight, w_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(probe.bias, ym - xm @ w_ref, rtol=1e-10, atol=1e-12)


def test_alpha_zero_is_ordinary_least_squares_with_intercept():
    x, y = _toy(noise=0.1)
    probe = fit_ridge(x, y, 0.0)
    design = np.hstack([x, np.ones((len(x), 1))])
    ref = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(probe.weight, ref[:-1], atol=1e-10)
    np.testing.assert_allclose(probe.bias, ref[-1], atol=1e-10)


def test_probe_of_a_linear_encoding_has_no_held_out_error():
    """An 'embedding' that linearly encodes the target (plus unrelated dimensions) is read back exactly."""
    rng = np.random.default_rng(1)
    shape = rng.standard_normal((200, 8))
    embedding = np.hstack([shape @ rng.standard_normal((8, 24)), rng.standard_normal((200, 8))])
    probe = fit_ridge_cv(embedding[:150], shape[:150], alphas=[1e-8, 1e-4, 1.0])
    err = np.sqrt(((probe.predict(embedding[150:]) - shape[150:]) ** 2).mean())
    assert probe.alpha == 1e-8
    assert err < 1e-5


def test_torch_input_gives_torch_output_of_its_dtype():
    x, y = _toy()
    probe = fit_ridge(torch.from_numpy(x).float(), torch.from_numpy(y), 0.1)
    out = predict(probe, torch.from_numpy(x[:7]).float())
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (7, 5)
    np.testing.assert_allclose(out.numpy(), probe.predict(x[:7]), rtol=1e-5, atol=1e-5)


def test_one_dimensional_target_and_input_errors():
    x, y = _toy(m=1)
    probe = fit_ridge(x, y[:, 0], 0.5)
    assert isinstance(probe, RidgeProbe) and probe.weight.shape == (16, 1)
    with pytest.raises(ValueError, match="alpha"):
        fit_ridge(x, y, -1.0)
    with pytest.raises(ValueError, match="rows"):
        fit_ridge(x, y[:-1], 1.0)
    with pytest.raises(ValueError, match="features must be"):
        probe.predict(x[:, :3])


def test_group_folds_keep_groups_together_and_balance():
    groups = np.repeat(np.arange(20), 4)
    fold = group_folds(groups, 5, seed=3)
    for g in range(20):
        assert len(set(fold[groups == g])) == 1
    assert np.bincount(fold).tolist() == [16] * 5
    with pytest.raises(ValueError, match="groups"):
        group_folds(np.arange(3), 5)


def test_cross_validation_prefers_strong_penalty_on_pure_noise():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((100, 40)), rng.standard_normal((100, 3))
    alpha, errors = ridge_cv(x, y, alphas=[1e-6, 1.0, 1e6])
    assert alpha == 1e6 and errors.shape == (3,) and errors[0] > errors[2]
    x, y = _toy(noise=0.01)
    alpha, _ = ridge_cv(x, y, alphas=[1e-6, 1.0, 1e6])
    assert alpha < 1e6
