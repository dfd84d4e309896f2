"""How the identity embedding enters the denoiser: one switch, five variants (ablations of SPADE).

Each variant is a :class:`Conditioner`: a module that turns the embedding (B, D) into a
:class:`ConditionContext` once per forward, plus a ``make_norm(channels)`` factory for every norm of
the UNet. Every path from the embedding into the features ends in a zero-initialised layer, so at
initialisation the output does not depend on the embedding (exactly, not approximately).

- ``spade``: spatial (1 + gamma), beta on every norm from a low-resolution map (``fitdiff/ldm/spade.py``).
- ``adagn``: the same modulation with a vector: embedding -> MLP -> (B, E) -> per-norm Linear (zero init)
  -> per-channel (gamma, beta); no spatial variation.
- ``crossattn``: embedding -> ``cross_tokens`` tokens (B, T, E); every attention block adds
  cross-attention to them after its self-attention (zero-initialised output projection). Needs at least
  one attention resolution.
- ``concat``: embedding -> low-resolution map (as ``spade``) -> bilinear to the latent grid -> a 3x3 conv
  (zero init) added to the input conv's output, which is the same as concatenating the map to the input
  channels of that conv.
- ``none``: the embedding is ignored; plain GroupNorm with affine everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fitdiff.ldm.blocks import zero_
from fitdiff.ldm.spade import ConditionMap, SPADEGroupNorm, enlarge_matrix, resize_map, working_size

__all__ = [
    "CONDITIONINGS",
    "AdaGroupNorm",
    "ConditionContext",
    "Conditioner",
    "GroupNorm",
    "build_conditioner",
]

CONDITIONINGS = ("spade", "adagn", "crossattn", "concat", "none")


@dataclass
class ConditionContext:
    """What the blocks read of the condition in one forward.

    ``maps``: condition map per feature size (H, W), at :func:`~fitdiff.ldm.spade.working_size`
    (``spade``); ``vector``: (B, E) (``adagn``);
    ``tokens``: (B, T, E) (``crossattn``); ``input_map``: (B, C_map, H, W) at the latent size (``concat``).
    """

    maps: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    base_map: torch.Tensor | None = None
    vector: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    input_map: torch.Tensor | None = None
    _enlarge: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    def map_at(self, size: tuple[int, int]) -> torch.Tensor:
        """The condition map for feature size ``size``; resized now if it was not prepared."""
        cmap = self.maps.get(size)
        if cmap is None:
            if self.base_map is None:
                raise RuntimeError("a SPADE norm ran without a condition map in its context")
            cmap = resize_map(self.base_map, working_size(size, tuple(self.base_map.shape[-2:])))
        return cmap

    def enlarge(self, field_: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Field (B, C, h, w) -> (B, C, *size) by bilinear resampling (``align_corners=False``).

        Small sources (h * w <= 64: the SPADE working grid) go through one matrix product with the
        Kronecker product of the two 1-D resampling matrices, cached per size, dtype and device for
        this forward: several times faster than ``F.interpolate`` in backward on CPU, and the same
        numbers to float rounding. Larger ones use ``F.interpolate``.
        """
        src = tuple(field_.shape[-2:])
        if src == tuple(size):
            return field_
        if src[0] * src[1] > 64 or size[0] < src[0] or size[1] < src[1]:
            return resize_map(field_, size)
        key = (src, tuple(size), field_.dtype, field_.device)
        matrix = self._enlarge.get(key)
        if matrix is None:
            matrix = self._enlarge[key] = enlarge_matrix(src, size, field_.dtype, field_.device)
        return (field_.flatten(2) @ matrix.T).unflatten(2, size)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (affine) that accepts and ignores the condition context: ``forward(x, ctx=None)``."""

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__(math.gcd(channels, groups), channels, eps=eps)

    def forward(self, x: torch.Tensor, ctx: ConditionContext | None = None) -> torch.Tensor:  # noqa: ARG002
        return super().forward(x)


class AdaGroupNorm(nn.Module):
    """Parameter-free GroupNorm, then ``x * (1 + gamma) + beta`` with (gamma, beta) = Linear(ctx.vector), zero init."""

    def __init__(self, channels: int, vector_dim: int, groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups = math.gcd(channels, groups)
        self.eps = eps
        self.to_gamma_beta = zero_(nn.Linear(vector_dim, 2 * channels))

    def forward(self, x: torch.Tensor, ctx: ConditionContext) -> torch.Tensor:
        h = F.group_norm(x, self.groups, eps=self.eps)
        gamma, beta = self.to_gamma_beta(ctx.vector)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(beta, h, 1 + gamma)


class Conditioner(nn.Module):
    """Base: embedding (B, D) -> :class:`ConditionContext`; ``make_norm`` builds the variant's norms.

    ``context_dim``: token width for cross-attention blocks (None: no cross-attention).
    """

    context_dim: int | None = None

    def __init__(self, norm_groups: int = 32) -> None:
        super().__init__()
        self.norm_groups = norm_groups

    def make_norm(self, channels: int) -> nn.Module:
        return GroupNorm(channels, self.norm_groups)

    def forward(self, embedding: torch.Tensor, sizes: list[tuple[int, int]]) -> ConditionContext:  # noqa: ARG002
        """``sizes``: the feature sizes (H, W) of the UNet's levels, latent size first."""
        return ConditionContext()


class SpadeConditioner(Conditioner):
    """``spade``: one :class:`ConditionMap` per forward, resized once per level, SPADE in every norm."""

    def __init__(self, cond_dim: int, map_channels: int, map_res: int, hidden: int, norm_groups: int = 32) -> None:
        super().__init__(norm_groups)
        self.map = ConditionMap(cond_dim, map_channels, map_res)
        self.map_channels, self.hidden = map_channels, hidden

    def make_norm(self, channels: int) -> nn.Module:
        return SPADEGroupNorm(channels, self.map_channels, self.hidden, self.norm_groups)

    def forward(self, embedding: torch.Tensor, sizes: list[tuple[int, int]]) -> ConditionContext:
        base = self.map(embedding)
        r = tuple(base.shape[-2:])
        return ConditionContext(maps={s: resize_map(base, working_size(s, r)) for s in sizes}, base_map=base)


class AdaGNConditioner(Conditioner):
    """``adagn``: embedding -> Linear-SiLU-Linear -> SiLU -> (B, vector_dim), read by every :class:`AdaGroupNorm`."""

    def __init__(self, cond_dim: int, vector_dim: int, norm_groups: int = 32) -> None:
        super().__init__(norm_groups)
        self.vector_dim = vector_dim
        self.mlp = nn.Sequential(nn.Linear(cond_dim, vector_dim), nn.SiLU(), nn.Linear(vector_dim, vector_dim), nn.SiLU())

    def make_norm(self, channels: int) -> nn.Module:
        return AdaGroupNorm(channels, self.vector_dim, self.norm_groups)

    def forward(self, embedding: torch.Tensor, sizes: list[tuple[int, int]]) -> ConditionContext:  # noqa: ARG002
        return ConditionContext(vector=self.mlp(embedding))


class CrossAttnConditioner(Conditioner):
    """``crossattn``: embedding -> Linear -> ``num_tokens`` tokens of width ``token_dim``, LayerNorm per token."""

    def __init__(self, cond_dim: int, token_dim: int, num_tokens: int, norm_groups: int = 32) -> None:
        super().__init__(norm_groups)
        self.context_dim, self.num_tokens = token_dim, num_tokens
        self.proj = nn.Linear(cond_dim, num_tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, embedding: torch.Tensor, sizes: list[tuple[int, int]]) -> ConditionContext:  # noqa: ARG002
        tokens = self.proj(embedding).view(embedding.shape[0], self.num_tokens, self.context_dim)
        return ConditionContext(tokens=self.norm(tokens))


class ConcatConditioner(Conditioner):
    """``concat``: a :class:`ConditionMap` bilinearly resized to the latent grid, fed to ``input_conv`` (zero init)."""

    def __init__(self, cond_dim: int, map_channels: int, map_res: int, model_channels: int,
                 norm_groups: int = 32) -> None:
        super().__init__(norm_groups)
        self.map = ConditionMap(cond_dim, map_channels, map_res)
        self.input_conv = zero_(nn.Conv2d(map_channels, model_channels, 3, padding=1))

    def forward(self, embedding: torch.Tensor, sizes: list[tuple[int, int]]) -> ConditionContext:
        return ConditionContext(input_map=resize_map(self.map(embedding), sizes[0]))

    def input_features(self, ctx: ConditionContext) -> torch.Tensor:
        """(B, model_channels, H, W) to add to the UNet's input conv output."""
        return self.input_conv(ctx.input_map)


def build_conditioner(kind: str, *, cond_dim: int, model_channels: int, embed_dim: int, norm_groups: int,
                      map_channels: int, map_res: int, spade_hidden: int, cross_tokens: int) -> Conditioner:
    """The :class:`Conditioner` for ``kind`` in :data:`CONDITIONINGS`; ``embed_dim`` sizes adagn's vector
    and crossattn's tokens (the UNet passes its timestep-embedding width)."""
    if kind == "spade":
        return SpadeConditioner(cond_dim, map_channels, map_res, spade_hidden, norm_groups)
    if kind == "adagn":
        return AdaGNConditioner(cond_dim, embed_dim, norm_groups)
    if kind == "crossattn":
        return CrossAttnConditioner(cond_dim, embed_dim, cross_tokens, norm_groups)
    if kind == "concat":
        return ConcatConditioner(cond_dim, map_channels, map_res, model_channels, norm_groups)
    if kind == "none":
        return Conditioner(norm_groups)
    raise ValueError(f"conditioning={kind!r}: expected one of {', '.join(CONDITIONINGS)}")
