"""Completing partial reflectance maps with the conditional latent diffusion model (RePaint-style).

Given partial UV maps (any subset of diffuse / specular / normals, optionally the shape), a validity
mask and optionally an identity, :func:`complete_maps` samples the missing part while the known part is
imposed at every step:

1. **Encoding the known part.** Missing texels (and missing maps) are filled with the mean face's
   reflectance (the decoded zero latent), the maps are encoded and normalised like the training latents:
   ``z_known``.
2. **From the UV mask to the latent grid** (:func:`latent_known_mask`). The autoencoder downsamples by
   ``f = R / H``; a latent cell counts as known only when all ``f x f`` texels it covers are known
   (min-pooling), optionally eroded by ``erode`` more cells because the encoder's receptive field
   reaches past a cell, so cells at the boundary also carry the fill. A map's channels use the cell
   mask when that map is given and are unknown otherwise; the shape channels are known when a shape is
   given.
3. **Sampling** (:class:`KnownRegion`, the sampler's ``after_step`` hook): after every reverse step the
   known cells of the sample are replaced by ``z_known`` forward-noised to the step's noise level,
   ``sqrt(a) z_known + sqrt(1 - a) n`` with fresh noise ``n`` from the run's generator (Lugmayr et al.
   2022); ``resample > 1`` repeats each step with re-noising in between (their "jumps" of length 1),
   which harmonises the two parts better at the cost of time. The final latent takes ``z_known`` in
   the known cells.
4. **Seams after decoding.** The decoded sample meets the known texels only up to the autoencoder's
   error and the model's colour bias. ``seam="harmonic"`` (default, :mod:`fitdiff.completion.seams`)
   keeps the known texels exactly and adds to the missing ones the harmonic extension of the offset
   ``known - decoded`` (gradient-domain blending): the boundary is continuous and an offset between the
   sample and its surroundings is corrected smoothly into the filled part (about 1.5-2 dB on the
   completion table, docs/BENCHMARKS.md). ``seam="feather"`` instead outputs
   ``w * known + (1 - w) * decoded`` with ``w`` the known mask blurred by a Gaussian of ``blend``
   texels and cut to the known texels, so the boundary fades over a few texels. Normals are
   renormalised after either.

With an all-known mask (maps and shape) the result is the given maps; with an empty mask the hook
changes nothing and draws no noise, so the result equals plain sampling for the same generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from fitdiff.completion.seams import harmonic_offset

__all__ = ["Completion", "KnownRegion", "complete_maps", "feather", "latent_known_mask"]

MAP_NAMES = ("diffuse", "specular", "normals")
SEAMS = ("harmonic", "feather")


def latent_known_mask(uv_known: torch.Tensor, layout, maps_known: Iterable[str], shape_known: bool,
                      erode: int = 0) -> torch.Tensor:
    """(B, C, H, W) float mask of known latent entries from a (B, R, R) bool UV mask (step 2 above)."""
    if uv_known.dim() != 3:
        raise ValueError(f"uv_known must be (B, R, R), got {tuple(uv_known.shape)}")
    batch, res = uv_known.shape[0], uv_known.shape[-1]
    if res % layout.height:
        raise ValueError(f"a {res} x {res} mask does not tile the {layout.height} x {layout.width} latent grid")
    factor = res // layout.height
    cells = -F.max_pool2d(-uv_known[:, None].float(), factor)  # 1 where every covered texel is known
    if erode > 0:
        cells = -F.max_pool2d(-cells, 2 * erode + 1, stride=1, padding=erode)
    mask = torch.zeros(batch, layout.channels, layout.height, layout.width, device=uv_known.device)
    names = set(maps_known)
    unknown = names - set(layout.map_slices)
    if unknown:
        raise ValueError(f"unknown map name(s) {sorted(unknown)}; the latent holds {list(layout.map_slices)}")
    for name, channels in layout.map_slices.items():
        if name in names:
            mask[:, channels] = cells
    if shape_known:
        mask[:, layout.shape_slice] = 1.0
    return layout.apply_mask(mask)


class KnownRegion:
    """Sampler hook imposing ``z_known`` where ``mask`` is 1 (step 3 of the module docstring).

    Args:
        z_known: (B, C, H, W) normalised latent of the known part.
        mask: (B, C, H, W) 1 = known, 0 = to be sampled.
        resample: runs of every reverse step (1 = plain RePaint replacement; DDIM / DDPM for more).
    """

    def __init__(self, z_known: torch.Tensor, mask: torch.Tensor, resample: int = 1) -> None:
        if z_known.shape != mask.shape:
            raise ValueError(f"z_known {tuple(z_known.shape)} and mask {tuple(mask.shape)} differ")
        if resample < 1:
            raise ValueError(f"resample must be >= 1, got {resample}")
        self.z_known, self.mask, self.resample = z_known, mask.to(z_known), int(resample)
        self.empty = not bool(self.mask.any())
        if self.resample > 1:
            self.repeats = lambda index, num_steps: self.resample

    def __call__(self, state) -> None:  # the model's output is left as it is
        return None

    def after_step(self, x_prev: torch.Tensor, index: int, alpha_bar_prev: float, generator) -> torch.Tensor:
        if self.empty:
            return x_prev
        noise = randn_tensor(tuple(x_prev.shape), generator=generator, device=x_prev.device, dtype=x_prev.dtype)
        noised = math.sqrt(alpha_bar_prev) * self.z_known + math.sqrt(max(0.0, 1.0 - alpha_bar_prev)) * noise
        return self.mask * noised + (1.0 - self.mask) * x_prev


def feather(uv_known: torch.Tensor, blend: float) -> torch.Tensor:
    """(B, 1, R, R) blending weight of the known texels (step 4): the mask blurred by a Gaussian of
    ``blend`` texels (edges replicated), zero on the missing texels; the bare mask for ``blend <= 0``."""
    mask = uv_known[:, None].float()
    if blend <= 0:
        return mask
    radius = max(1, int(math.ceil(3 * blend)))
    x = torch.arange(-radius, radius + 1, dtype=mask.dtype, device=mask.device)
    kernel = torch.exp(-0.5 * (x / blend) ** 2)
    kernel = kernel / kernel.sum()
    # blur the missing part (exactly 0 where nothing is missing) rather than the known one: an all-known
    # mask then gives weights of exactly 1
    padded = F.pad(1.0 - mask, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    return (1.0 - blurred).clamp(0.0, 1.0) * mask


@dataclass
class Completion:
    """Completed maps and shape.

    Attributes:
        maps: name -> (B, C, R, R) data-space maps (the blended output).
        decoded: name -> (B, C, R, R) the decoded sample before blending.
        shape: (B, K) the given shape, or the sampled one.
        latent: (B, C, H, W) the final normalised latent; known_cells: share of known map cells.
    """

    maps: dict[str, torch.Tensor]
    decoded: dict[str, torch.Tensor]
    shape: torch.Tensor
    latent: torch.Tensor
    known_cells: float


@torch.no_grad()
def complete_maps(pipeline, known: Mapping[str, torch.Tensor], uv_known: torch.Tensor, sampler, *,
                  shape: torch.Tensor | None = None, identity: torch.Tensor | None = None,
                  guidance_scale: float = 1.0, generator: torch.Generator | None = None, blend: float = 1.5,
                  resample: int = 1, erode: int = 0, seam: str = "harmonic") -> Completion:
    """Fill the missing texels of ``known`` (see the module docstring).

    Args:
        pipeline: the trained :class:`~fitdiff.ldm.pipeline.FitDiffPipeline`.
        known: name -> (B, C, R, R) data-space maps that are (partly) known; others are sampled.
        uv_known: (B, R, R) bool, True where the given maps' texels are known.
        sampler: the sampler (DDIM / DDPM for ``resample > 1``).
        shape: (B, K) known shape coefficients (std units), or None to sample them.
        identity: (B, D) or (D,) embedding to condition on, or None (unconditional).
        seam: ``harmonic`` (the decoded sample offset to meet the known texels, step 4) or ``feather``
            (known texels faded into the sample over ``blend`` texels).
    """
    if seam not in SEAMS:
        raise ValueError(f"seam must be one of {', '.join(SEAMS)}, got {seam!r}")
    device = next(pipeline.parameters()).device
    uv_known = uv_known.to(device=device, dtype=torch.bool)
    batch = uv_known.shape[0]
    unknown = set(known) - set(MAP_NAMES)
    if unknown:
        raise ValueError(f"unknown map name(s) {sorted(unknown)}; maps are {', '.join(MAP_NAMES)}")
    latent_shape = pipeline.latent_shape
    mean = pipeline.decode(torch.zeros(1, *latent_shape, device=device))
    res = mean.maps["diffuse"].shape[-1]
    if uv_known.shape[-2:] != (res, res):
        raise ValueError(f"the mask is {tuple(uv_known.shape[-2:])}, the maps are {res} x {res}")
    filled = {}
    for name in MAP_NAMES:
        fill = mean.maps[name].expand(batch, -1, -1, -1)
        if name in known:
            given = known[name].to(device=device, dtype=torch.float32)
            if given.shape != fill.shape:
                raise ValueError(f"{name}: expected {tuple(fill.shape)}, got {tuple(given.shape)}")
            filled[name] = torch.where(uv_known[:, None], given, fill)
        else:
            filled[name] = fill.clone()
    k = pipeline.layout.shape_dim
    coeffs = shape.to(device=device, dtype=torch.float32) if shape is not None else torch.zeros(batch, k, device=device)
    z_known = pipeline.encode(filled, coeffs)
    mask = latent_known_mask(uv_known, pipeline.layout, known, shape is not None, erode=erode).to(z_known)
    hook = KnownRegion(z_known, mask, resample=resample)
    sample = pipeline.sample(batch, sampler, identity=identity, guidance_scale=guidance_scale, generator=generator,
                             hook=hook)
    latent = pipeline.layout.apply_mask(mask * z_known + (1.0 - mask) * sample)
    face = pipeline.decode(latent)
    weight = feather(uv_known, blend)
    given = [name for name in MAP_NAMES if name in known]
    if seam == "harmonic" and given:  # one solve per sample for every given map's channels
        joined = harmonic_offset(torch.cat([face.maps[n] for n in given], 1), torch.cat([filled[n] for n in given], 1),
                                 uv_known)
        harmonic = dict(zip(given, joined.split([face.maps[n].shape[1] for n in given], 1)))
    maps = {}
    for name in MAP_NAMES:
        if name in known and seam == "harmonic":
            blended = F.normalize(harmonic[name], dim=1) if name == "normals" else harmonic[name]
            some = uv_known.flatten(1).any(1).view(-1, 1, 1, 1)  # nothing known: the sample as is
            maps[name] = torch.where(some, blended, face.maps[name])
        elif name in known:
            blended = weight * filled[name] + (1.0 - weight) * face.maps[name]
            if name == "normals":
                blended = F.normalize(blended, dim=1)
            maps[name] = torch.where(weight > 0, blended, face.maps[name])  # missing texels: the sample as is
        else:
            maps[name] = face.maps[name]
    cells = mask[:, pipeline.layout.map_slices[next(iter(known))]].mean().item() if known else 0.0
    return Completion(maps=maps, decoded=face.maps, shape=coeffs if shape is not None else face.shape,
                      latent=latent, known_cells=float(cells))
