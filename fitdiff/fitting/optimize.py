"""Fitting by direct optimisation: Adam on the latent, the camera and the lights (the FitMe-style peer).

:func:`optimize_latent` minimises :class:`~fitdiff.fitting.losses.FitLoss` over the normalised packed
latent z (branch latents and shape coefficients together, decoded by the same autoencoder, quantised
with straight-through gradients) and, jointly, the camera and lights of
:class:`~fitdiff.fitting.scene_params.SceneParameters`. Started from z = 0 (every channel at its
training mean: the mean face and mean reflectance) it is the optimisation-based baseline that guided
sampling is measured against; started from a sample it is the optional final polish of guided
reconstruction. No diffusion prior is involved, only the loss's own coefficient prior and, with
``anchor > 0``, a pull of the shape coefficients towards those the start latent decodes to:
``anchor * mean_k (c_k - c_k^start)^2`` (std units; from a guided sample it keeps what the identity
conditioning put into the shape where the photo does not constrain it; from z = 0 it is a second prior
towards the mean face).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fitdiff.fitting.losses import FitLoss, FitTarget
from fitdiff.fitting.scene_params import SceneParameters
from fitdiff.ldm.pipeline import DecodedFace

__all__ = ["OptimizeConfig", "optimize_latent"]


@dataclass
class OptimizeConfig:
    """Budget and step sizes of :func:`optimize_latent`.

    Attributes:
        steps: Adam steps (each one render, one loss and one backward pass per photo).
        lr: learning rate of the latent (normalised units).
        camera_lr, light_lr: learning rates of the camera (radians, depth fractions) and light updates
            (0 = fixed).
        anchor: weight of the pull of the shape coefficients towards the start latent's (0 = none).
    """

    steps: int = 50
    lr: float = 0.05
    camera_lr: float = 1e-3
    light_lr: float = 1e-2
    anchor: float = 0.0

    def __post_init__(self) -> None:
        if min(self.steps, self.lr, self.camera_lr, self.light_lr, self.anchor) < 0:
            raise ValueError(f"steps and learning rates must be >= 0, got {self}")


def optimize_latent(
    z: torch.Tensor,
    decode: Callable[[torch.Tensor], DecodedFace],
    loss: FitLoss,
    params: SceneParameters,
    target: FitTarget,
    config: OptimizeConfig,
    mask: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Optimise ``z`` (and ``params`` in place) for ``config.steps`` Adam steps.

    Args:
        z: (B, C, H, W) start latent (normalised packed), not modified.
        decode: latent -> :class:`DecodedFace`, differentiable.
        loss, params, target: the fitting loss, camera and lights, photos.
        config: steps and learning rates.
        mask: zeroes the layout's padding after every step (``LatentLayout.apply_mask``).
        progress: called as ``progress(step, mean total loss)`` after every step.

    Returns:
        The optimised latent (detached) and one dict of batch-mean loss terms per step.
    """
    latent = z.detach().clone().requires_grad_(True)
    groups = [{"params": [latent], "lr": config.lr}]
    if config.camera_lr > 0:
        groups.append({"params": params.camera_parameters(), "lr": config.camera_lr})
    if config.light_lr > 0:
        groups.append({"params": params.light_parameters(), "lr": config.light_lr})
    optimizer = torch.optim.Adam(groups)
    start = None  # the start latent's shape: decoded by the first step, before any update
    history: list[dict[str, float]] = []
    for step in range(config.steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            face = decode(latent)
            total, terms = loss(face.maps, face.shape, params, target)
            if config.anchor > 0:
                if start is None:
                    start = face.shape.detach()
                terms = {**terms, "anchor": (face.shape - start).pow(2).mean(1)}
                total = total + config.anchor * terms["anchor"]
            total.sum().backward()
        optimizer.step()
        if mask is not None:
            with torch.no_grad():
                latent.copy_(mask(latent))
        entry = {"step": step, "total": float(total.detach().mean())}
        entry.update({k: float(v.detach().mean()) for k, v in terms.items()})
        history.append(entry)
        if progress is not None:
            progress(step + 1, entry["total"])
    return latent.detach(), history
