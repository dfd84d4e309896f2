"""Per-map errors of predicted reflectance UV maps against the ground truth, one value per face.

For every albedo map ``m`` in ``diffuse`` / ``specular`` (values in [0, 1]):

==================  ===========================================================================
``<m>_psnr``        PSNR, dB, data range 1 (torchmetrics)
``<m>_ssim``        SSIM, Gaussian window 11 / sigma 1.5, data range 1 (torchmetrics), in [-1, 1]
``<m>_lpips``       LPIPS between the maps scaled to [-1, 1] (only with a perceptual model)
``<m>_mae``         mean absolute difference over texels and channels, [0, 1] units
==================  ===========================================================================

and for the normal map (unit vectors): ``normals_angle_deg`` — the mean angle over the valid texels
(ground-truth normal of length > 0.5), degrees — plus ``normals_psnr`` / ``normals_ssim`` /
``normals_lpips`` / ``normals_mae`` of the maps mapped to colours ``(n + 1) / 2``.

Predicted albedos are clamped to [0, 1] and normals renormalised before scoring. A grey (1-channel)
specular prediction against an RGB ground truth (or the reverse) is compared as its channel mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from fitdiff.metrics.angular import angular_error

__all__ = ["REFLECTANCE_MAPS", "map_metric_names", "reflectance_errors"]

#: the reflectance maps, in the latent's branch order
REFLECTANCE_MAPS: tuple[str, ...] = ("diffuse", "specular", "normals")

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def map_metric_names(lpips: bool = True) -> list[str]:
    """The keys :func:`reflectance_errors` returns, in column order."""
    names: list[str] = []
    for m in REFLECTANCE_MAPS:
        if m == "normals":
            names.append("normals_angle_deg")
        names += [f"{m}_psnr", f"{m}_ssim"] + ([f"{m}_lpips"] if lpips else []) + [f"{m}_mae"]
    return names


def _match_channels(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if pred.shape[1] == target.shape[1]:
        return pred
    return pred.mean(1, keepdim=True).expand_as(target)


def _lpips_input(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] maps -> [-1, 1], grey maps repeated to 3 channels."""
    x = x * 2.0 - 1.0
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def reflectance_errors(
    pred: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    lpips: Perceptual | None = None,
) -> dict[str, torch.Tensor]:
    """Metric name -> (B,) float64 CPU values (module docstring).

    Args:
        pred, target: map name -> (B, C, R, R): ``diffuse`` / ``specular`` in [0, 1], ``normals`` unit
            vectors; the prediction on any device, the target moved to it.
        lpips: ``(x, y in [-1, 1], (B, 3, R, R)) -> (B,)`` perceptual distance, or None to skip LPIPS.
    """
    out: dict[str, torch.Tensor] = {}
    for m in REFLECTANCE_MAPS:
        if m not in pred or m not in target:
            raise KeyError(f"reflectance_errors: map {m!r} missing (prediction {sorted(pred)}, target {sorted(target)})")
        p = pred[m].float()
        t = target[m].to(p.device, torch.float32)
        if p.shape[0] != t.shape[0] or p.shape[-2:] != t.shape[-2:]:
            raise ValueError(f"{m}: prediction {tuple(p.shape)} and ground truth {tuple(t.shape)} differ")
        if m == "normals":
            p = F.normalize(p, dim=1)
            angle = angular_error(p, t, degrees=True)
            valid = (t.norm(dim=1) > 0.5).to(angle.dtype)
            out["normals_angle_deg"] = (angle * valid).sum((1, 2)) / valid.sum((1, 2)).clamp(min=1)
            p, t = (p + 1.0) * 0.5, (t + 1.0) * 0.5
        else:
            p = _match_channels(p.clamp(0.0, 1.0), t)
        out[f"{m}_psnr"] = peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))
        out[f"{m}_ssim"] = structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
        if lpips is not None:
            out[f"{m}_lpips"] = lpips(_lpips_input(p), _lpips_input(t)).reshape(-1)
        out[f"{m}_mae"] = (p - t).abs().mean((1, 2, 3))
    names = map_metric_names(lpips is not None)
    return {k: out[k].detach().double().cpu() for k in names}
