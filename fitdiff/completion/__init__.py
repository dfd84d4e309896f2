"""Reflectance completion: partial UV maps and a validity mask in, the missing texels sampled by the
conditional latent diffusion model with the known ones imposed (:mod:`fitdiff.completion.inpaint`);
the seams after decoding (:mod:`fitdiff.completion.seams`); the benchmark's mask kinds
(:mod:`fitdiff.completion.masks`)."""

from fitdiff.completion.inpaint import Completion, KnownRegion, complete_maps, feather, latent_known_mask
from fitdiff.completion.masks import MASK_KINDS, blob_mask, hidden_share, left_half_mask, read_mask
from fitdiff.completion.seams import harmonic_offset

__all__ = ["MASK_KINDS", "Completion", "KnownRegion", "blob_mask", "complete_maps", "feather", "harmonic_offset", "hidden_share",
           "latent_known_mask", "left_half_mask", "read_mask"]
