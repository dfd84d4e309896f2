"""Photo corruptions of the robustness table, deterministic for a seed.

Each takes (B, 3, H, W) display-space photos in [0, 1] and returns corrupted copies:

- ``occluder``: a grey (0.5) axis-aligned rectangle of 20% of the face's area, the face being the
  bounding box of its 68 landmarks; aspect ratio in [0.5, 2] and position inside the box drawn per photo;
- ``side_light``: the ground-truth face re-rendered with the photo's own camera and lights plus a strong
  white directional light from the camera's right (intensity 1.5, 80° off the view axis), over the photo
  (embedded dataset only: it needs the ground truth and ``meta.json``);
- ``noise``: additive Gaussian noise of std 0.1, clipped to [0, 1];
- ``jpeg``: JPEG compression at quality 20 (libjpeg through Pillow, 4:2:0 chroma subsampling).
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch

from fitdiff.face.scene import FaceScene, SceneLights, camera_from_meta
from fitdiff.render import DirectionalLights

__all__ = ["CORRUPTIONS", "occluder", "side_light", "gaussian_noise", "jpeg"]

#: the corruptions of the robustness table, in report order
CORRUPTIONS = ("occluder", "side_light", "noise", "jpeg")


def _rng(seed: int, index: int, tag: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(tag), int(index)]))


def occluder(photos: torch.Tensor, landmarks: torch.Tensor, indices: list[int], seed: int = 0,
             fraction: float = 0.2, grey: float = 0.5) -> torch.Tensor:
    """Grey rectangles over ``fraction`` of each face's landmark box (module docstring); ``indices`` seed
    each photo's rectangle."""
    out = photos.clone()
    height, width = photos.shape[-2:]
    for b, index in enumerate(indices):
        rng = _rng(seed, index, 1)
        lo, hi = landmarks[b].min(0).values, landmarks[b].max(0).values
        box_w, box_h = float(hi[0] - lo[0]), float(hi[1] - lo[1])
        area = fraction * box_w * box_h
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        w = min(box_w, math.sqrt(area * aspect))
        h = min(box_h, area / max(w, 1e-6))
        x0 = float(lo[0]) + rng.uniform(0.0, max(0.0, box_w - w))
        y0 = float(lo[1]) + rng.uniform(0.0, max(0.0, box_h - h))
        xs, xe = max(0, round(x0)), min(width, round(x0 + w))
        ys, ye = max(0, round(y0)), min(height, round(y0 + h))
        out[b, :, ys:ye, xs:xe] = grey
    return out


def gaussian_noise(photos: torch.Tensor, indices: list[int], seed: int = 0, sigma: float = 0.1) -> torch.Tensor:
    """``clip(photo + N(0, sigma^2))`` with per-photo noise seeded by ``indices``."""
    noise = torch.stack([torch.from_numpy(_rng(seed, i, 2).normal(0.0, sigma, photos.shape[1:]).astype(np.float32))
                         for i in indices]).to(photos)
    return (photos + noise).clamp(0.0, 1.0)


def jpeg(photos: torch.Tensor, quality: int = 20) -> torch.Tensor:
    """JPEG round trip at ``quality`` (Pillow), per photo."""
    from PIL import Image

    out = []
    for photo in photos:
        array = (photo.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(torch.from_numpy(np.asarray(decoded.convert("RGB")).copy()).permute(2, 0, 1))
    return torch.stack(out).to(photos).div(255.0)


@torch.no_grad()
def side_light(scene: FaceScene, photos: torch.Tensor, meta: list[dict], shape: torch.Tensor,
               maps: dict[str, torch.Tensor], intensity: float = 1.5, angle_deg: float = 80.0) -> torch.Tensor:
    """The ground-truth faces re-rendered with an extra strong light from the camera's right (module
    docstring) over the photos; ``shape`` (B, K) and ``maps`` (B, C, R, R) are the ground truth."""
    device = photos.device
    camera, lights = camera_from_meta(meta, device=device)
    angle = math.radians(angle_deg)
    view_dir = torch.tensor([math.sin(angle), 0.0, math.cos(angle)], device=device)
    direction = (camera.R.transpose(1, 2) @ view_dir.expand(camera.batch_size, 3)[..., None])[..., 0]
    old = lights.directional
    directional = DirectionalLights(
        direction=torch.cat([old.direction, direction[:, None]], 1),
        color=torch.cat([old.color, torch.ones_like(old.color[:, :1])], 1),
        intensity=torch.cat([old.intensity, torch.full_like(old.intensity[:, :1], intensity)], 1),
    )
    lit = SceneLights(sh=lights.sh, directional=directional, exposure=lights.exposure, shininess=lights.shininess,
                      gamma=lights.gamma)
    out = scene(shape.to(device), maps["diffuse"].to(device), maps["specular"].to(device), maps["normals"].to(device),
                camera, lit, background=photos)
    return out.image
