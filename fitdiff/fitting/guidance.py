"""Facial guidance: a per-step hook of :class:`~fitdiff.diffusion.Sampler` that steers sampling to a photo.

At a guided step with timestep t, the hook decodes the predicted x̂0 (normalised packed latent) into
maps and shape with the pipeline's :meth:`~fitdiff.ldm.pipeline.FitDiffPipeline.decode` (the branch
latents are **quantised** first, as for the final avatar, with straight-through gradients), evaluates
:class:`~fitdiff.fitting.losses.FitLoss` L against the photo, and changes the model output:

- ``eps`` rule (universal guidance's forward rule): g = ∇_{x_t} L through the denoiser and the decoder
  (the sampler calls the model with x_t requiring grad);
  ε̂' = ε̂ + scale · √(1 − ᾱ_t) · g / RMS(g), and the output is re-expressed from ε̂' at x_t.
- ``x0`` rule (manifold-preserving style): g = ∇_{x̂0} L through the decoder only (no backward pass
  through the denoiser); x̂0' = x̂0 − scale · g / RMS(g), and the output (hence ε̂) is recomputed from
  x̂0' at x_t.

RMS is per sample over the latent's elements (padding has zero gradient), so ``scale`` is the size of the
step in units of the latent's per-channel std. The same backward pass gives the gradient of L with
respect to the camera and lights (:class:`~fitdiff.fitting.scene_params.SceneParameters`), which one
Adam step updates; ``scene_steps - 1`` further Adam steps refine them with x̂0 fixed. Before that, with
``relight`` on, the SH lights are re-solved in closed form for x̂0's albedo and normals.

Guided steps are those with ``start <= index / num_steps < stop`` (index 0 = the noisiest step); each is
run ``recurrence`` times (re-noised in between by the sampler; DDIM or DDPM only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fitdiff.diffusion import StepState
from fitdiff.fitting.lighting_init import sh_from_photo
from fitdiff.fitting.losses import FitLoss, FitTarget
from fitdiff.fitting.scene_params import SceneParameters
from fitdiff.ldm.pipeline import DecodedFace

__all__ = ["GUIDANCE_RULES", "GuidanceConfig", "FacialGuidance"]

log = logging.getLogger(__name__)

GUIDANCE_RULES = ("eps", "x0")
_RMS_FLOOR = 1e-12


@dataclass
class GuidanceConfig:
    """How guidance steers sampling (module docstring).

    Attributes:
        rule: ``"eps"`` or ``"x0"``.
        scale: step size (latent std units): w of the ``eps`` rule, ρ of the ``x0`` rule.
        start, stop: guided steps as fractions of the run, ``start <= index / num_steps < stop``.
        recurrence: runs of every guided step (1 = no recurrence).
        relight: before each guided step run, re-solve the SH lights in closed form for x̂0's albedo and
            normals (:func:`~fitdiff.fitting.lighting_init.sh_from_photo`); albedo and light trade off
            against each other, and lights fitted to an earlier albedo make the pixel term pull the
            albedo the wrong way.
        scene_steps: Adam steps on camera and lights per guided step run (0 = fixed).
        camera_lr: their learning rate of the camera (radians and fractions of the depth per step);
        light_lr: of the lights (SH coefficients, light direction, log intensity).
    """

    rule: str = "x0"
    scale: float = 0.1
    start: float = 0.0
    stop: float = 1.0
    recurrence: int = 1
    relight: bool = True
    scene_steps: int = 1
    camera_lr: float = 1e-3
    light_lr: float = 1e-2

    def __post_init__(self) -> None:
        if self.rule not in GUIDANCE_RULES:
            raise ValueError(f"guidance rule must be one of {', '.join(GUIDANCE_RULES)}, got {self.rule!r}")
        if not 0.0 <= self.start <= self.stop <= 1.0:
            raise ValueError(f"guided range must satisfy 0 <= start <= stop <= 1, got {self.start}, {self.stop}")
        if self.recurrence < 1 or self.scene_steps < 0:
            raise ValueError(f"recurrence must be >= 1 and scene_steps >= 0, got {self.recurrence}, "
                             f"{self.scene_steps}")


def _per_sample_rms(g: torch.Tensor) -> torch.Tensor:
    return g.pow(2).flatten(1).mean(1).sqrt().clamp(min=_RMS_FLOOR).view(-1, *([1] * (g.dim() - 1)))


class FacialGuidance:
    """The sampler hook (see the module docstring).

    Args:
        decode: normalised packed latent (B, C, H, W) -> :class:`~fitdiff.ldm.pipeline.DecodedFace`,
            differentiable (``FitDiffPipeline.decode``).
        loss: the fitting loss; params: camera and lights (refined in place); target: the photos.
        config: rule, scale, range, recurrence and scene refinement.

    Attributes:
        history: one dict per guided step run (index, t, loss terms averaged over the batch, total).
    """

    def __init__(self, decode: Callable[[torch.Tensor], DecodedFace], loss: FitLoss, params: SceneParameters,
                 target: FitTarget, config: GuidanceConfig) -> None:
        self.decode = decode
        self.loss = loss
        self.params = params
        self.target = target
        self.config = config
        groups = [{"params": params.camera_parameters(), "lr": config.camera_lr},
                  {"params": params.light_parameters(), "lr": config.light_lr}]
        self.scene_optimizer = torch.optim.Adam(groups) if config.scene_steps else None
        self.history: list[dict[str, float]] = []

    @property
    def needs_grad(self) -> bool:
        """The ``eps`` rule differentiates through the denoiser: the sampler must call it with grad."""
        return self.config.rule == "eps"

    def guided(self, index: int, num_steps: int) -> bool:
        """Whether step ``index`` of ``num_steps`` is guided."""
        return self.config.start <= index / num_steps < self.config.stop

    def repeats(self, index: int, num_steps: int) -> int:
        """Runs of step ``index`` (recurrence on guided steps)."""
        return self.config.recurrence if self.guided(index, num_steps) else 1

    def _loss(self, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        face = self.decode(z)
        self._relight(face)
        return self.loss(face.maps, face.shape, self.params, self.target)

    def _record(self, state: StepState, total: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        entry = {"index": state.index, "t": state.t, "total": float(total.detach().mean())}
        entry.update({k: float(v.detach().mean()) for k, v in terms.items()})
        self.history.append(entry)

    def _relight(self, face: DecodedFace) -> None:
        """The SH lights of ``face`` (detached), by least squares (``config.relight``)."""
        if not self.config.relight:
            return
        with torch.no_grad():
            sh = sh_from_photo(self.loss.scene, face.shape.detach(), face.maps["diffuse"].detach(),
                               face.maps["normals"].detach(), self.params.camera(), self.target.photo)
            self.params.sh.copy_(sh)

    def _refine_scene(self, z: torch.Tensor) -> None:
        """Further Adam steps on camera and lights with the latent ``z`` fixed."""
        if self.scene_optimizer is None or self.config.scene_steps < 2:
            return  # the guided step's own backward pass gave the one Adam step
        with torch.no_grad():
            face = self.decode(z)
        for _ in range(self.config.scene_steps - 1):
            with torch.enable_grad():
                self.scene_optimizer.zero_grad(set_to_none=True)
                total, _ = self.loss(face.maps, face.shape, self.params, self.target)
                total.sum().backward()
            self.scene_optimizer.step()

    def __call__(self, state: StepState) -> torch.Tensor | None:
        if not self.guided(state.index, state.num_steps):
            return None
        if self.scene_optimizer is not None:
            self.scene_optimizer.zero_grad(set_to_none=True)
        if self.config.rule == "eps":
            with torch.enable_grad():
                total, terms = self._loss(state.pred_x0)
                total.sum().backward(inputs=[state.x_t, *self._scene_inputs()])
            g = state.x_t.grad
            state.x_t.grad = None
            eps = state.pred_eps.detach() + self.config.scale * (1.0 - state.alpha_bar_t) ** 0.5 * g / _per_sample_rms(g)
            new_output = state.output_from_eps(eps).detach()
            x0 = state.pred_x0.detach()
        else:
            x0 = state.pred_x0.detach()
            with torch.enable_grad():
                leaf = x0.clone().requires_grad_(True)
                total, terms = self._loss(leaf)
                total.sum().backward(inputs=[leaf, *self._scene_inputs()])
            x0 = x0 - self.config.scale * leaf.grad / _per_sample_rms(leaf.grad)
            new_output = state.output_from_x0(x0).detach()
        self._record(state, total, terms)
        if self.scene_optimizer is not None:
            self.scene_optimizer.step()
            self._refine_scene(x0)
        return new_output

    def _scene_inputs(self) -> list[torch.Tensor]:
        if self.scene_optimizer is None:
            return []
        return self.params.camera_parameters() + self.params.light_parameters()
