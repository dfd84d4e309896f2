"""The diffused latent ``z_0 = [z_diffuse | z_specular | z_normals | shape plane(s)]`` (docs/DESIGN.md §5).

The autoencoder's branch latents (pre-quantisation, ``Cm`` channels on an ``H x W`` grid, in branch
order) are followed by ``S = ceil(K / (H * W))`` shape channels holding the ``K`` PCA coefficients
(std units). Two packings of the coefficients into the ``S x H x W`` plane:

``repeat`` (default)
    The plane is cut into ``th x tw`` tiles (``H // th`` rows by ``W // tw`` columns of tiles per
    channel; the largest tile area for which there are at least ``K`` tiles, the squarest tile among
    equals). Coefficient ``k`` fills every texel of tile ``k`` (tiles counted row-major within a
    channel, channel after channel); unpacking averages the tile. Unused tiles and the border strips
    that the tiles do not cover are padding.
``flat``
    Coefficient ``k`` is texel ``k`` of the plane in row-major order (channel, row, column); the
    remaining ``S * H * W - K`` texels are padding.

Why ``repeat`` for a convolutional UNet: each coefficient is a compact region the size of a few 3 x 3
receptive fields rather than one texel between unrelated neighbours, so convolutions and downsampling see
it as a (locally constant) image feature instead of mixing coefficients texel by texel; its share of a
per-element loss grows from ``K / (Cm H W)`` (0.1 % at full scale) to about one plane of ``Cm + S``; and
averaging the tile on unpack makes the decoded shape the mean of ``th * tw`` network outputs. One
consequence to know: the noise is independent per texel, so the shape seen through a tile mean has an
SNR ``th * tw`` times a map texel's; the shape is determined earlier in the reverse process than the
maps.

Padding texels are 0 after :meth:`LatentLayout.pack`, 0 in :meth:`LatentLayout.loss_mask`, excluded from
the statistics (:mod:`fitdiff.ldm.latent_stats`) and kept at exactly 0 by normalisation.

The layout is a plain value: :meth:`LatentLayout.to_dict` holds only JSON types and is stored in the
latent manifest (``latents.json``) and in checkpoints; the data layer passes it through as a dict.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LAYOUT_VERSION", "PACKINGS", "LatentLayout", "choose_tile"]

LAYOUT_VERSION = 1
PACKINGS: tuple[str, ...] = ("repeat", "flat")


def choose_tile(height: int, width: int, shape_channels: int, shape_dim: int) -> tuple[int, int]:
    """The ``repeat`` tile (th, tw): largest area with ``channels * (H // th) * (W // tw) >= K``.

    Ties go to the squarest tile, then to the smaller ``th``.
    """
    best: tuple[int, int, int, int] | None = None  # (-area, |th - tw|, th, tw)
    for th in range(1, height + 1):
        for tw in range(1, width + 1):
            if shape_channels * (height // th) * (width // tw) < shape_dim:
                continue
            key = (-th * tw, abs(th - tw), th, tw)
            if best is None or key < best:
                best = key
    assert best is not None  # (1, 1) always fits: channels * H * W >= K by construction
    return best[2], best[3]


@dataclass(frozen=True)
class LatentLayout:
    """Where each part of the diffused latent lives.

    Args:
        branches: (name, latent channels) per autoencoder branch, in latent order, e.g.
            ``(("diffuse", 4), ("specular", 4), ("normals", 4))``; a mapping is accepted (its order).
        shape_dim: number K of shape coefficients.
        height, width: latent grid H x W.
        packing: ``"repeat"`` (default) or ``"flat"`` (module doc).
        tile: ``repeat`` tile (th, tw); default :func:`choose_tile`. Stored by :meth:`to_dict`, so a
            layout read back never depends on how the default is chosen.

    Channels: ``0 .. Cm - 1`` the branch latents, ``Cm .. Cm + S - 1`` the shape plane(s).
    """

    branches: tuple[tuple[str, int], ...]
    shape_dim: int
    height: int
    width: int
    packing: str = "repeat"
    tile: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        items = self.branches.items() if isinstance(self.branches, Mapping) else self.branches
        branches = tuple((str(name), int(ch)) for name, ch in items)
        object.__setattr__(self, "branches", branches)
        names = [n for n, _ in branches]
        if not branches or len(set(names)) != len(names) or any(c < 1 for _, c in branches):
            raise ValueError(f"branches must be distinct names with >= 1 channel each, got {branches}")
        for name in ("shape_dim", "height", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LatentLayout.{name} must be >= 1, got {getattr(self, name)}")
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.packing not in PACKINGS:
            raise ValueError(f"packing must be one of {', '.join(PACKINGS)}, got {self.packing!r}")
        if self.packing == "flat":
            if self.tile not in (None, (1, 1), [1, 1]):
                raise ValueError(f"packing 'flat' has no tile, got {self.tile}")
            object.__setattr__(self, "tile", (1, 1))
            return
        tile = choose_tile(self.height, self.width, self.shape_channels, self.shape_dim) if self.tile is None \
            else (int(self.tile[0]), int(self.tile[1]))
        th, tw = tile
        if not (1 <= th <= self.height and 1 <= tw <= self.width):
            raise ValueError(f"tile {tile} does not fit the {self.height} x {self.width} grid")
        if self.shape_channels * (self.height // th) * (self.width // tw) < self.shape_dim:
            raise ValueError(f"tile {tile} gives fewer than {self.shape_dim} tiles in {self.shape_channels} "
                             f"channel(s) of {self.height} x {self.width}")
        object.__setattr__(self, "tile", tile)

    # ------------------------------------------------------------------------------------ structure

    @classmethod
    def from_autoencoder(cls, autoencoder: Any, uv_resolution: int, shape_dim: int, packing: str = "repeat"
                         ) -> LatentLayout:
        """The layout of an autoencoder's latents (``latent_slices``, ``latent_shape``) of R x R maps."""
        slices = autoencoder.latent_slices
        _, h, w = autoencoder.latent_shape(int(uv_resolution))
        return cls(tuple((name, s.stop - s.start) for name, s in slices.items()), shape_dim, h, w, packing)

    @property
    def map_channels(self) -> int:
        """Cm: channels of the branch latents."""
        return sum(c for _, c in self.branches)

    @property
    def shape_channels(self) -> int:
        """S = ceil(K / (H * W)): channels of the shape plane(s)."""
        return math.ceil(self.shape_dim / (self.height * self.width))

    @property
    def channels(self) -> int:
        """C = Cm + S: channels of the packed latent."""
        return self.map_channels + self.shape_channels

    @property
    def map_slices(self) -> dict[str, slice]:
        """Branch name -> its channel slice of the packed latent (and of the branch latents)."""
        out, start = {}, 0
        for name, ch in self.branches:
            out[name] = slice(start, start + ch)
            start += ch
        return out

    @property
    def shape_slice(self) -> slice:
        """Channel slice of the shape plane(s)."""
        return slice(self.map_channels, self.channels)

    @property
    def texels_per_coefficient(self) -> int:
        """Texels holding each coefficient: 1 for ``flat``, th * tw for ``repeat``."""
        assert self.tile is not None
        return self.tile[0] * self.tile[1]

    @property
    def map_shape(self) -> tuple[int, int, int]:
        """(Cm, H, W) of the branch latents."""
        return self.map_channels, self.height, self.width

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the packed latent."""
        return self.channels, self.height, self.width

    @functools.cached_property
    def _positions(self) -> torch.Tensor:
        """(K, r) int64 flat indices into the (S, H, W) shape plane of each coefficient's texels."""
        k = torch.arange(self.shape_dim)
        if self.packing == "flat":
            return k[:, None]
        th, tw = self.tile  # type: ignore[misc]
        cols = self.width // tw
        per_channel = (self.height // th) * cols
        channel, index = k // per_channel, k % per_channel
        top, left = (index // cols) * th, (index % cols) * tw
        rows = top[:, None, None] + torch.arange(th)[None, :, None]
        columns = left[:, None, None] + torch.arange(tw)[None, None, :]
        flat = (channel[:, None, None] * self.height + rows) * self.width + columns
        return flat.reshape(self.shape_dim, th * tw)

    @functools.cached_property
    def _source(self) -> torch.Tensor:
        """(S * H * W,) int64: the coefficient each plane texel holds, -1 for padding."""
        source = torch.full((self.shape_channels * self.height * self.width,), -1, dtype=torch.long)
        positions = self._positions
        source[positions.reshape(-1)] = torch.arange(self.shape_dim).repeat_interleave(positions.shape[1])
        return source

    def shape_mask(self) -> torch.Tensor:
        """(S, H, W) bool: True where the shape plane holds a coefficient."""
        return (self._source >= 0).reshape(self.shape_channels, self.height, self.width)

    def loss_mask(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
                  ) -> torch.Tensor:
        """(1, C, H, W) mask in {0, 1}: 1 on every branch-latent element and on the shape texels, 0 on padding."""
        mask = torch.ones(1, self.channels, self.height, self.width, dtype=dtype, device=device)
        mask[0, self.shape_slice] = self.shape_mask().to(device=device, dtype=dtype)
        return mask

    def valid_counts(self) -> list[int]:
        """Valid (mask = 1) elements per channel of one sample."""
        plane = self.shape_mask().reshape(self.shape_channels, -1).sum(dim=1).tolist()
        return [self.height * self.width] * self.map_channels + [int(c) for c in plane]

    # ------------------------------------------------------------------------------------ packing

    def pack(self, z_maps: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        """Branch latents (B, Cm, H, W) and coefficients (B, K) -> packed latent (B, C, H, W).

        The result has ``z_maps``' dtype and device; padding texels are +0.
        """
        if z_maps.ndim != 4 or tuple(z_maps.shape[1:]) != self.map_shape:
            raise ValueError(f"z_maps must be (B, {', '.join(map(str, self.map_shape))}), got {tuple(z_maps.shape)}")
        if shape.ndim != 2 or shape.shape != (z_maps.shape[0], self.shape_dim):
            raise ValueError(f"shape must be ({z_maps.shape[0]}, {self.shape_dim}), got {tuple(shape.shape)}")
        source = self._source.to(z_maps.device)
        values = shape.to(dtype=z_maps.dtype, device=z_maps.device)[:, source.clamp(min=0)]
        plane = torch.where(source >= 0, values, torch.zeros((), dtype=z_maps.dtype, device=z_maps.device))
        plane = plane.reshape(z_maps.shape[0], self.shape_channels, self.height, self.width)
        return torch.cat([z_maps, plane], dim=1)

    def unpack(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed latent (B, C, H, W) -> (branch latents (B, Cm, H, W), coefficients (B, K)).

        ``flat`` reads each coefficient's texel; ``repeat`` averages its tile as ``v_0 + mean(v - v_0)``
        (the mean, with every gradient 1 / r), which returns a tile of equal values exactly in any dtype:
        ``unpack(pack(z_maps, shape))`` gives back ``shape`` bit for bit.
        """
        if z.ndim != 4 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"z must be (B, {', '.join(map(str, self.latent_shape))}), got {tuple(z.shape)}")
        plane = z[:, self.shape_slice].reshape(z.shape[0], -1)
        values = plane[:, self._positions.to(z.device)]  # (B, K, r)
        if values.shape[2] == 1:
            shape = values[:, :, 0]
        else:
            first = values[:, :, :1]
            shape = (first + (values - first).mean(dim=2, keepdim=True))[:, :, 0]
        return z[:, : self.map_channels], shape

    def apply_mask(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` (B, C, H, W) with every padding element set to +0 (e.g. a sampled latent)."""
        mask = self.loss_mask(device=z.device, dtype=torch.bool)
        return torch.where(mask, z, torch.zeros((), dtype=z.dtype, device=z.device))

    # ------------------------------------------------------------------------------------ plain form

    def to_dict(self) -> dict[str, Any]:
        """JSON form (also what the data layer and checkpoints store)."""
        return {
            "version": LAYOUT_VERSION,
            "branches": [{"name": n, "channels": c} for n, c in self.branches],
            "shape_dim": self.shape_dim,
            "height": self.height,
            "width": self.width,
            "packing": self.packing,
            "tile": list(self.tile) if self.tile is not None else None,
            "channels": self.channels,
            "shape_channels": self.shape_channels,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "latent layout") -> LatentLayout:
        """Inverse of :meth:`to_dict`; derived entries (``channels``, ``shape_channels``) are checked."""
        try:
            if data.get("version", LAYOUT_VERSION) != LAYOUT_VERSION:
                raise ValueError(f"version {data.get('version')!r} is not supported (this code reads {LAYOUT_VERSION})")
            branches: Sequence[Any] = data["branches"]
            layout = cls(
                tuple((str(b["name"]), int(b["channels"])) for b in branches),
                int(data["shape_dim"]), int(data["height"]), int(data["width"]), str(data.get("packing", "repeat")),
                None if data.get("tile") is None else tuple(data["tile"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: malformed ({type(exc).__name__}: {exc})") from exc
        for key in ("channels", "shape_channels"):
            if key in data and int(data[key]) != getattr(layout, key):
                raise ValueError(f"{where}: {key} {data[key]} disagrees with the layout ({getattr(layout, key)})")
        return layout

    def __repr__(self) -> str:
        parts = " | ".join(f"{n}:{c}" for n, c in self.branches)
        return (f"LatentLayout([{parts} | shape:{self.shape_channels}] x {self.height}x{self.width}, K={self.shape_dim}, "
                f"{self.packing}{'' if self.packing == 'flat' else f' tile {self.tile[0]}x{self.tile[1]}'})")

