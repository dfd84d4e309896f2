"""One overview image of several avatars: a row per avatar with its maps and renders, and a PNG writer.

Row layout (left to right): diffuse | specular | normals | render 0 | render 1 | ...; with ground truth,
each avatar's row is followed by the same row for its ground truth. Cells a row has no image for (fewer
renders than the widest row) are left blank in the padding colour.

Display encoding: albedo maps are linear reflectances, shown sRGB-encoded by default (as a viewer would
show them; ``srgb=False`` shows the raw values); normals are shown as (n + 1) / 2; renders are taken as
display values in [0, 1] (e.g. :class:`fitdiff.face.FaceRender` ``image``, already tone-mapped).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import make_grid

from fitdiff.io import atomic_write_bytes

__all__ = ["avatar_grid", "save_png", "GRID_MAP_KEYS"]

GRID_MAP_KEYS = ("diffuse", "specular", "normals")

#: avatars: a sequence of map dicts of (C, H, W) tensors, or one dict of (B, C, H, W) batches
Avatars = Union[Sequence[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]
#: renders: per avatar None, (3, H, W), (K, 3, H, W) or a list of (3, H, W); or a (B, [K,] 3, H, W) batch
Renders = Union[Sequence[Any], torch.Tensor, None]


def _float(x: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return t


def _srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=1e-12) ** (1.0 / 2.4) - 0.055)


def _rgb(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"{what} must be (1 or 3, H, W), got {tuple(x.shape)}")
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _split_avatars(avatars: Avatars | None, what: str) -> list[Mapping[str, torch.Tensor]]:
    if avatars is None:
        return []
    if isinstance(avatars, Mapping):
        sizes = {key: len(avatars[key]) for key in GRID_MAP_KEYS if key in avatars}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{what}: batched maps disagree on the batch size: {sizes}")
        count = next(iter(sizes.values()), 0)
        return [{key: avatars[key][i] for key in sizes} for i in range(count)]
    return list(avatars)


def _split_renders(renders: Renders, count: int, what: str) -> list[list[torch.Tensor]]:
    if renders is None:
        return [[] for _ in range(count)]
    if len(renders) != count:
        raise ValueError(f"{what}: {len(renders)} entries for {count} avatars")
    rows: list[list[torch.Tensor]] = []
    for i, item in enumerate(renders):
        if item is None:
            rows.append([])
        elif isinstance(item, torch.Tensor | np.ndarray) and np.ndim(item) == 3:
            rows.append([_float(item, f"{what}[{i}]")])
        else:
            rows.append([_float(image, f"{what}[{i}]") for image in item])
    return rows


def _map_tiles(maps: Mapping[str, torch.Tensor], what: str, srgb: bool) -> list[torch.Tensor]:
    missing = [key for key in GRID_MAP_KEYS if key not in maps]
    if missing:
        raise KeyError(f"{what} needs maps {list(GRID_MAP_KEYS)}; missing {missing}")
    albedo = _srgb if srgb else (lambda x: x.clamp(0.0, 1.0))
    return [
        albedo(_rgb(_float(maps["diffuse"], f"{what} diffuse"), f"{what} diffuse")),
        albedo(_rgb(_float(maps["specular"], f"{what} specular"), f"{what} specular")),
        ((_rgb(_float(maps["normals"], f"{what} normals"), f"{what} normals") + 1.0) / 2.0).clamp(0.0, 1.0),
    ]


def _fit(image: torch.Tensor, tile: int, background: float) -> torch.Tensor:
    """(3, H, W) scaled to fit a tile x tile square (aspect kept), centred on ``background``."""
    height, width = image.shape[1:]
    scale = tile / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size != (height, width):
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    canvas = torch.full((3, tile, tile), background)
    top, left = (tile - size[0]) // 2, (tile - size[1]) // 2
    canvas[:, top : top + size[0], left : left + size[1]] = image.clamp(0.0, 1.0)
    return canvas


def avatar_grid(
    avatars: Avatars,
    renders: Renders = None,
    ground_truth: Avatars | None = None,
    ground_truth_renders: Renders = None,
    *,
    tile: int | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
    srgb: bool = True,
) -> np.ndarray:
    """Overview image of avatars (see the module docstring for the layout).

    Args:
        avatars: N avatars, each a mapping with ``diffuse`` (3, H, W) and ``specular`` (1 or 3, H, W)
            albedo in [0, 1] and ``normals`` (3, H, W) unit vectors in [-1, 1]; or one mapping of
            (N, C, H, W) batches. Any device and float dtype.
        renders: per avatar None, a (3, H, W) image, a (K, 3, H, W) stack or a list of (3, H, W) images,
            display values in [0, 1]; or a (N, 3, H, W) / (N, K, 3, H, W) batch.
        ground_truth: N ground-truth avatars (same forms as ``avatars``), each drawn under its avatar.
        ground_truth_renders: renders of the ground truth (same forms as ``renders``).
        tile: side in pixels of each (square) cell; default the first diffuse map's height. Images are
            scaled to fit (aspect ratio kept).
        padding: pixels between cells and around the grid; pad_value: their grey level in [0, 1].
        srgb: show albedo maps sRGB-encoded (True) or as raw linear values.

    Returns:
        (H, W, 3) uint8 image.
    """
    samples = _split_avatars(avatars, "avatars")
    if not samples:
        raise ValueError("avatar_grid needs at least one avatar")
    truths = _split_avatars(ground_truth, "ground_truth")
    if ground_truth is not None and len(truths) != len(samples):
        raise ValueError(f"ground_truth has {len(truths)} avatars for {len(samples)} avatars")
    sample_renders = _split_renders(renders, len(samples), "renders")
    truth_renders = _split_renders(ground_truth_renders, len(truths), "ground_truth_renders")
    rows: list[list[torch.Tensor]] = []
    for i, maps in enumerate(samples):
        rows.append(
            _map_tiles(maps, f"avatar {i}", srgb)
            + [_rgb(r, f"render of avatar {i}") for r in sample_renders[i]]
        )
        if truths:
            rows.append(
                _map_tiles(truths[i], f"ground truth {i}", srgb)
                + [_rgb(r, f"render of ground truth {i}") for r in truth_renders[i]]
            )
    size = int(tile) if tile is not None else int(rows[0][0].shape[1])
    if size < 1:
        raise ValueError(f"tile must be >= 1, got {size}")
    columns = max(len(row) for row in rows)
    blank = torch.full((3, size, size), float(pad_value))
    cells: list[torch.Tensor] = []
    for row in rows:
        cells.extend([_fit(cell, size, float(pad_value)) for cell in row] + [blank] * (columns - len(row)))
    grid = make_grid(torch.stack(cells), nrow=columns, padding=padding, pad_value=float(pad_value))
    return (grid.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def save_png(path: str | os.PathLike[str], image: Any) -> Path:
    """Atomically write an image as PNG and return the path.

    Args:
        path: destination (parent folders are created).
        image: (H, W), (H, W, 3) or (H, W, 4) uint8 array (e.g. from :func:`avatar_grid`), or a (C, H, W)
            tensor (uint8, or float in [0, 1]) with C in (1, 3, 4).
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f"a tensor image must be (C, H, W) with C in (1, 3, 4), got {tuple(t.shape)}")
        if t.dtype != torch.uint8:
            t = (t.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        array = t.permute(1, 2, 0).numpy()
        array = array[..., 0] if array.shape[-1] == 1 else array
    else:
        array = np.asarray(image)
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[-1] not in (3, 4))
    ):
        raise ValueError(
            f"image must be uint8 (H, W), (H, W, 3) or (H, W, 4), got {array.dtype} {array.shape}"
        )
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
