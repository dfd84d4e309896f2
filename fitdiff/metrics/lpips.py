"""LPIPS (VGG) perceptual distance with the backbone loaded from the project's asset store.

Inputs are images or UV maps scaled to [-1, 1]; distances are >= 0, 0 for identical inputs, larger for
perceptually more different ones.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from fitdiff.io import load_state_dict

__all__ = ["build_lpips", "PerceptualLoss"]

log = logging.getLogger(__name__)

#: VGG-16 ``features`` indices held by each slice of lpips' vgg16 wrapper (slice1 = 0..3, ...)
_VGG_SLICES = ((1, 0, 4), (2, 4, 9), (3, 9, 16), (4, 16, 23), (5, 23, 30))


def _vgg_features_to_slices(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ``vgg16`` state dict -> the keys of ``lpips.pretrained_networks.vgg16``."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "features":
            continue
        index = int(parts[1])
        for slice_no, start, stop in _VGG_SLICES:
            if start <= index < stop:
                out[f"slice{slice_no}.{index}.{parts[2]}"] = value
    return out


def build_lpips() -> nn.Module:
    """``lpips.LPIPS(net='vgg')``, frozen, in eval mode.

    The package's calibrated linear heads ship with it; the ImageNet VGG-16 backbone comes from the
    ``lpips_vgg16`` asset (``python -m fitdiff.assets fetch lpips_vgg16``). Without that file the backbone
    stays random and a warning says so: the loss then still trains, but is not the LPIPS of the
    literature and its values are not comparable.
    """
    import lpips

    from fitdiff.assets import AssetError, require

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notice for `pretrained=`
        model = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    try:
        path = require("lpips_vgg16")
    except AssetError as exc:
        log.warning("LPIPS: VGG-16 backbone weights not available, using a RANDOM backbone (%s)",
                    str(exc).splitlines()[0])
    else:
        state = load_state_dict(path, what="LPIPS VGG-16 backbone")
        model.net.load_state_dict(_vgg_features_to_slices(state), strict=True)
        log.info("LPIPS: VGG-16 backbone loaded from %s", path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class PerceptualLoss(nn.Module):
    """LPIPS distance per sample: two (B, C, H, W) model-space maps in [-1, 1] -> (B,).

    One-channel maps are repeated to RGB; three-channel maps are used as they are. The network stays in
    eval mode whatever the parent module's mode.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lpips = build_lpips()

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"LPIPS takes 1- or 3-channel maps, got {x.shape[1]} channels")
        return self.lpips(x, y).flatten()
