"""Encoder of one branch, in two parts: a stem that downsamples a map and a trunk that makes the latent.

The split lets a multi-branch model give every branch its own stem and, optionally, share one trunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fitdiff.autoencoder.blocks import Downsample, ResBlock, SelfAttention, group_norm

__all__ = ["EncoderStem", "EncoderTrunk"]


class EncoderStem(nn.Module):
    """Map -> features on the latent grid: (B, C_in, H, W) -> (B, ch * ch_mult[-1], H/f, W/f).

    The downsampling factor is ``f = 2 ** (len(ch_mult) - 1)``.

    Args:
        in_channels: channels of the input map.
        ch: base width.
        ch_mult: width multiplier per resolution level.
        num_res_blocks: residual blocks per level.
        dropout: dropout inside residual blocks.
    """

    def __init__(
        self, in_channels: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1)]
        width = ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(width, ch * mult, dropout))
                width = ch * mult
            if level < len(ch_mult) - 1:
                layers.append(Downsample(width))
        self.layers = nn.Sequential(*layers)
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class EncoderTrunk(nn.Module):
    """Features on the latent grid -> latent: (B, C, h, w) -> (B, latent_channels, h, w).

    Middle residual blocks (with self-attention when ``attention``), then norm, SiLU and a 3x3 conv.
    """

    def __init__(self, channels: int, latent_channels: int, attention: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ResBlock(channels, channels, dropout),
            SelfAttention(channels) if attention else nn.Identity(),
            ResBlock(channels, channels, dropout),
            group_norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, latent_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
