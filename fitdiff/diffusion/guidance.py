"""Classifier-free guidance (docs/DESIGN.md §5): ε̂ = ε_u + s·(ε_c − ε_u), both halves in one forward.

The denoiser is called as ``model(x, t, cond, uncond_mask)``: ``cond`` (B, D) embeddings or None,
``uncond_mask`` (B,) bool, True where the learned null embedding replaces ``cond`` (None = no sample
unconditional). The combination is linear, so it applies unchanged to ε-, v- and x0-predicting models
(at fixed x_t each is an affine function of the other).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

__all__ = ["ConditionalModel", "cfg_model_fn", "classifier_free"]


class ConditionalModel(Protocol):
    """A denoiser ``model(x (B, C, H, W), t (B,), cond (B, D) | None, uncond_mask (B,) bool | None)``."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None,
                 uncond_mask: torch.Tensor | None) -> torch.Tensor: ...


def _batch_timesteps(t: torch.Tensor | int | float, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"timesteps must be a scalar or of shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def classifier_free(model: ConditionalModel, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor | None,
                    scale: float) -> torch.Tensor:
    """Guided model output at (x, t) for condition ``cond`` and guidance scale ``scale``.

    - ``cond`` None: one unconditional forward (``scale`` is irrelevant);
    - ``scale == 1``: one conditional forward, the conditional output exactly;
    - ``scale == 0``: one forward with every sample unconditional;
    - otherwise one forward over the batch [x; x] with ``uncond_mask`` [False…; True…], then
      ε_u + s·(ε_c − ε_u).

    Args:
        model: the denoiser (see :class:`ConditionalModel`).
        x: (B, ...) noisy input x_t.
        t: timesteps, a scalar or (B,).
        cond: (B, D) condition (identity embedding) or None.
        scale: guidance scale s (1 = conditional, > 1 = stronger conditioning).
    """
    t = _batch_timesteps(t, x)
    if cond is None:
        return model(x, t, None, None)
    if cond.shape[0] != x.shape[0]:
        raise ValueError(f"cond has batch size {cond.shape[0]}, x has {x.shape[0]}")
    scale = float(scale)
    if scale == 1.0:
        return model(x, t, cond, None)
    if scale == 0.0:
        return model(x, t, cond, torch.ones(x.shape[0], dtype=torch.bool, device=x.device))
    batch = x.shape[0]
    mask = torch.arange(2 * batch, device=x.device) >= batch  # first half conditional, second null
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, cond]), mask)
    out_c, out_u = out[:batch], out[batch:]
    return out_u + scale * (out_c - out_u)


def cfg_model_fn(model: ConditionalModel, cond: torch.Tensor | None, scale: float = 1.0
                 ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``model_fn(x_t, t)`` for :meth:`fitdiff.diffusion.Sampler.sample`: ``model`` guided for ``cond``."""

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return classifier_free(model, x_t, t, cond, scale)

    return model_fn
