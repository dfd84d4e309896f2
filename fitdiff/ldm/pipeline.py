"""From noise to a face: the denoiser, the frozen autoencoder and the latent layout and statistics together.

:class:`FitDiffPipeline` is what sampling, evaluation and guided reconstruction use::

    pipe = FitDiffPipeline.from_checkpoint("RUN/checkpoints/last.ckpt")      # EMA weights by default
    z0 = pipe.sample(16, identity=emb, sampler=Sampler(DDIMScheduler(**LDM_LINEAR), 50),
                     guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    face = pipe.decode(z0)       # face.maps["diffuse"] (B, 3, R, R) in [0, 1], face.shape (B, K) std units

Spaces: the diffusion runs on the *normalised* packed latent (each channel standardised with the
train-split statistics, padding exactly 0); :meth:`FitDiffPipeline.decode` denormalises, unpacks the
branch latents and shape coefficients, and decodes the maps (quantising first, as the autoencoder's
decoder was trained). :meth:`decode` is differentiable, which is what facial guidance needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from fitdiff.autoencoder.branched import BranchedVQAutoencoder
from fitdiff.diffusion import Sampler, cfg_model_fn
from fitdiff.ldm.latent_stats import LatentStats
from fitdiff.ldm.layout import LatentLayout

__all__ = ["DecodedFace", "FitDiffPipeline"]


@dataclass
class DecodedFace:
    """A decoded latent.

    Attributes:
        maps: map name -> (B, C, R, R) data-space UV map (albedos in [0, 1], normals unit vectors).
        shape: (B, K) PCA coefficients in std units.
        z_maps: (B, C_maps, h, w) denormalised branch latents (pre-quantisation space).
    """

    maps: dict[str, torch.Tensor]
    shape: torch.Tensor
    z_maps: torch.Tensor


class FitDiffPipeline(nn.Module):
    """Sample normalised latents with a conditioned denoiser and decode them to maps and shape.

    Args:
        denoiser: ``model(x_t, t, cond, uncond_mask) -> output`` (:class:`~fitdiff.ldm.unet.ConditionedUNet`).
        autoencoder: the frozen branched autoencoder whose latents were diffused.
        layout: the packing of branch latents and shape coefficients.
        stats: per-channel statistics of the packed latent (train split).
        prediction_type: what the denoiser predicts (``epsilon``, ``v_prediction`` or ``sample``).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        autoencoder: BranchedVQAutoencoder,
        layout: LatentLayout,
        stats: LatentStats,
        prediction_type: str = "epsilon",
    ) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.autoencoder = autoencoder
        self.layout = layout
        self.stats = stats
        self.prediction_type = prediction_type

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the packed latent."""
        return self.layout.channels, self.layout.height, self.layout.width

    def encode(self, maps: dict[str, torch.Tensor], shape: torch.Tensor) -> torch.Tensor:
        """Data-space maps (B, C, R, R) and (B, K) shape -> normalised packed latent (B, C, H, W)."""
        z_maps = self.autoencoder.encode(maps)
        return self.stats.normalize(self.layout.pack(z_maps, shape))

    def decode(self, z: torch.Tensor, quantize: bool = True) -> DecodedFace:
        """Normalised packed latent (B, C, H, W) -> :class:`DecodedFace` (differentiable)."""
        z_maps, shape = self.layout.unpack(self.stats.denormalize(z))
        maps = self.autoencoder.decode(z_maps, quantize=quantize)
        return DecodedFace(maps=maps, shape=shape, z_maps=z_maps)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        sampler: Sampler,
        identity: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        hook: Any = None,
        x_T: torch.Tensor | None = None,
        shape_temperature: float = 1.0,
    ) -> torch.Tensor:
        """``n`` normalised latents (n, C, H, W): the denoised estimate of the last step, padding 0.

        Args:
            n: number of samples.
            sampler: scheduler, step count and eta.
            identity: (n, D) or (D,) unit-norm embeddings; None samples unconditionally (null embedding).
            guidance_scale: classifier-free guidance s (eps_u + s (eps_c - eps_u)); 1 = conditional only;
                ignored when ``identity`` is None.
            generator: the noise source (CPU generator: the same samples on every device).
            hook: the sampler's per-step hook (guided reconstruction).
            x_T: start noise instead of drawing it.
            shape_temperature: factor on the start noise of the shape channels (drawn or given), in
                [0, 1]: 1 samples the shape, 0 starts it from the noise's mean, so deterministic DDIM
                carries it to (for Gaussian coefficients, exactly) the conditional mean shape, the
                least-squares estimate of what the embedding leaves undetermined. The maps keep
                their noise.
        """
        device = next(self.denoiser.parameters()).device
        cond = None
        if identity is not None:
            cond = identity.to(device=device, dtype=torch.float32)
            if cond.dim() == 1:
                cond = cond.expand(n, -1)
            if cond.shape[0] != n:
                raise ValueError(f"identity has {cond.shape[0]} rows for {n} samples")
        model_fn = cfg_model_fn(self.denoiser, cond, guidance_scale if cond is not None else 1.0)
        if not 0.0 <= shape_temperature <= 1.0:
            raise ValueError(f"shape_temperature must be in [0, 1], got {shape_temperature}")
        if shape_temperature != 1.0:
            if x_T is None:  # the draw the sampler would make, so only the shape channels change
                x_T = randn_tensor((n, *self.latent_shape), generator=generator, device=device)
            x_T = x_T.clone()
            x_T[:, self.layout.shape_slice] *= shape_temperature
        result = sampler.sample(model_fn, (n, *self.latent_shape), generator=generator,
                                prediction_type=self.prediction_type, hook=hook, x_T=x_T, device=device)
        # the last step's denoised estimate: with set_alpha_to_one=False (the latent-diffusion DDIM
        # convention) the final sample x_0 still carries sqrt(1 - alpha_bar_0) = 0.039 of predicted noise
        return self.layout.apply_mask(result.pred_x0)

    @classmethod
    def from_checkpoint(cls, path: str | Path, ema: bool = True, map_location: str | torch.device = "cpu"
                        ) -> FitDiffPipeline:
        """The pipeline of a :class:`~fitdiff.ldm.module.LatentDiffusionModule` checkpoint (``.ckpt``).

        Args:
            path: Lightning checkpoint, read with ``torch.load(weights_only=True)``.
            ema: use the averaged denoiser weights (the raw ones otherwise).
        """
        from fitdiff.ldm.module import LatentDiffusionModule

        module = LatentDiffusionModule.load_checkpoint(path, map_location=map_location)
        return module.pipeline(ema=ema)
