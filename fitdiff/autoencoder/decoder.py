"""Decoder of one branch, in two parts: a trunk that lifts the latent and a head that upsamples to a map.

The head's final convolution is the branch's "last layer", where the adaptive GAN weight is measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fitdiff.autoencoder.blocks import ResBlock, SelfAttention, Upsample, group_norm

__all__ = ["DecoderTrunk", "DecoderHead"]


class DecoderTrunk(nn.Module):
    """Latent -> features: (B, latent_channels, h, w) -> (B, channels, h, w).

    A 3x3 conv, then middle residual blocks (with self-attention when ``attention``).
    """

    def __init__(self, latent_channels: int, channels: int, attention: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(latent_channels, channels, 3, padding=1),
            ResBlock(channels, channels, dropout),
            SelfAttention(channels) if attention else nn.Identity(),
            ResBlock(channels, channels, dropout),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class DecoderHead(nn.Module):
    """Features on the latent grid -> map: (B, ch * ch_mult[-1], h, w) -> (B, out_channels, h*f, w*f).

    Mirrors :class:`~fitdiff.autoencoder.encoder.EncoderStem` (``f = 2 ** (len(ch_mult) - 1)``), with one
    extra residual block per level as in the VQGAN decoder. The output is unbounded (model space,
    about [-1, 1]).
    """

    def __init__(
        self, out_channels: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        width = ch * ch_mult[-1]
        layers: list[nn.Module] = []
        for level in reversed(range(len(ch_mult))):
            for _ in range(num_res_blocks + 1):
                layers.append(ResBlock(width, ch * ch_mult[level], dropout))
                width = ch * ch_mult[level]
            if level > 0:
                layers.append(Upsample(width))
        layers += [group_norm(width), nn.SiLU()]
        self.layers = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)
        self.in_channels = ch * ch_mult[-1]

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the final convolution (the adaptive GAN weight is computed here)."""
        return self.conv_out.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.layers(h))
