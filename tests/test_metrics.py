"""fitdiff.metrics: LPIPS loading, angular error, identity similarity, ROC-AUC, shape error; layering."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from fitdiff.metrics import lpips as lpips_module
from fitdiff.metrics.angular import MeanAngularError, angular_error, mean_angular_error
from fitdiff.metrics.auroc import roc_auc
from fitdiff.metrics.identity import cosine_similarity
from fitdiff.metrics.lpips import PerceptualLoss
from fitdiff.metrics.shape import (
    ShapeError,
    procrustes_align,
    shape_error,
    similarity_procrustes,
    vertex_rmse,
)
from helpers import run_script


def _random_rotation(generator: torch.Generator, batch: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(batch, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None]
    q[:, :, 0] *= torch.sign(torch.linalg.det(q))[:, None]  # det +1
    return q


# --- angular error ---------------------------------------------------------------------------------


def _constant_map(vector, h=2, w=2):
    return torch.tensor(vector, dtype=torch.float32)[None, :, None, None].expand(1, 3, h, w)


def test_angular_error_known_angles_in_radians_and_degrees():
    a, b = _constant_map([0.0, 0.0, 1.0]), _constant_map([1.0, 0.0, 0.0])
    assert torch.allclose(angular_error(a, b), torch.full((1, 2, 2), math.pi / 2))
    assert torch.allclose(angular_error(a, -a, degrees=True), torch.full((1, 2, 2), 180.0))
    tilted = _constant_map([0.0, math.sin(math.radians(30)), math.cos(math.radians(30))])
    assert torch.allclose(angular_error(a, 5 * tilted, degrees=True), torch.full((1, 2, 2), 30.0), atol=1e-4)


def test_angular_error_resolves_small_angles_and_has_finite_gradients():
    angle = 1e-3  # radians: acos of a float32 cosine cannot resolve this
    a = _constant_map([0.0, 0.0, 1.0]).clone().requires_grad_(True)
    b = _constant_map([0.0, math.sin(angle), math.cos(angle)])
    assert torch.allclose(angular_error(a, b), torch.full((1, 2, 2), angle), rtol=1e-3)
    assert float(angular_error(b, b).max()) < 1e-6
    angular_error(a, a.detach()).sum().backward()
    assert torch.isfinite(a.grad).all()


def test_mean_angular_error_uses_only_valid_texels():
    pred = _constant_map([0.0, 0.0, 1.0], 2, 2).clone()
    target = pred.clone()
    target[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # 90 degrees at one texel
    target[0, :, 1, 1] = 0.0  # an empty (background) texel
    mask = torch.tensor([[[True, False], [False, False]]])
    assert float(mean_angular_error(pred, target, mask)) == pytest.approx(90.0)
    assert float(mean_angular_error(pred, target, mask[:, None].float(), degrees=False)) == pytest.approx(math.pi / 2)
    assert float(mean_angular_error(pred, target)) == pytest.approx(45.0)  # two 90-degree texels of four
    with pytest.raises(ValueError, match="no texel"):
        mean_angular_error(pred, target, torch.zeros(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        mean_angular_error(pred, target, torch.ones(1, 3, 3, dtype=torch.bool))


def test_mean_angular_error_metric_pools_texels_over_batches():
    metric = MeanAngularError()
    up, side = _constant_map([0.0, 0.0, 1.0], 2, 2), _constant_map([1.0, 0.0, 0.0], 2, 2)
    metric.update(up, side)  # 4 texels at 90 degrees
    metric.update(up, up, mask=torch.tensor([[[True, True], [True, False]]]))  # 3 texels at 0
    assert float(metric.compute()) == pytest.approx(4 * 90.0 / 7)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"), pytest.raises(ValueError, match="no valid texel"):
        metric.compute()


# --- identity similarity -----------------------------------------------------------------------------


def test_cosine_similarity_ignores_length():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 16, generator=g)
    assert torch.allclose(cosine_similarity(a, 3 * a), torch.ones(4), atol=1e-6)
    assert torch.allclose(cosine_similarity(a, -a), -torch.ones(4), atol=1e-6)
    b = torch.randn(4, 16, generator=g)
    expected = (a / a.norm(dim=-1, keepdim=True) * b / b.norm(dim=-1, keepdim=True)).sum(-1)
    assert torch.allclose(cosine_similarity(a, b), expected, atol=1e-6)


# --- ROC-AUC -----------------------------------------------------------------------------------------


def _pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(positive > negative) + 0.5 P(tie), by brute force over all pairs."""
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def test_roc_auc_matches_a_hand_computed_case_with_ties():
    # positives 0.9, 0.5, 0.3; negatives 0.5, 0.2. Pairs (pos > neg): 0.9 beats both (2), 0.5 ties 0.5
    # (0.5) and beats 0.2 (1), 0.3 beats 0.2 (1): 4.5 of 6.
    scores = np.array([0.9, 0.5, 0.3, 0.5, 0.2])
    labels = np.array([1, 1, 1, 0, 0])
    assert roc_auc(scores, labels) == pytest.approx(4.5 / 6)
    assert roc_auc(-scores, labels) == pytest.approx(1.5 / 6)
    assert roc_auc(np.array([1.0, 2.0]), np.array([0, 1])) == 1.0
    assert roc_auc(torch.ones(4), torch.tensor([0, 1, 0, 1])) == 0.5  # all tied


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_equals_the_pairwise_probability_on_random_data(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(700) < 0.3
    scores = rng.normal(size=700) + labels * 0.8
    if seed % 2:
        scores = np.round(scores, 1) * 1e4  # many ties, values a sigmoid would saturate
    assert roc_auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels), abs=1e-6)


def test_roc_auc_rejects_one_class_and_length_mismatch():
    with pytest.raises(ValueError, match="positives and negatives"):
        roc_auc(np.arange(5.0), np.ones(5, bool))
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc(np.arange(5.0), np.ones(4, bool))


# --- shape error -------------------------------------------------------------------------------------


def test_vertex_rmse_closed_forms():
    g = torch.Generator().manual_seed(0)
    mesh = torch.randn(2, 50, 3, generator=g, dtype=torch.float64) * 40
    shift = torch.tensor([3.0, -4.0, 12.0], dtype=torch.float64)
    assert torch.allclose(vertex_rmse(mesh + shift, mesh), torch.full((2,), 13.0, dtype=torch.float64))
    centred = mesh - mesh.mean(1, keepdim=True)
    expected = 0.1 * centred.pow(2).sum(-1).mean(-1).sqrt()
    assert torch.allclose(vertex_rmse(1.1 * centred, centred), expected)
    with pytest.raises(ValueError, match=r"\(B, V, 3\)"):
        vertex_rmse(mesh, mesh[:, :10])


def test_procrustes_undoes_a_random_similarity_transform():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(3, 200, 3, generator=g, dtype=torch.float64) * 50
    rotation = _random_rotation(g, 3)
    scale = torch.tensor([0.5, 1.0, 2.3], dtype=torch.float64)
    translation = torch.randn(3, 3, generator=g, dtype=torch.float64) * 100
    moved = scale[:, None, None] * target @ rotation.transpose(1, 2) + translation[:, None]
    assert float(shape_error(moved, target).min()) > 10.0  # far apart without alignment
    assert float(shape_error(moved, target, procrustes=True).max()) < 1e-8
    s, r, t = similarity_procrustes(moved, target)
    assert torch.allclose(s, 1 / scale) and torch.allclose(r, rotation.transpose(1, 2), atol=1e-10)
    assert torch.allclose(torch.linalg.det(r), torch.ones(3, dtype=torch.float64))
    # float32 inputs come back in float32 and still align closely
    aligned = procrustes_align(moved.float(), target.float())
    assert aligned.dtype == torch.float32 and float(vertex_rmse(aligned, target.float()).max()) < 1e-2


def test_procrustes_never_reflects_and_rigid_mode_keeps_the_scale():
    g = torch.Generator().manual_seed(2)
    target = torch.randn(1, 100, 3, generator=g, dtype=torch.float64)
    mirrored = target * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    _, rotation, _ = similarity_procrustes(mirrored, target)
    assert float(torch.linalg.det(rotation)) == pytest.approx(1.0)
    assert float(shape_error(mirrored, target, procrustes=True)) > 0.1  # a mirror image is not a rotation
    s, _, _ = similarity_procrustes(2 * target, target, scale=False)
    assert float(s) == 1.0


def test_shape_error_metric_averages_meshes_over_batches():
    plain, aligned = ShapeError(), ShapeError(procrustes=True)
    for offset in (1.0, 3.0):
        target = torch.randn(2, 10, 3, generator=torch.Generator().manual_seed(int(offset)))
        plain.update(target + offset * torch.tensor([1.0, 0.0, 0.0]), target)
        aligned.update(target + offset, target)
    assert float(plain.compute()) == pytest.approx(2.0)  # two meshes at 1 mm, two at 3 mm
    assert float(aligned.compute()) < 1e-4
    with pytest.warns(UserWarning, match="before the ``update``"), pytest.raises(ValueError, match="no mesh"):
        ShapeError().compute()


# --- LPIPS -------------------------------------------------------------------------------------------


def test_lpips_random_backbone_warns_when_weights_are_absent(caplog):
    with caplog.at_level(logging.WARNING, logger="fitdiff.metrics.lpips"):
        p = PerceptualLoss()
    assert "RANDOM backbone" in caplog.text
    assert not any(q.requires_grad for q in p.parameters())
    x, y = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    d = p(x, y)
    assert d.shape == (2,) and float(p(x, x).abs().max()) < 1e-6 and float(d.min()) > 0
    p.train()
    assert not p.lpips.training  # stays in eval mode


def test_lpips_loads_the_backbone_asset(tmp_path, monkeypatch, caplog):
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notice about `pretrained=`
        vgg = lpips.pretrained_networks.vgg16(pretrained=False)
    state = {}
    for key, value in vgg.state_dict().items():  # slice<k>.<index>.<param> -> features.<index>.<param>
        _, index, param = key.split(".")
        state[f"features.{index}.{param}"] = torch.full_like(value, 0.01)
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    monkeypatch.setattr("fitdiff.assets.require", lambda name, **_: path)
    with caplog.at_level(logging.INFO, logger="fitdiff.metrics.lpips"):
        model = lpips_module.build_lpips()
    assert "loaded" in caplog.text and "RANDOM" not in caplog.text
    assert torch.all(getattr(model.net.slice5, "28").weight == 0.01)


# --- layering ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_metrics_import_no_model_packages():
    code = (
        "import sys, fitdiff.metrics as m; "
        "[getattr(m, name) for name in m.__all__]; "
        "bad = [n for n in sys.modules if n.split('.')[:2] in "
        "(['fitdiff', 'face'], ['fitdiff', 'ldm'], ['fitdiff', 'fitting'], ['fitdiff', 'autoencoder'])]; "
        "assert not bad, bad"
    )
    result = run_script("-c", code, timeout=600)
    assert result.returncode == 0, result.stderr
