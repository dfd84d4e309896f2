"""Dataset augmentation: sampled avatars rendered under random cameras and lights into new face shards.

:func:`render_dataset` samples ``n`` avatars from a diffusion checkpoint (unconditionally, or for the
identity embeddings given), renders each under ``views`` random scenes of the synthetic dataset's
distribution (head pose, focal length, SH + directional light, tone curve, procedural background,
sensor noise: :func:`fitdiff.synthetic.scene.sample_scene` and :class:`fitdiff.synthetic.photo.PhotoRenderer`,
the same code that renders the embedded dataset), embeds every photo with the configured recognizer
(ArcFace alignment from the projected landmarks) and writes the samples in the project's own schema
with a manifest (:class:`fitdiff.data.DatasetWriter`, every sample validated), ready for training.

Each avatar is one subject (``aug00000`` ...): its maps (quantised to the stored 8-bit albedo and
float16 normals before rendering, so the photos show exactly the stored ground truth), its shape, and
``views`` photos with their landmarks, cameras and lights in ``meta.json``. Everything is
deterministic in ``seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["AugmentReport", "render_dataset"]

log = logging.getLogger(__name__)

_CENTRE_LIFT = np.array([0.0, 8.0, 0.0])  # the synthetic dataset's camera target above the landmarks' centre, mm


@dataclass
class AugmentReport:
    """What :func:`render_dataset` wrote: the folder, the manifest's counts and the recognizer id."""

    out: Path
    counts: dict[str, int]
    recognizer: str
    subjects: int
    views: int


@torch.no_grad()
def render_dataset(pipeline: Any, shape_model: Any, encoder: Any, recognizer: str, out: str | Path, n: int,
                   views: int = 2, *, identities: torch.Tensor | None = None, guidance_scale: float = 1.0,
                   sampler: Any = None, image_size: int = 128, seed: int = 0, split: str = "train",
                   batch_size: int = 8, samples_per_shard: int = 256, overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> AugmentReport:
    """Sample, render, embed and write ``n`` avatars x ``views`` photos (see the module docstring).

    Args:
        pipeline: the diffusion pipeline; shape_model: the checkpoint's PCA shape model.
        encoder: identity encoder ``(images (B, 3, H, W) in [0, 1], landmarks (B, 5, 2) px) -> (B, D)``;
            recognizer: its id, written to every ``meta.json`` and the manifest.
        identities: (n, D) embeddings to sample for (CFG ``guidance_scale``), or None (unconditional).
        sampler: the sampler (default DDIM, 50 steps); image_size: photo side, pixels.
        split: the split the samples are written to; progress: called ``(done, n)`` after each batch.
    """
    from fitdiff.data import DatasetWriter
    from fitdiff.data.landmarks import five_point_landmarks
    from fitdiff.data.sample import FaceSample
    from fitdiff.data.validation import SampleSpec
    from fitdiff.diffusion import Sampler, ddim_scheduler
    from fitdiff.synthetic.photo import PhotoRenderer, lighting_meta
    from fitdiff.synthetic.scene import SceneRanges, sample_scene
    from fitdiff.synthetic.textures import ReflectanceMaps

    if n < 1 or views < 1:
        raise ValueError(f"n and views must be >= 1, got n={n}, views={views}")
    if identities is not None and identities.shape[0] != n:
        raise ValueError(f"{identities.shape[0]} identities for {n} avatars")
    sampler = sampler or Sampler(ddim_scheduler(), num_inference_steps=50)
    model = shape_model.cpu()
    centre = model.mean[model.landmarks_5].double().mean(0).numpy() + _CENTRE_LIFT
    renderer = PhotoRenderer(model, image_size, centre)
    res = pipeline.decode(torch.zeros(1, *pipeline.latent_shape, device=next(pipeline.parameters()).device)
                          ).maps["diffuse"].shape[-1]
    spec = SampleSpec(image_resolution=image_size, uv_resolution=res, shape_dim=model.n_components, num_landmarks=68,
                      specular_channels=1, recognizer=recognizer, shape_model=model.model_id)
    rng = np.random.default_rng(seed)
    ranges = SceneRanges()
    generator = torch.Generator().manual_seed(seed)
    done = 0
    with DatasetWriter(out, spec, samples_per_shard, overwrite=overwrite) as writer:
        while done < n:
            b = min(batch_size, n - done)
            cond = identities[done:done + b] if identities is not None else None
            z = pipeline.sample(b, sampler, identity=cond, guidance_scale=guidance_scale, generator=generator)
            face = pipeline.decode(z)
            for i in range(b):
                subject = f"aug{done + i:05d}"
                maps = ReflectanceMaps(
                    diffuse=face.maps["diffuse"][i].permute(1, 2, 0).float().cpu().numpy(),
                    specular=face.maps["specular"][i].permute(1, 2, 0).float().cpu().numpy(),
                    normals=torch.nn.functional.normalize(face.maps["normals"][i], dim=0).permute(1, 2, 0).float().cpu().numpy(),
                ).quantised()
                shape = face.shape[i].float().cpu().numpy().clip(-spec.shape_abs_max, spec.shape_abs_max)
                scenes = [sample_scene(rng, ranges) for _ in range(views)]
                photos = renderer.render(shape, maps, scenes)
                images = torch.from_numpy(np.stack([p.image for p in photos])).permute(0, 3, 1, 2).float() / 255.0
                landmarks = np.stack([p.landmarks for p in photos])
                five = torch.from_numpy(five_point_landmarks(landmarks))
                embeddings = torch.nn.functional.normalize(encoder(images, five).float(), dim=-1).cpu().numpy()
                diffuse, specular, normals = maps.to_uint8()
                for j, photo in enumerate(photos):
                    writer.write(split, FaceSample(
                        key=f"{subject}_{j:03d}", image=photo.image, diffuse=diffuse, specular=specular,
                        normals=normals, shape=shape.astype(np.float32), identity=embeddings[j].astype(np.float32),
                        landmarks=photo.landmarks, meta={
                            "subject": subject, "source": "augmented", "seed": seed, "image": j,
                            "recognizer": recognizer, "shape_model": model.model_id, "uv_resolution": res,
                            "normal_space": "tangent", "landmarks": "ibug68, projected mesh landmark vertices",
                            "identity_condition": "given" if identities is not None else "unconditional",
                            "camera": photo.camera, "lighting": lighting_meta(scenes[j]),
                        }))
            done += b
            if progress is not None:
                progress(done, n)
    manifest = writer.manifest
    log.info("augmented dataset %s: %s", out, manifest.counts if manifest else {})
    return AugmentReport(Path(out), dict(manifest.counts) if manifest else {}, recognizer, n, views)
