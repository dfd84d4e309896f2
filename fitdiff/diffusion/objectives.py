"""Training target, per-sample loss and the conversions between the three prediction types.

With ᾱ_t from the training scheduler and x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε (diffusers' ``add_noise``):

=================  =============================  ===================================  =========================
prediction_type    the network predicts           x0 from the output o                 min-SNR weight (γ)
=================  =============================  ===================================  =========================
``epsilon``        ε                              (x_t − √(1 − ᾱ)·o) / √ᾱ              min(SNR, γ) / SNR
``v_prediction``   v = √ᾱ·ε − √(1 − ᾱ)·x0         √ᾱ·x_t − √(1 − ᾱ)·o                  min(SNR, γ) / (SNR + 1)
``sample``         x0                             o                                    min(SNR, γ)
=================  =============================  ===================================  =========================

SNR_t = ᾱ_t / (1 − ᾱ_t). These are the definitions of diffusers (``get_velocity``, and the ``step`` of
DDIM / DDPM / DPM-Solver with the same ``prediction_type``), so a model trained here samples correctly
with a diffusers scheduler configured with its prediction type. The min-SNR weights (Hang et al. 2023,
"Efficient Diffusion Training via Min-SNR Weighting Strategy") make every type's loss equal to
min(SNR, γ)·‖x̂0 − x0‖², the x0 error clipped at SNR γ (γ = 5 in the paper).

Coefficients are gathered from ``alphas_cumprod`` (1-D, float64 preferred) and computed in float64, then
cast to the tensors' dtype and device; timesteps ``t`` are integers, a scalar or shape (B,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

__all__ = [
    "PREDICTION_TYPES",
    "DiffusionObjective",
    "PredictionType",
    "masked_mean",
    "min_snr_weight",
    "output_from_eps",
    "output_from_x0",
    "predict_eps",
    "predict_x0",
    "snr",
    "target",
]

Tensor = torch.Tensor
PredictionType = Literal["epsilon", "v_prediction", "sample"]
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)


def _check_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}; got {prediction_type!r}")


def _alpha_bar(t: torch.Tensor | int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ᾱ_t in float64 (or the table's dtype where the device has no float64), shape (B,) or ()."""
    table = alphas_cumprod
    if table.ndim != 1:
        raise ValueError(f"alphas_cumprod must be 1-D, got shape {tuple(table.shape)}")
    t = torch.as_tensor(t)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"timesteps must be integers (indices into alphas_cumprod), got dtype {t.dtype}")
    if t.device != table.device:
        t = t.to(table.device)
    if table.dtype != torch.float64 and table.device.type != "mps":
        table = table.to(torch.float64)
    return table[t.long()]


def _coef(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample coefficients (B,) or () shaped to broadcast against ``like`` (B, ...), in its dtype."""
    values = values.to(device=like.device, dtype=like.dtype)
    if values.ndim == 0:
        return values
    if values.shape[0] != like.shape[0]:
        raise ValueError(f"timesteps have batch size {values.shape[0]}, the tensor {like.shape[0]}")
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


def _sqrt_coefs(t: torch.Tensor | int, alphas_cumprod: torch.Tensor, like: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(√ᾱ_t, √(1 − ᾱ_t)) broadcastable against ``like``."""
    ab = _alpha_bar(t, alphas_cumprod)
    return _coef(ab.sqrt(), like), _coef((1 - ab).sqrt(), like)


def snr(t: torch.Tensor | int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t), float64, shape of ``t``."""
    ab = _alpha_bar(t, alphas_cumprod)
    return ab / (1 - ab)


def min_snr_weight(prediction_type: str, t: torch.Tensor | int, alphas_cumprod: torch.Tensor,
                   gamma: float | None) -> torch.Tensor:
    """Min-SNR-γ loss weight per timestep (float64, shape of ``t``); all ones when ``gamma`` is None."""
    _check_type(prediction_type)
    ratio = snr(t, alphas_cumprod)
    if gamma is None:
        return torch.ones_like(ratio)
    clipped = ratio.clamp(max=gamma)
    if prediction_type == "epsilon":
        return clipped / ratio
    if prediction_type == "v_prediction":
        return clipped / (ratio + 1)
    return clipped


def target(prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int,
           alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """What the network should output for x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·noise: ε, v or x0 (shape of x0)."""
    _check_type(prediction_type)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    a, s = _sqrt_coefs(t, alphas_cumprod, x0)
    return a * noise - s * x0


def predict_x0(prediction_type: str, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
               alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x̂0 from the network output at x_t (differentiable in both)."""
    _check_type(prediction_type)
    if prediction_type == "sample":
        return output
    a, s = _sqrt_coefs(t, alphas_cumprod, x_t)
    if prediction_type == "epsilon":
        return (x_t - s * output) / a
    return a * x_t - s * output


def predict_eps(prediction_type: str, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ε̂ from the network output at x_t (differentiable in both)."""
    _check_type(prediction_type)
    if prediction_type == "epsilon":
        return output
    a, s = _sqrt_coefs(t, alphas_cumprod, x_t)
    if prediction_type == "sample":
        return (x_t - a * output) / s
    return a * output + s * x_t


def output_from_x0(prediction_type: str, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                   alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The network output that would predict ``x0`` at x_t (inverse of :func:`predict_x0`)."""
    _check_type(prediction_type)
    if prediction_type == "sample":
        return x0
    a, s = _sqrt_coefs(t, alphas_cumprod, x_t)
    eps = (x_t - a * x0) / s
    if prediction_type == "epsilon":
        return eps
    return a * eps - s * x0


def output_from_eps(prediction_type: str, eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                    alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The network output that would predict noise ``eps`` at x_t (inverse of :func:`predict_eps`)."""
    _check_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    a, s = _sqrt_coefs(t, alphas_cumprod, x_t)
    x0 = (x_t - s * eps) / a
    if prediction_type == "sample":
        return x0
    return a * eps - s * x0


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` (B, ...) over all but the batch dimension, counting only where ``mask`` is 1.

    ``mask`` broadcasts to ``values`` (e.g. (1, C, H, W) or (B, 1, H, W)), 1 = counted, 0 = ignored
    (fractional values weight elements). A sample with nothing counted has mean 0. Returns (B,).
    """
    if mask is None:
        return values.flatten(1).mean(dim=1)
    mask = mask.to(device=values.device, dtype=values.dtype)
    try:
        mask = torch.broadcast_to(mask, values.shape)
    except RuntimeError as exc:
        raise ValueError(f"loss mask of shape {tuple(mask.shape)} does not broadcast to {tuple(values.shape)}") from exc
    total = (values * mask).flatten(1).sum(dim=1)
    count = mask.flatten(1).sum(dim=1)
    return total / count.clamp(min=torch.finfo(values.dtype).tiny)


@dataclass
class DiffusionObjective:
    """What the denoiser predicts and how its loss is weighted (a ``_target_`` node in model configs).

    Args:
        prediction_type: ``epsilon`` (ε), ``v_prediction`` (v = √ᾱ·ε − √(1 − ᾱ)·x0) or ``sample`` (x0).
        min_snr_gamma: γ of min-SNR weighting (5.0 in Hang et al. 2023); None = unweighted MSE.

    All methods take integer timesteps ``t`` (B,) and ``alphas_cumprod`` (1-D, from
    :func:`fitdiff.diffusion.schedule.alphas_cumprod` of the training scheduler).
    """

    prediction_type: PredictionType = "epsilon"
    min_snr_gamma: float | None = None

    def __post_init__(self) -> None:
        _check_type(self.prediction_type)
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be positive or None, got {self.min_snr_gamma!r}")

    def target(self, x0: Tensor, noise: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
        """Regression target for the network output (shape of x0)."""
        return target(self.prediction_type, x0, noise, t, alphas_cumprod)

    def weight(self, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
        """Per-sample loss weight (B,), float64: min-SNR-γ, or ones."""
        return min_snr_weight(self.prediction_type, t, alphas_cumprod, self.min_snr_gamma)

    def loss(self, output: Tensor, x0: Tensor, noise: Tensor, t: Tensor,
             alphas_cumprod: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-sample loss (B,): weight_t · mean over counted elements of (output − target)².

        Computed in at least float32 (bf16 / fp16 outputs are upcast). ``mask`` broadcasts to x0:
        1 = counted, 0 = padding. Take ``.mean()`` for the batch loss.
        """
        dtype = torch.promote_types(output.dtype, torch.float32)
        goal = self.target(x0.to(dtype), noise.to(dtype), t, alphas_cumprod)
        per_sample = masked_mean((output.to(dtype) - goal).square(), mask)
        return per_sample * self.weight(t, alphas_cumprod).to(device=per_sample.device, dtype=dtype)

    def predict_x0(self, output: Tensor, x_t: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
        """x̂0 from the network output at x_t."""
        return predict_x0(self.prediction_type, output, x_t, t, alphas_cumprod)

    def predict_eps(self, output: Tensor, x_t: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
        """ε̂ from the network output at x_t."""
        return predict_eps(self.prediction_type, output, x_t, t, alphas_cumprod)

    def output_from_x0(self, x0: Tensor, x_t: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
        """The network output that would give ``x0`` at x_t."""
        return output_from_x0(self.prediction_type, x0, x_t, t, alphas_cumprod)

    def output_from_eps(self, eps: Tensor, x_t: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
        """The network output that would give noise ``eps`` at x_t."""
        return output_from_eps(self.prediction_type, eps, x_t, t, alphas_cumprod)
