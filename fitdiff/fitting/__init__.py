"""Guided reconstruction: from one photo to a relightable avatar (docs/DESIGN.md §6).

- :mod:`~fitdiff.fitting.camera_init` — camera from 2D landmarks (closed form + refinement);
- :mod:`~fitdiff.fitting.lighting_init` — SH lighting by least squares on a known albedo;
- :mod:`~fitdiff.fitting.scene_params` — the learnable camera and lights of a fit;
- :mod:`~fitdiff.fitting.losses` — the fitting loss (identity, LPIPS, landmarks, masked L1, prior);
- :mod:`~fitdiff.fitting.guidance` — the sampler hook, rules ``eps`` and ``x0``;
- :mod:`~fitdiff.fitting.optimize` — the optimisation fitter (and the final polish);
- :mod:`~fitdiff.fitting.reconstructor` — photos -> target, initialisation, method, result;
- :mod:`~fitdiff.fitting.presets` — ``experiments/fitting/*.yaml``.
"""

from fitdiff.fitting.camera_init import camera_from_landmarks
from fitdiff.fitting.guidance import GUIDANCE_RULES, FacialGuidance, GuidanceConfig
from fitdiff.fitting.lighting_init import sh_from_photo
from fitdiff.fitting.losses import FitLoss, FitTarget, LossWeights
from fitdiff.fitting.optimize import OptimizeConfig, optimize_latent
from fitdiff.fitting.presets import available_presets, load_preset
from fitdiff.fitting.reconstructor import FitConfig, Reconstruction, Reconstructor
from fitdiff.fitting.scene_params import SceneParameters

__all__ = [
    "GUIDANCE_RULES",
    "FacialGuidance",
    "FitConfig",
    "FitLoss",
    "FitTarget",
    "GuidanceConfig",
    "LossWeights",
    "OptimizeConfig",
    "Reconstruction",
    "Reconstructor",
    "SceneParameters",
    "available_presets",
    "camera_from_landmarks",
    "load_preset",
    "optimize_latent",
    "sh_from_photo",
]
