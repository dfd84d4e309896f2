"""Networks of the diffusion stage: the conditioned UNet denoiser and its conditioning variants.

- :class:`ConditionedUNet` — the denoiser ``(x_t, t, cond, uncond_mask) -> output`` (diffusers
  ``ModelMixin``: ``save_pretrained`` / ``from_pretrained`` as safetensors with its config).
- :data:`CONDITIONINGS` — ``spade`` (default), ``adagn``, ``crossattn``, ``concat``, ``none``.
- :class:`SPADEGroupNorm`, :class:`ConditionMap` — SPADE from a vector embedding (``spade.py``).
- :class:`LatentLayout`, :class:`LatentStats` — packing of branch latents + shape, per-channel statistics.
- :class:`LatentDiffusionModule` — the LightningModule (``module.py``); :class:`FitDiffPipeline` — sampling
  and decoding (``pipeline.py``); :class:`DenoiserEMA` (``ema.py``).
"""

from fitdiff.ldm.conditioning import CONDITIONINGS, ConditionContext
from fitdiff.ldm.ema import DenoiserEMA
from fitdiff.ldm.latent_stats import LatentStats
from fitdiff.ldm.layout import LatentLayout
from fitdiff.ldm.module import LatentDiffusionModule
from fitdiff.ldm.pipeline import DecodedFace, FitDiffPipeline
from fitdiff.ldm.spade import ConditionMap, SPADEGroupNorm, resize_map
from fitdiff.ldm.unet import NULL_EMBEDDING_NORM, ConditionedUNet, describe

__all__ = [
    "CONDITIONINGS",
    "ConditionContext",
    "ConditionMap",
    "ConditionedUNet",
    "DecodedFace",
    "DenoiserEMA",
    "FitDiffPipeline",
    "LatentDiffusionModule",
    "LatentLayout",
    "LatentStats",
    "NULL_EMBEDDING_NORM",
    "SPADEGroupNorm",
    "describe",
    "resize_map",
]
