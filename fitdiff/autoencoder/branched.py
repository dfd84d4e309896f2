"""The multi-branch VQ autoencoder: one encoder / decoder branch per group of reflectance maps.

Every branch encodes its maps to ``embed_dim`` latent channels on a common grid (downsampling factor
``2 ** (len(ch_mult) - 1)``); the model latent is the concatenation of the branch latents in branch
order, ``z = [z_diffuse | z_specular | z_normals]``. With one branch holding every map the same class is
the non-branched ablation (one autoencoder over the stacked maps).

Spaces: the public :meth:`~BranchedVQAutoencoder.encode` / :meth:`~BranchedVQAutoencoder.decode` take
and return maps in **data space** (albedos in [0, 1], normals unit vectors); inside, albedos are mapped to
[-1, 1] ("model space", where losses are computed) and normals are used as they are. Decoded normals are
renormalised to unit length.

Latents for the diffusion stage: :meth:`encode` returns **pre-quantisation** latents by default (as
latent diffusion does); :meth:`decode` quantises them first (``quantize=True``), so a diffusion sample
that lands near, not on, a code still decodes to a map the decoder was trained on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fitdiff.autoencoder.decoder import DecoderHead, DecoderTrunk
from fitdiff.autoencoder.encoder import EncoderStem, EncoderTrunk
from fitdiff.autoencoder.quantizer import VectorQuantizer

__all__ = ["DEFAULT_MAPS", "UNIT_VECTOR_MAPS", "AutoencoderOutput", "BranchedVQAutoencoder"]

#: map name -> channels of the FaceBatch fields the autoencoder reconstructs
DEFAULT_MAPS: dict[str, int] = {"diffuse": 3, "specular": 1, "normals": 3}
#: maps holding unit vectors in [-1, 1] (renormalised after decoding, angular loss); others are in [0, 1]
UNIT_VECTOR_MAPS: tuple[str, ...] = ("normals",)


@dataclass
class AutoencoderOutput:
    """A reconstruction pass in model space.

    Attributes:
        inputs: map name -> (B, C, H, W) input in model space.
        recon: map name -> (B, C, H, W) reconstruction in model space (normals unit length).
        vq_loss: scalar sum of the quantisers' losses (one per codebook).
        stats: scalar statistics: ``<branch>_perplexity``, ``<branch>_usage`` (or ``shared_*``).
    """

    inputs: dict[str, torch.Tensor]
    recon: dict[str, torch.Tensor]
    vq_loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


_HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_")


def _quantizer_factory(spec: Any) -> tuple[type[VectorQuantizer], dict[str, Any]]:
    """(quantiser class, keyword arguments without ``dim``) from the ``quantizer`` argument's three forms."""
    if spec is None:
        return VectorQuantizer, {}
    if isinstance(spec, functools.partial):
        cls, kwargs, args = spec.func, dict(spec.keywords), spec.args
        if args:
            raise TypeError(f"quantizer: pass keyword arguments only, got positional {args!r}")
    elif isinstance(spec, Mapping):
        kwargs = {str(k): v for k, v in spec.items() if k not in _HYDRA_KEYS}
        target = spec.get("_target_")
        if target is None:
            cls = VectorQuantizer
        else:
            from hydra.utils import get_class

            cls = get_class(str(target))
    else:
        raise TypeError(f"quantizer must be a mapping of VectorQuantizer arguments or a partial, got {spec!r}")
    if not (isinstance(cls, type) and issubclass(cls, VectorQuantizer)):
        raise TypeError(f"quantizer must build a VectorQuantizer (or a subclass), got {cls!r}")
    if "dim" in kwargs:
        raise TypeError("quantizer: 'dim' is set by the network (embed_dim); remove it")
    return cls, kwargs


class BranchedVQAutoencoder(nn.Module):
    """Branched VQGAN generator (encoders, quantiser(s), decoders).

    Args:
        maps: map name -> channels, e.g. ``{diffuse: 3, specular: 1, normals: 3}``.
        branches: branch name -> the maps it encodes (stacked along channels, in that order); default
            one branch per map, named after it. ``{maps: [diffuse, specular, normals]}`` is the
            non-branched model.
        ch, ch_mult, num_res_blocks, dropout: width, per-level width multipliers, residual blocks per
            level, dropout; the downsampling factor is ``2 ** (len(ch_mult) - 1)``.
        embed_dim: latent channels per branch.
        attention: self-attention in the middle blocks (on the latent grid).
        share_trunk: one encoder trunk and one decoder trunk (the middle blocks on the latent grid)
            shared by every branch; the stems and heads stay per branch.
        shared_codebook: one codebook for every branch, else one per branch.
        quantizer: the codebook(s): keyword arguments of
            :class:`~fitdiff.autoencoder.quantizer.VectorQuantizer` (``n_codes``, ``beta``, ``data_init``,
            ``restart_dead``, ``usage_decay``, ``dead_threshold``; ``dim`` is ``embed_dim``), optionally
            with a ``_target_`` naming a subclass, or a ``functools.partial`` of such a class (what
            Hydra builds from a ``_partial_: true`` node).
    """

    def __init__(
        self,
        maps: Mapping[str, int] | None = None,
        branches: Mapping[str, Sequence[str]] | None = None,
        ch: int = 64,
        ch_mult: Sequence[int] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        embed_dim: int = 4,
        attention: bool = False,
        dropout: float = 0.0,
        share_trunk: bool = False,
        shared_codebook: bool = False,
        quantizer: Mapping[str, Any] | Callable[..., VectorQuantizer] | None = None,
    ) -> None:
        super().__init__()
        maps = dict(DEFAULT_MAPS if maps is None else maps)
        branches = {m: [m] for m in maps} if branches is None else {k: list(v) for k, v in branches.items()}
        listed = [m for group in branches.values() for m in group]
        if sorted(listed) != sorted(maps):
            raise ValueError(f"branches {branches} must list every map of {list(maps)} exactly once")
        quantizer_class, quantizer_kwargs = _quantizer_factory(quantizer)
        recorded = dict(quantizer_kwargs)
        if quantizer_class is not VectorQuantizer:
            recorded["_target_"] = f"{quantizer_class.__module__}.{quantizer_class.__qualname__}"
        #: constructor arguments as plain types (saved with exported weights)
        self.config: dict[str, Any] = dict(
            maps=maps, branches=branches, ch=int(ch), ch_mult=[int(m) for m in ch_mult],
            num_res_blocks=int(num_res_blocks), embed_dim=int(embed_dim), attention=bool(attention),
            dropout=float(dropout), share_trunk=bool(share_trunk), shared_codebook=bool(shared_codebook),
            quantizer=recorded,
        )
        self.maps, self.branches = maps, branches
        self.embed_dim = int(embed_dim)
        self.downsampling_factor = 2 ** (len(ch_mult) - 1)
        width = ch * ch_mult[-1]

        def channels(branch: str) -> int:
            return sum(maps[m] for m in branches[branch])

        self.encoder_stems = nn.ModuleDict(
            {b: EncoderStem(channels(b), ch, ch_mult, num_res_blocks, dropout) for b in branches}
        )
        self.decoder_heads = nn.ModuleDict(
            {b: DecoderHead(channels(b), ch, ch_mult, num_res_blocks, dropout) for b in branches}
        )
        trunk_names = ["shared"] if share_trunk else list(branches)
        self.encoder_trunks = nn.ModuleDict(
            {t: EncoderTrunk(width, embed_dim, attention, dropout) for t in trunk_names}
        )
        self.decoder_trunks = nn.ModuleDict(
            {t: DecoderTrunk(embed_dim, width, attention, dropout) for t in trunk_names}
        )
        codebook_names = ["shared"] if shared_codebook else list(branches)
        self.quantizers = nn.ModuleDict(
            {q: quantizer_class(dim=embed_dim, **quantizer_kwargs) for q in codebook_names}
        )

    # ------------------------------------------------------------------------------------ structure

    @property
    def latent_channels(self) -> int:
        """Channels of the concatenated latent, ``len(branches) * embed_dim``."""
        return len(self.branches) * self.embed_dim

    @property
    def latent_slices(self) -> dict[str, slice]:
        """Branch name -> its channel slice of the concatenated latent."""
        return {b: slice(i * self.embed_dim, (i + 1) * self.embed_dim) for i, b in enumerate(self.branches)}

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """(C_total, h, w) of the latent of ``resolution`` x ``resolution`` maps."""
        if resolution % self.downsampling_factor:
            raise ValueError(f"resolution {resolution} is not a multiple of {self.downsampling_factor}")
        side = resolution // self.downsampling_factor
        return self.latent_channels, side, side

    def last_layers(self) -> dict[str, torch.Tensor]:
        """Branch name -> weight of its decoder's final convolution."""
        return {b: head.last_layer for b, head in self.decoder_heads.items()}

    def _trunk(self, trunks: nn.ModuleDict, branch: str) -> nn.Module:
        return trunks["shared"] if "shared" in trunks else trunks[branch]

    def _quantizer(self, branch: str) -> VectorQuantizer:
        return self.quantizers["shared"] if "shared" in self.quantizers else self.quantizers[branch]

    # ------------------------------------------------------------------------------------ spaces

    def _as_maps(self, x: Any) -> dict[str, torch.Tensor]:
        """Map name -> tensor from a FaceBatch (attributes) or a mapping; checks presence and channels."""
        out = {}
        for name, c in self.maps.items():
            value = x.get(name) if isinstance(x, Mapping) else getattr(x, name, None)
            if value is None:
                raise ValueError(f"the autoencoder needs the '{name}' map; it is missing from the input")
            if value.ndim != 4 or value.shape[1] != c:
                raise ValueError(f"'{name}' must be (B, {c}, H, W), got {tuple(value.shape)}")
            out[name] = value
        return out

    def to_model_space(self, x: Any) -> dict[str, torch.Tensor]:
        """Data space (albedo [0, 1], unit normals) -> model space (albedo [-1, 1], normals as is)."""
        maps = self._as_maps(x)
        return {k: v if k in UNIT_VECTOR_MAPS else v * 2.0 - 1.0 for k, v in maps.items()}

    @staticmethod
    def to_data_space(maps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model space -> data space: albedos clamped to [-1, 1] and mapped to [0, 1], normals unit length."""
        return {
            k: F.normalize(v, dim=1) if k in UNIT_VECTOR_MAPS else (v.clamp(-1.0, 1.0) + 1.0) * 0.5
            for k, v in maps.items()
        }

    # ------------------------------------------------------------------------------------ passes

    def encode_model_space(self, maps: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Model-space maps -> pre-quantisation latent (B, C_total, h, w)."""
        latents = []
        for branch, names in self.branches.items():
            x = torch.cat([maps[m] for m in names], dim=1)
            h = self.encoder_stems[branch](x)
            latents.append(self._trunk(self.encoder_trunks, branch)(h))
        return torch.cat(latents, dim=1)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(B, C_total, h, w) -> (quantised latent, summed VQ loss, statistics); branch by branch."""
        parts, losses, stats = [], [], {}
        for branch, sl in self.latent_slices.items():
            q = self._quantizer(branch)(z[:, sl])
            parts.append(q.z_q)
            losses.append(q.loss)
            stats[f"{branch}_perplexity"], stats[f"{branch}_usage"] = q.perplexity, q.usage
        return torch.cat(parts, dim=1), torch.stack(losses).sum(), stats

    def decode_model_space(self, z_q: torch.Tensor) -> dict[str, torch.Tensor]:
        """Quantised latent (B, C_total, h, w) -> model-space maps (normals renormalised)."""
        if z_q.shape[1] != self.latent_channels:
            raise ValueError(f"latent has {z_q.shape[1]} channels, expected {self.latent_channels}")
        out: dict[str, torch.Tensor] = {}
        for branch, sl in self.latent_slices.items():
            h = self._trunk(self.decoder_trunks, branch)(z_q[:, sl])
            y = self.decoder_heads[branch](h)
            names = self.branches[branch]
            for name, part in zip(names, torch.split(y, [self.maps[m] for m in names], dim=1)):
                out[name] = F.normalize(part, dim=1) if name in UNIT_VECTOR_MAPS else part
        return {m: out[m] for m in self.maps}

    def forward(self, x: Any) -> AutoencoderOutput:
        """Data-space maps (FaceBatch or mapping) -> :class:`AutoencoderOutput` (model space)."""
        inputs = self.to_model_space(x)
        z_q, vq_loss, stats = self.quantize(self.encode_model_space(inputs))
        return AutoencoderOutput(inputs, self.decode_model_space(z_q), vq_loss, stats)

    # ------------------------------------------------------------------------------------ public API

    def encode(self, x: Any, quantize: bool = False) -> torch.Tensor:
        """Maps in data space (a FaceBatch or name -> (B, C, H, W)) -> latent (B, C_total, H/f, W/f).

        ``quantize=False`` (default) gives the pre-quantisation latent, the diffusion stage's ``z_0``.
        """
        z = self.encode_model_space(self.to_model_space(x))
        return self.quantize(z)[0] if quantize else z

    def decode(self, z: torch.Tensor, quantize: bool = True) -> dict[str, torch.Tensor]:
        """Latent (B, C_total, h, w) -> data-space maps (albedos in [0, 1], unit normals).

        ``quantize=True`` (default) snaps ``z`` to the codebook(s) first.
        """
        if quantize:
            z = self.quantize(z)[0]
        return self.to_data_space(self.decode_model_space(z))

    def reconstruct(self, x: Any) -> dict[str, torch.Tensor]:
        """Data-space maps -> data-space reconstructions."""
        return self.decode(self.encode(x), quantize=True)
