"""The "ldm_linear" noise schedule (docs/DESIGN.md §5) as diffusers scheduler arguments, and the presets.

Schedules and samplers are diffusers' schedulers; this module only fixes their arguments:

- :data:`LDM_LINEAR`: ``beta_schedule="scaled_linear"``, β from 0.0015 to 0.0195 over 1000 training
  steps, i.e. β_t = linspace(√0.0015, √0.0195, 1000)_t², ᾱ_t = ∏_{s≤t} (1 − β_s):
  ᾱ_0 = 0.998500, ᾱ_499 = 0.115844, ᾱ_999 = 1.423e-4.
- :func:`training_scheduler`: the :class:`~diffusers.DDPMScheduler` whose ``add_noise`` makes the
  training inputs (``experiments/model/noise_scheduler/ldm_linear.yaml``).
- :func:`ddim_scheduler`, :func:`ddpm_scheduler`, :func:`dpm_scheduler`: the sampling presets
  (``experiments/sampler/{ddim,ddpm,dpm}.yaml``). Every preset has ``clip_sample`` off (latents are
  not in [−1, 1]) and no thresholding.

Presets and the timesteps they visit (for ``num_inference_steps = N``, ratio r = 1000 // N):

=========  =======================================================  ===================================
preset     timestep spacing                                         last step goes to
=========  =======================================================  ===================================
``ddim``   ``leading``, ``steps_offset=1``: (N−1)·r+1, …, r+1, 1    ᾱ_0 = 0.9985 (``set_alpha_to_one``
           (50 steps: 981, 961, …, 1), the latent-diffusion choice  False): the sample keeps noise of
                                                                    std √(1 − ᾱ_0) ≈ 0.039 in x_t's units
``ddpm``   ``trailing``: 999, 999 − r, …, r − 1 (50 steps: 999,     clean x_0 (ᾱ = 1); ancestral noise
           979, …, 19); 1000 steps = the original DDPM chain        ``fixed_small`` (posterior variance)
``dpm``    ``linspace``: round(linspace(0, 999, N+1))[::-1][:-1]    σ = 0, clean x_0 (``final_sigmas_type
           (50 steps: 999, 979, …, 20); DPM-Solver++ order 2        = "zero"``), first order at the end
                                                                    (``lower_order_final``)
=========  =======================================================  ===================================

The ``ddim`` spacing cannot take N = 1000 (its last timestep would be 1000); the sampler refuses it.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

__all__ = [
    "DDIM_PRESET",
    "DDPM_PRESET",
    "DPM_PRESET",
    "LDM_LINEAR",
    "alphas_cumprod",
    "check_same_schedule",
    "ddim_scheduler",
    "ddpm_scheduler",
    "dpm_scheduler",
    "training_scheduler",
]

#: diffusers keyword arguments of the "ldm_linear" schedule (docs/DESIGN.md §5)
LDM_LINEAR: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.0015,
    "beta_end": 0.0195,
}

#: DDIM as in latent diffusion: leading spacing shifted by one, last step to ᾱ_0, no clipping
DDIM_PRESET: dict[str, Any] = {
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
}

#: ancestral DDPM: trailing spacing (starts at t = 999 for any step count), posterior variance
DDPM_PRESET: dict[str, Any] = {
    "timestep_spacing": "trailing",
    "variance_type": "fixed_small",
    "clip_sample": False,
}

#: DPM-Solver++ (multistep, 2nd order, data prediction internally), deterministic
DPM_PRESET: dict[str, Any] = {
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "timestep_spacing": "linspace",
    "final_sigmas_type": "zero",
    "lower_order_final": True,
}

#: keys of a scheduler's config that define its noise schedule (compared by :func:`check_same_schedule`)
_SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas",
                  "rescale_betas_zero_snr")


def training_scheduler(**overrides: Any) -> DDPMScheduler:
    """The DDPMScheduler of the training noise: :data:`LDM_LINEAR`, ``clip_sample=False``, + ``overrides``.

    Its ``add_noise(x0, noise, t)`` gives x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·noise; ``get_velocity`` the v target.
    """
    return DDPMScheduler(**{**LDM_LINEAR, "clip_sample": False, **overrides})


def ddim_scheduler(**overrides: Any) -> DDIMScheduler:
    """Sampling preset ``ddim``: :data:`LDM_LINEAR` + :data:`DDIM_PRESET` + ``overrides``."""
    return DDIMScheduler(**{**LDM_LINEAR, **DDIM_PRESET, **overrides})


def ddpm_scheduler(**overrides: Any) -> DDPMScheduler:
    """Sampling preset ``ddpm``: :data:`LDM_LINEAR` + :data:`DDPM_PRESET` + ``overrides``."""
    return DDPMScheduler(**{**LDM_LINEAR, **DDPM_PRESET, **overrides})


def dpm_scheduler(**overrides: Any) -> DPMSolverMultistepScheduler:
    """Sampling preset ``dpm``: :data:`LDM_LINEAR` + :data:`DPM_PRESET` + ``overrides``."""
    return DPMSolverMultistepScheduler(**{**LDM_LINEAR, **DPM_PRESET, **overrides})


def alphas_cumprod(scheduler: SchedulerMixin) -> torch.Tensor:
    """ᾱ_t for t = 0 … T−1 as a 1-D float64 CPU tensor: the scheduler's own values, widened.

    diffusers computes β and ᾱ in float32; these are exactly the values its ``add_noise`` and ``step``
    use (they differ from a float64 computation by at most 3e-7 absolute, 1e-6 relative). Widening them
    lets the coefficient arithmetic of :mod:`fitdiff.diffusion.objectives` run in float64.

    Raises:
        TypeError: the scheduler has no ``alphas_cumprod`` (not a discrete variance-preserving scheduler).
    """
    values = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{type(scheduler).__name__} has no alphas_cumprod tensor: not a discrete "
                        "variance-preserving diffusers scheduler")
    return values.detach().to(device="cpu", dtype=torch.float64).clone()


def check_same_schedule(scheduler: SchedulerMixin, reference: SchedulerMixin,
                        what: str = "sampling scheduler") -> None:
    """Raise ``ValueError`` naming the differing keys unless both schedulers define the same ᾱ_t.

    Use it where a sampling scheduler meets a model trained with ``reference`` (the training scheduler).
    """
    diffs = [f"{key}: {scheduler.config.get(key)!r} != {reference.config.get(key)!r}"
             for key in _SCHEDULE_KEYS if scheduler.config.get(key) != reference.config.get(key)]
    if not diffs and not torch.equal(alphas_cumprod(scheduler), alphas_cumprod(reference)):
        diffs = ["alphas_cumprod differ"]
    if diffs:
        raise ValueError(f"{what} ({type(scheduler).__name__}) does not use the training noise schedule "
                         f"({type(reference).__name__}): {'; '.join(diffs)}")
