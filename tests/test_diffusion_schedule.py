"""The "ldm_linear" schedule (docs/DESIGN.md §5), the scheduler presets and their config files."""

from __future__ import annotations

from pathlib import Path

import diffusers
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fitdiff.config import ConfigError, validate_config
from fitdiff.diffusion import (
    DDIM_PRESET,
    DDPM_PRESET,
    DPM_PRESET,
    LDM_LINEAR,
    Sampler,
    alphas_cumprod,
    check_same_schedule,
    ddim_scheduler,
    ddpm_scheduler,
    dpm_scheduler,
    training_scheduler,
)

CONFIGS = Path(__file__).resolve().parent.parent / "experiments"


def test_golden_alphas_cumprod():
    a = alphas_cumprod(training_scheduler())
    assert a.dtype == torch.float64 and a.shape == (1000,)
    assert f"{a[0].item():.6f}" == "0.998500"
    assert f"{a[499].item():.6f}" == "0.115844"
    assert f"{a[999].item():.3e}" == "1.423e-04"


def test_alphas_cumprod_match_the_float64_definition():
    betas = torch.linspace(0.0015 ** 0.5, 0.0195 ** 0.5, 1000, dtype=torch.float64) ** 2
    exact = torch.cumprod(1 - betas, 0)
    assert (alphas_cumprod(training_scheduler()) - exact).abs().max() < 3e-7


def test_every_preset_shares_the_training_schedule():
    reference = training_scheduler()
    for scheduler in (ddim_scheduler(), ddpm_scheduler(), dpm_scheduler()):
        check_same_schedule(scheduler, reference)
        assert torch.equal(alphas_cumprod(scheduler), alphas_cumprod(reference))


def test_a_different_schedule_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="beta_end: 0.02 != 0.0195"):
        check_same_schedule(ddim_scheduler(beta_end=0.02), training_scheduler())


def test_training_scheduler_does_not_clip_and_takes_overrides():
    scheduler = training_scheduler(prediction_type="v_prediction")
    assert scheduler.config.clip_sample is False and scheduler.config.prediction_type == "v_prediction"


@pytest.mark.parametrize(
    ("factory", "first", "last"),
    [(ddim_scheduler, [981, 961], [21, 1]), (ddpm_scheduler, [999, 979], [39, 19]),
     (dpm_scheduler, [999, 979], [40, 20])],
)
def test_preset_timesteps_at_50_steps(factory, first, last):
    scheduler = factory()
    scheduler.set_timesteps(50)
    steps = scheduler.timesteps.tolist()
    assert len(steps) == 50 and steps[:2] == first and steps[-2:] == last


def test_ddim_preset_ends_at_alpha_bar_0_and_ddpm_at_one():
    assert ddim_scheduler().final_alpha_cumprod.item() == pytest.approx(0.9985)
    assert not any(ddim_scheduler().config[k] for k in ("clip_sample", "set_alpha_to_one", "thresholding"))


def test_alphas_cumprod_needs_a_vp_scheduler():
    with pytest.raises(TypeError, match="alphas_cumprod"):
        alphas_cumprod(object())


# ------------------------------------------------------------------------------------------ config files


def _load(name: str):
    return OmegaConf.load(CONFIGS / name)


@pytest.mark.parametrize(("name", "preset", "cls"), [
    ("ddim", DDIM_PRESET, diffusers.DDIMScheduler),
    ("ddpm", DDPM_PRESET, diffusers.DDPMScheduler),
    ("dpm", DPM_PRESET, diffusers.DPMSolverMultistepScheduler),
])
def test_sampler_config_validates_and_builds_the_preset(name, preset, cls):
    node = _load(f"sampler/{name}.yaml")
    validate_config(OmegaConf.create({"sampler": node}))
    sampler = instantiate(node)
    assert isinstance(sampler, Sampler) and type(sampler.scheduler) is cls
    assert dict(node.scheduler) == {"_target_": f"diffusers.{cls.__name__}", **LDM_LINEAR, **preset}
    factory = {"ddim": ddim_scheduler, "ddpm": ddpm_scheduler, "dpm": dpm_scheduler}[name]
    assert dict(sampler.scheduler.config) == dict(factory().config)


def test_noise_scheduler_config_is_the_training_scheduler():
    node = _load("model/noise_scheduler/ldm_linear.yaml")
    validate_config(node)
    assert dict(instantiate(node).config) == dict(training_scheduler().config)


def test_a_mistyped_scheduler_key_is_named():
    node = _load("sampler/ddim.yaml")
    node.scheduler.beta_strat = 0.1
    with pytest.raises(ConfigError, match=r"sampler\.scheduler\.beta_strat'.*Did you mean: beta_start"):
        validate_config(OmegaConf.create({"sampler": node}))


def test_a_wrong_spacing_value_is_named():
    node = _load("sampler/ddim.yaml")
    node.scheduler.timestep_spacing = "lead"
    with pytest.raises(ConfigError, match=r"sampler\.scheduler\.timestep_spacing"):
        validate_config(OmegaConf.create({"sampler": node}))
