"""Reading a user's photo safely: refused before decoding when it is too large, downscaled when it is big.

:func:`read_photo` is the one loader of the commands that take a photo (``python -m fitdiff.reconstruct
--image``, ``python -m fitdiff.sample --identity photo.png``):

- a missing file, an empty (0-byte) file and a file PIL cannot read raise :class:`PhotoError` naming it;
- a file whose header claims more than :data:`MAX_PHOTO_PIXELS` pixels is refused from its header alone
  (``Image.open`` reads no pixel data), before anything is decoded: a decompression bomb (a few hundred
  KB of PNG that decodes to gigabytes) never reaches memory. PIL's own bomb check (an error above twice
  ``PIL.Image.MAX_IMAGE_PIXELS``, a warning above it) gives the same message; its limit is not changed;
- a photo whose longest side exceeds :data:`MAX_PHOTO_SIDE` is downscaled on load to that side (JPEG
  files are decoded at a reduced size through ``Image.draft``, then resampled exactly onto the target).

Landmarks read from a file are in the pixels of the file; :meth:`Photo.points_from_file` maps them
onto the loaded (maybe downscaled) photo. Pixel coordinates are continuous (pixel centres at integer +
0.5, the project convention), so the mapping is a plain per-axis scale.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MAX_PHOTO_PIXELS", "MAX_PHOTO_SIDE", "Photo", "PhotoError", "read_photo"]

#: largest photo accepted (width x height, from the file's header), below PIL's bomb threshold (~89 M)
MAX_PHOTO_PIXELS = 40_000_000
#: longest side of a loaded photo; larger photos are downscaled (a face needs far fewer pixels)
MAX_PHOTO_SIDE = 2048

_RESIZABLE_MODES = ("RGB", "RGBA", "RGBX", "L", "LA", "CMYK")


class PhotoError(ValueError):
    """A photo that cannot be used: missing, empty, unreadable or too large (the message names the file)."""


@dataclass(frozen=True)
class Photo:
    """A photo as loaded.

    Attributes:
        path: the file.
        pixels: (h, w, 3) uint8 RGB, downscaled when the file is larger than the loader's ``max_side``.
        file_size: (width, height) of the file's image.
    """

    path: Path
    pixels: np.ndarray
    file_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as loaded."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factor from file pixels to loaded pixels (1.0 when not downscaled)."""
        return self.size[0] / self.file_size[0], self.size[1] / self.file_size[1]

    @property
    def downscaled(self) -> bool:
        return self.size != self.file_size

    def points_from_file(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) pixel coordinates in the file's image -> the same points in :attr:`pixels` (float32)."""
        points = np.asarray(points, dtype=np.float32)
        return (points * np.asarray(self.scale, dtype=np.float32)).astype(np.float32)


def _fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) of the same aspect ratio whose longest side is ``max_side`` (the size itself when smaller)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    factor = max_side / longest
    return max(1, min(max_side, round(width * factor))), max(1, min(max_side, round(height * factor)))


def _too_large(what: str, path: Path, pixels: int, size: str, max_pixels: int, max_side: int) -> PhotoError:
    return PhotoError(
        f"{what} {path}: {size}{pixels:,} pixels is more than the {max_pixels:,} pixels a photo may have (a "
        f"decompression bomb, or a scan far larger than a face needs); nothing was decoded: downscale it (a longest "
        f"side of {max_side} pixels is plenty) and run again"
    )


def read_photo(path: str | Path, *, what: str = "--image", max_pixels: int = MAX_PHOTO_PIXELS,
               max_side: int = MAX_PHOTO_SIDE) -> Photo:
    """Load a photo as RGB (see the module docstring).

    Args:
        path: the image file (PNG, JPEG, BMP, WebP, ... whatever PIL reads).
        what: how the messages name the input (the command-line option).
        max_pixels: refuse images with more pixels than this (checked on the header, before decoding).
        max_side: downscale images whose longest side is longer.

    Raises:
        PhotoError: missing, empty, unreadable or too large; the message names the file.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise PhotoError(f"{what}: no file at {path}")
    if path.stat().st_size == 0:
        raise PhotoError(f"{what} {path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else max_pixels + 1
        raise _too_large(what, path, pixels, "", max_pixels, max_side) from None
    except Exception as exc:
        raise PhotoError(f"{what} {path}: not a readable image ({exc})") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise _too_large(what, path, width * height, f"{width} x {height} = ", max_pixels, max_side)
        target = _fit_size(width, height, max_side)
        try:
            if target != (width, height):
                drafted = image.draft("RGB", target)  # JPEG: decode at 1/2, 1/4 or 1/8 scale, still >= target
                box = drafted[1] if drafted is not None else None  # the file's image in draft pixels
                source = image if image.mode in _RESIZABLE_MODES else image.convert("RGB")
                loaded = source.resize(target, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
            else:
                loaded = image
            pixels = np.asarray(loaded.convert("RGB"))
        except Exception as exc:  # truncated or damaged pixel data
            raise PhotoError(f"{what} {path}: not a readable image ({exc})") from exc
    return Photo(path=path, pixels=pixels, file_size=(int(width), int(height)))
