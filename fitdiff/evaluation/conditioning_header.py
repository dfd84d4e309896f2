"""The Markdown header of the conditioning table: what was measured, with what, reproducibly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fitdiff.data.manifest import MANIFEST_NAME
from fitdiff.diffusion import Sampler
from fitdiff.evaluation.checkpoints import CheckpointInfo
from fitdiff.evaluation.faces import FaceSet
from fitdiff.evaluation.table import format_value, summarize
from fitdiff.io import sha256_file

__all__ = ["conditioning_header", "describe_sampler"]


def describe_sampler(sampler: Sampler) -> str:
    """``DDIMScheduler, 50 steps, eta 0, timestep spacing leading``."""
    d = sampler.describe()
    return (
        f"{d['scheduler']}, {d['num_inference_steps']} steps, eta {d['eta']:g}, "
        f"timestep spacing {d['timestep_spacing']}"
    )


def conditioning_header(
    *,
    infos: Sequence[CheckpointInfo],
    data_dir: Path,
    splits: Sequence[str],
    photos: FaceSet,
    n_samples: int,
    seed: int,
    ema: bool,
    samplers: Mapping[int, str],
    train_samples: int,
    recognizer: str,
    recognizer_sha256: str | None,
    probe_alphas: Mapping[str, float],
    reference_identity: np.ndarray | None,
) -> list[str]:
    """Header lines: photo and sample counts, seed, sampler(s), dataset manifest / checkpoint / autoencoder /
    recognizer hashes, the probe's penalties, the identity of the ground truth rendered the same way
    (the ceiling of that column) and the error definitions."""
    lines = [
        f"{len(photos)} photos of {len(set(photos.subjects))} held-out subjects ({'+'.join(splits)} of "
        f"{data_dir}), {n_samples} samples per photo and sampled row; seed {seed}; {'EMA' if ema else 'raw'} weights",
    ]
    described = set(samplers.values())
    if len(described) == 1:
        lines.append(f"sampler: {described.pop()}")
    else:
        lines += [f"sampler of {infos[c].label}: {s}" for c, s in samplers.items()]
    lines.append(
        f"dataset manifest sha256: {sha256_file(Path(data_dir) / MANIFEST_NAME)}; training split: "
        f"{train_samples} samples"
    )
    for info in infos:
        step = f", step {info.global_step}" if info.global_step is not None else ""
        scale = format_value(info.guidance_scale, "{:g}")
        lines.append(f"checkpoint {info.label}: {info.path} (sha256 {info.sha256}{step}; default s={scale})")
    lines.append(f"autoencoder sha256: {infos[0].autoencoder_sha256}")
    lines.append(
        "linear probe ridge penalties (CV over training subjects): "
        + ", ".join(f"{k} {v:g}" for k, v in probe_alphas.items())
    )
    if recognizer_sha256 is not None and reference_identity is not None:
        mean, std = summarize(reference_identity)
        lines.append(
            f"identity: {recognizer} (weights sha256 {recognizer_sha256}); the ground-truth face rendered the "
            f"same way scores {mean:.3f} ± {std:.3f}"
        )
    lines.append(
        "shape: RMS per-vertex distance (model frame, no alignment) and coefficient RMS (std units); "
        "normals: mean angle over valid texels"
    )
    return lines
