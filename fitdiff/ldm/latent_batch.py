"""A training batch as the diffusion sees it: the normalised packed latent z_0 and its condition.

Two kinds of batch reach the diffusion module: pre-encoded latent batches (``data=latents``: a mapping
with ``latent`` (B, C_maps, h, w) pre-quantisation branch latents, ``shape`` (B, K), ``identity``
(B, 512)) and face batches with UV maps (``data=shards``, :class:`~fitdiff.data.batch.FaceBatch`), which
the frozen autoencoder encodes on the fly. Both give the same :class:`LatentBatch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fitdiff.autoencoder.branched import BranchedVQAutoencoder
from fitdiff.data.fields import REFLECTANCE_MAPS
from fitdiff.ldm.latent_stats import LatentStats
from fitdiff.ldm.layout import LatentLayout

__all__ = ["LatentBatch", "latent_batch"]


@dataclass
class LatentBatch:
    """Attributes:
    z0: (B, C, h, w) normalised packed latent (padding 0).
    identity: (B, D) unit-norm identity embeddings.
    shape: (B, K) ground-truth shape coefficients (std units).
    keys: sample keys; meta: per-sample ``meta.json`` dicts when the batch carries them.
    """

    z0: torch.Tensor
    identity: torch.Tensor
    shape: torch.Tensor
    keys: list[str]
    meta: list[dict[str, Any]] | None = None


def _get(batch: Any, name: str) -> Any:
    return batch.get(name) if isinstance(batch, Mapping) else getattr(batch, name, None)


@torch.no_grad()
def latent_batch(batch: Any, autoencoder: BranchedVQAutoencoder, layout: LatentLayout, stats: LatentStats
                 ) -> LatentBatch:
    """``batch`` (latent mapping or FaceBatch) -> :class:`LatentBatch`; maps are encoded by ``autoencoder``."""
    shape, identity = _get(batch, "shape"), _get(batch, "identity")
    if shape is None or identity is None:
        raise KeyError("a diffusion batch needs 'shape' and 'identity' (data.fields must include them)")
    z_maps = _get(batch, "latent")
    if z_maps is None:
        maps = {name: _get(batch, name) for name in REFLECTANCE_MAPS}
        missing = [k for k, v in maps.items() if v is None]
        if missing:
            raise KeyError(f"the batch has neither 'latent' nor the maps {missing} to encode")
        z_maps = autoencoder.encode(maps)
    z0 = stats.normalize(layout.pack(z_maps.float(), shape.float()))
    keys = _get(batch, "keys") or _get(batch, "key") or []
    return LatentBatch(z0=z0, identity=identity.float(), shape=shape.float(), keys=list(keys),
                       meta=_get(batch, "meta"))
