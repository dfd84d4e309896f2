"""Reproducible samples for tables: one CPU generator per (photo, sample), seeded from the table's seed.

Sample ``j`` of photo ``i`` always starts from the same noise (and, for stochastic samplers, draws the
same step noise) whatever the batch size, the number of photos evaluated or the device: its generator
is seeded from ``(seed, i, j)`` through :class:`numpy.random.SeedSequence`, and the sampler draws each
sample's noise from its own generator. Every sampled row of a photo (unconditional, each guidance
scale, each checkpoint) uses the same noise: the rows differ by the model and condition only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fitdiff.diffusion import Sampler
from fitdiff.evaluation.face_metrics import FacePrediction

__all__ = ["derive_seed", "resolve_device", "sample_generators", "sample_faces"]

#: stream tags of :func:`derive_seed`
PHOTO_STREAM = 0
DIVERSITY_STREAM = 1


def resolve_device(name: str) -> torch.device:
    """A table's ``device`` option: ``auto`` (CUDA when available, else the CPU) or a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def derive_seed(seed: int, stream: int, index: int, sample: int) -> int:
    """A 63-bit seed for sample ``sample`` of item ``index`` of a stream (photos, diversity samples)."""
    state = np.random.SeedSequence([int(seed), int(stream), int(index), int(sample)]).generate_state(
        2, np.uint32
    )
    return (int(state[0]) << 31) ^ int(state[1])


def sample_generators(
    seed: int, indices: Sequence[int], k: int, stream: int = PHOTO_STREAM
) -> list[torch.Generator]:
    """``len(indices) * k`` fresh CPU generators: item-major (item 0's k samples first)."""
    return [
        torch.Generator(device="cpu").manual_seed(derive_seed(seed, stream, i, j))
        for i in indices
        for j in range(k)
    ]


@torch.no_grad()
def sample_faces(
    pipeline,
    sampler: Sampler,
    generators: list[torch.Generator],
    identity: torch.Tensor | None,
    guidance_scale: float,
    shape_temperature: float = 1.0,
) -> FacePrediction:
    """Sample and decode one face per generator.

    Args:
        pipeline: a :class:`~fitdiff.ldm.pipeline.FitDiffPipeline` (its denoiser's device is used).
        sampler: scheduler, steps and eta.
        generators: one per sample (:func:`sample_generators`).
        identity: (n, D) unit embeddings, one row per sample, or None for unconditional samples.
        guidance_scale: classifier-free guidance s (1 = conditional only).
        shape_temperature: factor on the shape channels' start noise (0 = the conditional mean shape).

    Returns:
        The decoded faces on the CPU (maps and shape coefficients).
    """
    n = len(generators)
    z = pipeline.sample(
        n, sampler, identity=identity, guidance_scale=float(guidance_scale), generator=generators,
        shape_temperature=shape_temperature,
    )
    face = pipeline.decode(z)
    return FacePrediction(
        face.shape.float().cpu(), *(face.maps[m].float().cpu() for m in ("diffuse", "specular", "normals"))
    )
