"""Diffusion maths around diffusers' schedulers: no network state, device- and dtype-agnostic.

- :mod:`~fitdiff.diffusion.schedule` — the "ldm_linear" schedule (:data:`LDM_LINEAR`), the training
  :func:`training_scheduler` and the sampling presets :func:`ddim_scheduler`, :func:`ddpm_scheduler`,
  :func:`dpm_scheduler`; :func:`alphas_cumprod` (float64).
- :mod:`~fitdiff.diffusion.objectives` — :class:`DiffusionObjective`: training target and per-sample
  (masked, min-SNR-weighted) loss for ε-, v- and x0-prediction, and the conversions between them.
- :mod:`~fitdiff.diffusion.guidance` — :func:`classifier_free` in one batched forward, :func:`cfg_model_fn`.
- :mod:`~fitdiff.diffusion.sampling` — :class:`Sampler` (the loop with its per-step hook),
  :class:`StepState`, :class:`SampleResult`.
"""

from fitdiff.diffusion.guidance import ConditionalModel, cfg_model_fn, classifier_free
from fitdiff.diffusion.objectives import (
    PREDICTION_TYPES,
    DiffusionObjective,
    PredictionType,
    masked_mean,
    min_snr_weight,
    output_from_eps,
    output_from_x0,
    predict_eps,
    predict_x0,
    snr,
    target,
)
from fitdiff.diffusion.sampling import ModelFn, Sampler, SampleResult, StepHook, StepState, previous_alpha_bar
from fitdiff.diffusion.schedule import (
    DDIM_PRESET,
    DDPM_PRESET,
    DPM_PRESET,
    LDM_LINEAR,
    alphas_cumprod,
    check_same_schedule,
    ddim_scheduler,
    ddpm_scheduler,
    dpm_scheduler,
    training_scheduler,
)

__all__ = [
    "ConditionalModel",
    "DDIM_PRESET",
    "DDPM_PRESET",
    "DPM_PRESET",
    "DiffusionObjective",
    "LDM_LINEAR",
    "ModelFn",
    "PREDICTION_TYPES",
    "PredictionType",
    "SampleResult",
    "Sampler",
    "StepHook",
    "StepState",
    "alphas_cumprod",
    "cfg_model_fn",
    "previous_alpha_bar",
    "check_same_schedule",
    "classifier_free",
    "ddim_scheduler",
    "ddpm_scheduler",
    "dpm_scheduler",
    "masked_mean",
    "min_snr_weight",
    "output_from_eps",
    "output_from_x0",
    "predict_eps",
    "predict_x0",
    "snr",
    "target",
    "training_scheduler",
]
