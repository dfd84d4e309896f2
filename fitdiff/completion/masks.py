"""Validity masks of UV maps: which texels of a partial map are known, and the benchmark's mask kinds.

A UV mask is a (R, R) bool array in map pixels (row 0 = the top of the map, as the maps are stored),
True where a texel is known. The *face region* is the part of the UV square the mesh's chart covers
(:func:`fitdiff.synthetic.uv_layout.uv_layout`); the benchmark's masks hide a given share of it:

- ``left_half``: the subject's left of a vertical cut through the frontal face (x in mm of the mean
  shape), the cut placed so the hidden share is the one asked for (0.5 = the left half);
- ``blobs``: a union of random discs in UV space, added until the share is reached (seeded).

:func:`read_mask` reads a user's mask image (white = known).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["MASK_KINDS", "blob_mask", "hidden_share", "left_half_mask", "read_mask"]

MASK_KINDS: tuple[str, ...] = ("left_half", "blobs")


def hidden_share(known: np.ndarray, face: np.ndarray) -> float:
    """Share of the face region's texels that ``known`` hides (0 ... 1)."""
    return float((~known & face).sum() / max(1, face.sum()))


def left_half_mask(frontal_x: np.ndarray, face: np.ndarray, share: float = 0.5) -> np.ndarray:
    """Known texels when the subject's left part of the face (largest x) hiding ``share`` of ``face`` is
    missing; ``frontal_x`` (R, R) mm of the mean shape per texel."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    cut = np.quantile(frontal_x[face], 1.0 - share)
    return ~(frontal_x > cut)


def blob_mask(face: np.ndarray, share: float, seed: int = 0, radius: tuple[float, float] = (0.06, 0.16)
              ) -> np.ndarray:
    """Known texels when random discs (radius a fraction of the side, uniform in ``radius``) centred in the
    face region hide at least ``share`` of it; deterministic for ``seed``."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    size = face.shape[0]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    centres = np.argwhere(face)
    known = np.ones_like(face, dtype=bool)
    while hidden_share(known, face) < share:
        cy, cx = centres[rng.integers(len(centres))] + 0.5
        r = rng.uniform(*radius) * size
        known &= (yy - cy) ** 2 + (xx - cx) ** 2 > r * r
    return known


def read_mask(path: str | Path, resolution: int) -> np.ndarray:
    """A mask image (any mode; white / non-zero = known) as a (R, R) bool array, resized with nearest
    neighbour to the maps' ``resolution``.

    Raises:
        ValueError: the file is missing or not an image (the message names it).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--mask: no file at {path}")
    try:
        with Image.open(path) as image:
            gray = image.convert("L")
            if gray.size != (resolution, resolution):
                gray = gray.resize((resolution, resolution), Image.NEAREST)
            return np.asarray(gray) >= 128
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"--mask {path}: not a readable image ({exc})") from None
