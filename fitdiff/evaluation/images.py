"""Image grids of fits for the report: one PNG per method, one row per photo of the first batch.

Columns: the photo the fit saw | the fit's render over it (fitted camera and lights) | the fit relit by
the three novel lights of :func:`fitdiff.fitting.relight.novel_lights` (left, right, top) | the diffuse
albedo (sRGB-encoded for display) | the specular albedo | the normal map as colours ``(n + 1) / 2``.
Maps are scaled to the photo size. Written atomically as ``<folder>/<stem>.png``.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from fitdiff.evaluation.fit_runs import FitOutcome
from fitdiff.io import atomic_write_bytes

__all__ = ["COLUMNS", "fit_grid", "write_fit_grid", "slug"]

#: the grid's column titles
COLUMNS: tuple[str, ...] = ("photo", "render", "relit left", "relit right", "relit top", "diffuse", "specular",
                            "normals")


def slug(text: str) -> str:
    """A file-name-safe form of a row label (``guided eps / noise 0.1`` -> ``guided-eps-noise-0-1``)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "method"


def _srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.pow(1.0 / 2.4) - 0.055)


@torch.no_grad()
def fit_grid(scene: object, outcome: FitOutcome, rows: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 grid of the first ``rows`` fits of ``outcome`` (module docstring)."""
    from fitdiff.fitting.relight import novel_lights, render_face

    result = outcome.first
    photos = outcome.first_photos[:rows].to(result.latent.device)
    n = photos.shape[0]
    size = photos.shape[-1]
    face, params = result.face, result.params
    background = outcome.first_photos.to(result.latent.device)
    columns = [photos, render_face(scene, face, params, background).image[:n]]
    for lights in novel_lights(params).values():
        columns.append(render_face(scene, face, params, background, lights).image[:n])
    maps = face.maps
    specular = maps["specular"][:n].float()
    columns += [_srgb(maps["diffuse"][:n].float()), _srgb(specular.expand(-1, 3, -1, -1) if specular.shape[1] == 1
                                                          else specular),
                (F.normalize(maps["normals"][:n].float(), dim=1) + 1.0) * 0.5]
    tiles = [F.interpolate(c.float().clamp(0, 1).cpu(), size=(size, size), mode="bilinear", align_corners=False)
             if c.shape[-1] != size else c.float().clamp(0, 1).cpu() for c in columns]
    cells = torch.stack(tiles, dim=1).reshape(-1, 3, size, size)  # row-major: photo by photo
    grid = make_grid(cells, nrow=len(columns), padding=2, pad_value=1.0)
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def write_fit_grid(folder: str | Path, stem: str, scene: object, outcome: FitOutcome, rows: int = 4) -> Path:
    """:func:`fit_grid` written to ``<folder>/<stem>.png``; returns the path."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(fit_grid(scene, outcome, rows)).save(buffer, format="PNG")
    return atomic_write_bytes(Path(folder) / f"{stem}.png", buffer.getvalue())
