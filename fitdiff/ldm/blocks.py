"""Denoiser building blocks: timestep embedding, residual block, attention, resampling, one UNet stage.

Every block that normalises takes a ``make_norm(channels) -> module`` factory, so the conditioning
variant (``fitdiff/ldm/conditioning.py``) decides what a norm is; every norm is called as
``norm(x, ctx)`` with the per-forward :class:`~fitdiff.ldm.conditioning.ConditionContext`.
Zero-initialised output layers (the residual branch's last conv, attention's output projection) make
every block start as the identity on its skip path, as in latent diffusion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# the same resampling as the autoencoder's (strided conv down, nearest + conv up)
from fitdiff.autoencoder.blocks import Downsample, Upsample

__all__ = [
    "AttentionBlock",
    "Downsample",
    "NormFactory",
    "ResBlock",
    "Stage",
    "TimestepEmbedding",
    "Upsample",
    "sinusoidal_embedding",
    "zero_",
]

NormFactory = Callable[[int], nn.Module]


def zero_(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero in place and return it."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Timesteps (B,) int or float -> (B, dim) float32 ``[cos(t f_i) | sin(t f_i)]``, f_i = max_period^(-i / (dim/2)).

    The layout matches diffusers' ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    """Timesteps (B,) -> (B, embed_dim): sinusoidal features of size ``channels``, then Linear-SiLU-Linear."""

    def __init__(self, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.linear_1 = nn.Linear(channels, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_embedding(t, self.channels).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


class ResBlock(nn.Module):
    """Residual block with timestep scale-shift: (B, C_in, H, W) -> (B, C_out, H, W).

    norm -> SiLU -> conv3x3 -> norm, then ``h * (1 + scale) + shift`` with (scale, shift) a linear map of
    the (already SiLU-activated) timestep embedding -> SiLU -> dropout -> conv3x3 (zero-initialised),
    plus the skip (identity, or a 1x1 conv when C_in != C_out).
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, make_norm: NormFactory,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_1 = make_norm(in_channels)
        self.conv_1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(embed_dim, 2 * out_channels)
        self.norm_2 = make_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, ctx: Any) -> torch.Tensor:
        """``emb``: (B, embed_dim) timestep embedding after SiLU; ``ctx``: the condition context."""
        h = self.conv_1(F.silu(self.norm_1(x, ctx)))
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, self.norm_2(h, ctx), 1 + scale)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


def _heads(channels: int, num_heads: int, head_channels: int | None) -> int:
    if head_channels is not None:
        if channels % head_channels:
            raise ValueError(f"head_channels={head_channels} does not divide the {channels} channels of an "
                             "attention block")
        return channels // head_channels
    if channels % num_heads:
        raise ValueError(f"num_heads={num_heads} does not divide the {channels} channels of an attention block")
    return num_heads


class AttentionBlock(nn.Module):
    """Spatial self-attention (optionally followed by cross-attention to condition tokens): (B, C, H, W) -> same.

    Self-attention: norm -> fused qkv projection -> ``scaled_dot_product_attention`` over the H*W positions
    with ``heads`` heads -> output projection (zero-initialised) -> residual. With ``context_dim`` set, a
    second residual step attends from the positions (a second norm, query projection) to ``ctx.tokens``
    (B, T, context_dim) (key/value projections), its output projection zero-initialised too.
    """

    def __init__(self, channels: int, make_norm: NormFactory, num_heads: int = 4, head_channels: int | None = None,
                 context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = _heads(channels, num_heads, head_channels)
        self.norm = make_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = zero_(nn.Linear(channels, channels))
        self.cross = (CrossAttention(channels, context_dim, self.heads, make_norm) if context_dim is not None
                      else None)

    def forward(self, x: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x, ctx).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        x = x + self.proj_out(out).transpose(1, 2).reshape(b, c, h, w)
        if self.cross is not None:
            x = self.cross(x, ctx)
        return x


class CrossAttention(nn.Module):
    """Residual cross-attention from spatial positions (B, C, H, W) to condition tokens (B, T, context_dim)."""

    def __init__(self, channels: int, context_dim: int, heads: int, make_norm: NormFactory) -> None:
        super().__init__()
        self.heads = heads
        self.norm = make_norm(channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(context_dim, 2 * channels)
        self.proj_out = zero_(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """``ctx.tokens``: (B, T, context_dim)."""
        tokens = ctx.tokens
        b, c, h, w = x.shape
        d = c // self.heads
        q = self.to_q(self.norm(x, ctx).flatten(2).transpose(1, 2)).view(b, h * w, self.heads, d).transpose(1, 2)
        k, v = self.to_kv(tokens.to(q.dtype)).view(b, tokens.shape[1], 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.proj_out(out).transpose(1, 2).reshape(b, c, h, w)


class Stage(nn.Module):
    """One step of the UNet: an optional ResBlock, then optional attention, then optional resampling.

    The unit of gradient checkpointing: ``forward(x, emb, ctx)`` with ``emb`` the SiLU-activated timestep
    embedding (B, E) and ``ctx`` the condition context.
    """

    def __init__(self, res: ResBlock | None = None, attn: AttentionBlock | None = None,
                 resample: nn.Module | None = None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn
        self.resample = resample

    def forward(self, x: torch.Tensor, emb: torch.Tensor, ctx: Any) -> torch.Tensor:
        if self.res is not None:
            x = self.res(x, emb, ctx)
        if self.attn is not None:
            x = self.attn(x, ctx)
        if self.resample is not None:
            x = self.resample(x)
        return x
