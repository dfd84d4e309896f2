"""Training targets, losses and prediction-type conversions against diffusers and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fitdiff.config import ConfigError, validate_config
from fitdiff.diffusion import (
    PREDICTION_TYPES,
    DiffusionObjective,
    alphas_cumprod,
    ddim_scheduler,
    masked_mean,
    min_snr_weight,
    output_from_eps,
    predict_eps,
    training_scheduler,
)

SCHEDULER = training_scheduler()
TABLE = alphas_cumprod(SCHEDULER)
T = torch.tensor([0, 1, 10, 250, 499, 750, 998, 999])


def _batch(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(len(T), 3, 4, 5, generator=g, dtype=dtype)
    noise = torch.randn(len(T), 3, 4, 5, generator=g, dtype=dtype)
    return x0, noise, SCHEDULER.add_noise(x0, noise, T)


def test_targets_are_diffusers_definitions():
    x0, noise, _ = _batch()
    assert torch.equal(DiffusionObjective("epsilon").target(x0, noise, T, TABLE), noise)
    assert torch.equal(DiffusionObjective("sample").target(x0, noise, T, TABLE), x0)
    v = DiffusionObjective("v_prediction").target(x0, noise, T, TABLE)
    torch.testing.assert_close(v, SCHEDULER.get_velocity(x0, noise, T), rtol=0, atol=1e-12)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_round_trips(prediction_type):
    objective = DiffusionObjective(prediction_type)
    x0, noise, x_t = _batch()
    out = objective.target(x0, noise, T, TABLE)
    close = dict(rtol=0, atol=1e-9)
    torch.testing.assert_close(objective.predict_x0(out, x_t, T, TABLE), x0, **close)
    torch.testing.assert_close(objective.predict_eps(out, x_t, T, TABLE), noise, **close)
    torch.testing.assert_close(objective.output_from_x0(x0, x_t, T, TABLE), out, **close)
    torch.testing.assert_close(objective.output_from_eps(noise, x_t, T, TABLE), out, **close)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_predicted_x0_and_eps_match_the_ddim_step_of_that_prediction_type(prediction_type):
    scheduler = ddim_scheduler(prediction_type=prediction_type)
    scheduler.set_timesteps(50)
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 3, 4, 4, generator=g)
    output = torch.randn(2, 3, 4, 4, generator=g)
    objective = DiffusionObjective(prediction_type)
    for t in (981, 501, 1):
        step = scheduler.step(output, t, x_t)
        torch.testing.assert_close(objective.predict_x0(output, x_t, torch.tensor([t, t]), TABLE),
                                   step.pred_original_sample, rtol=1e-5, atol=1e-5)


def test_scalar_and_batched_timesteps_agree():
    x0, noise, x_t = _batch()
    objective = DiffusionObjective("v_prediction")
    batched = objective.predict_x0(x_t[:1], x_t[:1], torch.tensor([250]), TABLE)
    torch.testing.assert_close(objective.predict_x0(x_t[:1], x_t[:1], 250, TABLE), batched)


def test_float32_and_bfloat16_keep_their_dtype():
    objective = DiffusionObjective("v_prediction")
    for dtype in (torch.float32, torch.bfloat16):
        x0, noise, x_t = (v.to(dtype) for v in _batch())
        assert objective.target(x0, noise, T, TABLE).dtype == dtype
        assert objective.predict_x0(x0, x_t, T, TABLE).dtype == dtype
        assert objective.loss(x0, x0, noise, T, TABLE).dtype == torch.float32  # upcast for the loss


# ---------------------------------------------------------------------------------------------- min-SNR


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_min_snr_weights_against_the_closed_form(prediction_type):
    gamma = 5.0
    weights = min_snr_weight(prediction_type, T, TABLE, gamma)
    for t, w in zip(T.tolist(), weights.tolist()):
        ab = TABLE[t].item()
        snr = ab / (1 - ab)
        expected = {"epsilon": min(snr, gamma) / snr, "v_prediction": min(snr, gamma) / (snr + 1),
                    "sample": min(snr, gamma)}[prediction_type]
        assert w == pytest.approx(expected, rel=1e-12)
    assert weights.dtype == torch.float64
    assert torch.equal(min_snr_weight(prediction_type, T, TABLE, None), torch.ones(len(T), dtype=torch.float64))


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_min_snr_loss_is_the_clipped_snr_times_the_x0_error(prediction_type):
    """Hang et al. 2023: for every prediction type, loss = min(SNR, gamma) * ||x0_hat - x0||^2."""
    objective = DiffusionObjective(prediction_type, min_snr_gamma=5.0)
    x0, noise, x_t = _batch()
    output = objective.target(x0, noise, T, TABLE) + 0.1 * torch.randn_like(x0)
    ab = TABLE[T]
    clipped = torch.minimum(ab / (1 - ab), torch.tensor(5.0, dtype=torch.float64))
    x0_error = (objective.predict_x0(output, x_t, T, TABLE) - x0).square().flatten(1).mean(1)
    torch.testing.assert_close(objective.loss(output, x0, noise, T, TABLE), clipped * x0_error, rtol=1e-9, atol=0)


def test_unweighted_loss_is_per_sample_mse():
    objective = DiffusionObjective("epsilon")
    x0, noise, _ = _batch(torch.float32)
    output = torch.randn_like(x0)
    expected = F.mse_loss(output, noise, reduction="none").flatten(1).mean(1)
    torch.testing.assert_close(objective.loss(output, x0, noise, T, TABLE), expected)


# ---------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("mask_shape", [(1, 3, 1, 1), (1, 3, 4, 5), (8, 1, 4, 5)])
def test_masked_loss_ignores_padding(mask_shape):
    objective = DiffusionObjective("epsilon", min_snr_gamma=5.0)
    x0, noise, _ = _batch(torch.float32)
    mask = (torch.rand(mask_shape, generator=torch.Generator().manual_seed(3)) > 0.4).float()
    mask.view(mask.shape[0], -1)[:, 0] = 1  # every sample counts something
    output = torch.randn_like(x0)
    scrambled = torch.where(mask.bool(), output, output + 100.0)  # garbage in the padding only
    loss = objective.loss(output, x0, noise, T, TABLE, mask)
    torch.testing.assert_close(objective.loss(scrambled, x0, noise, T, TABLE, mask), loss)
    full = mask.expand_as(x0)
    manual = ((output - noise).square() * full).flatten(1).sum(1) / full.flatten(1).sum(1)
    torch.testing.assert_close(loss, manual * objective.weight(T, TABLE).float())


def test_masked_mean_edge_cases():
    values = torch.ones(2, 3)
    assert torch.equal(masked_mean(values, torch.zeros(2, 3)), torch.zeros(2))  # nothing counted -> 0
    with pytest.raises(ValueError, match="does not broadcast"):
        masked_mean(values, torch.ones(4))


# -------------------------------------------------------------------------------------------- misuse


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionObjective("x0")
    with pytest.raises(ValueError, match="min_snr_gamma"):
        DiffusionObjective("epsilon", min_snr_gamma=0.0)
    x0, noise, _ = _batch()
    with pytest.raises(TypeError, match="integers"):
        DiffusionObjective("v_prediction").target(x0, noise, T.float(), TABLE)
    with pytest.raises(ValueError, match="batch size"):
        predict_eps("sample", x0, x0, T[:3], TABLE)
    with pytest.raises(ValueError, match="prediction_type"):
        output_from_eps("eps", x0, x0, T, TABLE)


def test_objective_is_a_validated_config_node():
    good = OmegaConf.create({"_target_": "fitdiff.diffusion.DiffusionObjective",
                             "prediction_type": "v_prediction", "min_snr_gamma": 5})
    validate_config(good)
    with pytest.raises(ConfigError, match="prediction_type"):
        validate_config(OmegaConf.create({**good, "prediction_type": "x0"}))
    assert math.isclose(DiffusionObjective(**{k: v for k, v in good.items() if k != "_target_"}).min_snr_gamma, 5)
