"""Training of the synthetic face detector (:mod:`fitdiff.face.synthetic_detector`) on a built dataset.

Positives are the photos of the training split with their 5 ArcFace landmarks (from the 68 stored per
sample), under a random similarity transform (scale 0.85-1.15, rotation up to 10 degrees, shift up to
10 % of the side) and colour gain (0.8-1.2 per channel). Negatives hold no face: the procedural
background each photo was composited over (rebuilt from its ``meta.json``, plus sensor noise),
backgrounds of unused seeds, flat colours and smooth noise. The loss is binary cross-entropy on the face
logit plus 20 x L1 on the landmark fractions of the positives. The held-out check uses the validation
split's photos and their backgrounds, untransformed: landmark error in pixels and the share of photos
and backgrounds classified right.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fitdiff.data.landmarks import five_point_landmarks
from fitdiff.face.synthetic_detector import DETECTOR_KIND, HEADER_KEY, DetectorNet, SyntheticFaceDetector
from fitdiff.io import atomic_write_bytes
from fitdiff.synthetic.photo import photo_background, sensor_noise
from fitdiff.synthetic.scene import background_image

__all__ = ["DetectorTrainingConfig", "DetectorCheck", "face_and_background", "train_detector",
           "check_detector", "save_detector_weights"]

log = logging.getLogger(__name__)


@dataclass
class DetectorTrainingConfig:
    """Hyper-parameters of :func:`train_detector` (defaults: about 30 s on 2 CPU cores).

    Attributes:
        epochs, batch_size: passes and photos per step (as many negatives again in every batch).
        lr: peak AdamW learning rate (one-cycle schedule); width: first-stage channels.
        landmark_weight: weight of the landmark L1 (fractions of the side) against the BCE.
        seed: initialisation, order, transforms and negatives.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    width: int = 16
    landmark_weight: float = 20.0
    seed: int = 0


def face_and_background(images: torch.Tensor, landmarks: torch.Tensor, metas: list[dict]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Photos (N, 3, H, W) in [0, 1], their (N, 5, 2) landmarks in pixels, and their backgrounds (N, 3, H, W)
    rebuilt from each photo's meta with the same sensor noise (the photo without its face)."""
    backgrounds = []
    for meta in metas:
        clean = photo_background(meta)
        lighting = meta["lighting"]
        noisy = clean + sensor_noise(lighting["noise_seed"], lighting["noise_levels"], clean.shape)
        backgrounds.append(np.round(np.clip(noisy, 0.0, 1.0) * 255.0) / 255.0)
    back = torch.from_numpy(np.stack(backgrounds)).permute(0, 3, 1, 2).float()
    points = torch.from_numpy(five_point_landmarks(landmarks.numpy()))
    return images.float(), points.float(), back


def _similarity(batch: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 2, 3) random output->input affine maps in normalised coordinates (see the module docstring)."""
    u = torch.rand(batch, 4, generator=generator)
    scale = 0.85 + 0.3 * u[:, 0]
    angle = (u[:, 1] * 2 - 1) * math.radians(10.0)
    shift = (u[:, 2:] * 2 - 1) * 0.2  # 10 % of the side = 0.2 in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def _warp(images: torch.Tensor, points: torch.Tensor | None, theta: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images resampled through ``theta`` (edges replicated) and landmark pixels moved alike."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if points is None:
        return out, None
    size = images.new_tensor([images.shape[-1], images.shape[-2]])
    normal = points / size * 2.0 - 1.0  # input = A output + b  =>  output = A^-1 (input - b)
    inverse = torch.linalg.inv(theta[:, :, :2])
    moved = torch.einsum("bij,bnj->bni", inverse, normal - theta[:, None, :, 2])
    return out, (moved + 1.0) / 2.0 * size


def _negatives(backgrounds: torch.Tensor, generator: torch.Generator, offset: int) -> torch.Tensor:
    """As many face-free images as ``backgrounds``: a quarter each of those backgrounds, unused-seed
    backgrounds, flat colours and smooth noise."""
    n, _, h, w = backgrounds.shape
    kind = torch.randint(0, 4, (n,), generator=generator)
    out = backgrounds.clone()
    for i in range(n):
        k = int(kind[i])
        if k == 1:
            out[i] = torch.from_numpy(background_image(10_000_000 + offset + i, h)).permute(2, 0, 1).float()
        elif k == 2:
            out[i] = torch.rand(3, 1, 1, generator=generator).expand(3, h, w)
        elif k == 3:
            coarse = torch.rand(1, 3, 4, 4, generator=generator)
            out[i] = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    return (out + torch.randn(out.shape, generator=generator) * (2.0 / 255.0)).clamp(0, 1)


def train_detector(images: torch.Tensor, points: torch.Tensor, backgrounds: torch.Tensor,
                   config: DetectorTrainingConfig | None = None,
                   progress: Callable[[int, int, float], None] | None = None) -> tuple[DetectorNet, list[float]]:
    """Train a :class:`DetectorNet` (see the module docstring); deterministic for a config and thread count.

    Args:
        images: (N, 3, H, W) photos in [0, 1]; points: (N, 5, 2) their landmarks, pixels;
        backgrounds: (N, 3, H, W) the same photos without the face.
        progress: called as ``progress(step, total_steps, loss)``.

    Returns:
        The network (eval mode) and the mean loss of every epoch.
    """
    config = config or DetectorTrainingConfig()
    if images.shape != backgrounds.shape or points.shape != (len(images), 5, 2):
        raise ValueError(f"images {tuple(images.shape)}, backgrounds {tuple(backgrounds.shape)} and landmarks "
                         f"{tuple(points.shape)} do not match (N, 3, H, W) / (N, 5, 2)")
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = DetectorNet(config.width)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    per_epoch = max(1, len(images) // config.batch_size)
    total = per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=total, pct_start=0.15)
    size = images.new_tensor([images.shape[-1], images.shape[-2]])
    history, step = [], 0
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        losses = []
        for b in range(per_epoch):
            index = order[b * config.batch_size:(b + 1) * config.batch_size]
            faces, landmarks = _warp(images[index], points[index], _similarity(len(index), generator))
            gain = 0.8 + 0.4 * torch.rand(len(index), 3, 1, 1, generator=generator)
            faces = (faces * gain).clamp(0, 1)
            empty, _ = _warp(_negatives(backgrounds[index], generator, step * config.batch_size), None,
                             _similarity(len(index), generator))
            out = net(torch.cat([faces, empty]))
            labels = torch.cat([torch.ones(len(index)), torch.zeros(len(index))])
            loss = F.binary_cross_entropy_with_logits(out[:, 0], labels)
            loss = loss + config.landmark_weight * F.l1_loss(out[: len(index), 1:], (landmarks / size).flatten(1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
            if progress is not None:
                progress(step, total, losses[-1])
        history.append(float(np.mean(losses)))
        log.info("detector epoch %d/%d: loss %.4f", len(history), config.epochs, history[-1])
    return net.eval(), history


@dataclass
class DetectorCheck:
    """Held-out quality of a detector: mean and 95th-percentile landmark error (pixels), share of photos
    found (recall) and of backgrounds rejected (specificity), the photo side in pixels and the counts."""

    landmark_px: float
    landmark_px_p95: float
    recall: float
    specificity: float
    image_size: int
    photos: int
    backgrounds: int

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def check_detector(detector: SyntheticFaceDetector, images: torch.Tensor, points: torch.Tensor,
                   backgrounds: torch.Tensor, batch_size: int = 128) -> DetectorCheck:
    """Score ``detector`` on held-out photos (with landmarks) and their backgrounds."""
    scores, found, rejected = [], [], []
    for start in range(0, len(images), batch_size):
        p, pts = detector.predict(images[start:start + batch_size])
        q, _ = detector.predict(backgrounds[start:start + batch_size])
        scores.append((pts - points[start:start + batch_size]).norm(dim=-1).mean(-1))
        found.append(p > detector.score_threshold)
        rejected.append(q <= detector.score_threshold)
    error = torch.cat(scores)
    return DetectorCheck(float(error.mean()), float(torch.quantile(error, 0.95)), float(torch.cat(found).float().mean()),
                         float(torch.cat(rejected).float().mean()), int(images.shape[-1]), len(images),
                         len(backgrounds))


def save_detector_weights(net: DetectorNet, path: str | Path, record: dict) -> str:
    """Write ``net`` and its training ``record`` (JSON in the header) to ``path``; return the sha256."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    header = {**record, "kind": DETECTOR_KIND, "width": net.width}
    payload = save(state, metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})
    atomic_write_bytes(path, payload)
    return hashlib.sha256(payload).hexdigest()
