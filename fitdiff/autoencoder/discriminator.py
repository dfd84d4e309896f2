"""PatchGAN discriminator: one real/fake logit per overlapping patch."""

from __future__ import annotations

import torch
from torch import nn

from fitdiff.autoencoder.blocks import group_norm

__all__ = ["PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """(B, C, H, W) model-space maps -> (B, 1, h, w) logits, one per receptive-field patch.

    ``n_layers`` stride-2 4x4 convolutions (the first without norm), then two stride-1 4x4 convolutions;
    with ``n_layers=3`` a 256x256 input gives 30x30 logits (70x70 patches). Inputs must be at least
    ``2 ** (n_layers + 2)`` pixels on a side. GroupNorm rather than BatchNorm, so the result does not
    depend on the per-device batch size.

    Args:
        in_channels: channels of the maps judged.
        ch: width of the first layer (doubled per layer, at most 8x).
        n_layers: stride-2 layers.
    """

    def __init__(self, in_channels: int, ch: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = ch
        for i in range(1, n_layers + 1):
            out = ch * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride=stride, padding=1), group_norm(out), nn.LeakyReLU(0.2, True)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.min_size = 2 ** (n_layers + 2)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"PatchDiscriminator needs inputs of at least {self.min_size} pixels, got {x.shape}")
        return self.layers(x)
