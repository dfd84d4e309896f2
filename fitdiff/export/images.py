"""Texture images of an exported avatar: sRGB transfer curve, PNG encoding, and readers for the round trip.

Colour maps (diffuse and specular albedo) are linear reflectances in the model. Viewers (Blender, three.js,
glTF, MTL) treat colour textures as sRGB-encoded and decode them before shading, so the writers store
``linear_to_srgb(albedo)``; :func:`read_texture` with ``srgb=True`` undoes it. Normal maps are data, stored
linearly as ``(n + 1) / 2``.

Tensors and arrays are (C, H, W) with row 0 the TOP of the image, the layout PNG rows are stored in.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

__all__ = [
    "linear_to_srgb",
    "srgb_to_linear",
    "encode_png",
    "read_texture",
    "read_normal_map",
    "COLOUR_ENCODINGS",
]

#: how colour (albedo) maps are stored: ``"srgb"`` (the IEC 61966-2-1 curve) or ``"linear"`` (raw values)
COLOUR_ENCODINGS = ("srgb", "linear")


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve (IEC 61966-2-1) of linear values, clipped to [0, 1] first."""
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`linear_to_srgb` for encoded values in [0, 1]."""
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4))


def encode_png(image: np.ndarray, bits: int = 8) -> bytes:
    """PNG bytes of (C, H, W) values in [0, 1] (clipped): grey for C = 1, RGB for C = 3, RGBA for C = 4;
    8 or 16 bits per channel."""
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"image must be (C, H, W) with C in (1, 3, 4), got {image.shape}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    scale, dtype = (255.0, np.uint8) if bits == 8 else (65535.0, np.uint16)
    hwc = np.round(np.clip(np.transpose(image, (1, 2, 0)), 0.0, 1.0) * scale).astype(dtype)
    # OpenCV orders colour channels BGR(A) and writes 16-bit colour PNGs (Pillow writes 16-bit grey only).
    if hwc.shape[-1] == 1:
        data = hwc[..., 0]
    elif hwc.shape[-1] == 3:
        data = np.ascontiguousarray(hwc[..., ::-1])
    else:
        data = np.ascontiguousarray(hwc[..., [2, 1, 0, 3]])
    ok, buffer = cv2.imencode(".png", data)
    if not ok:  # pragma: no cover - OpenCV fails only on unsupported layouts, excluded above
        raise OSError("PNG encoding failed")
    return buffer.tobytes()


def read_texture(path: str | os.PathLike[str], srgb: bool = False) -> np.ndarray:
    """Read an 8- or 16-bit PNG as float (C, H, W) in [0, 1], RGB(A) order, row 0 = top.

    Args:
        path: the image file.
        srgb: decode the sRGB curve of the colour channels (alpha stays linear): use it for colour maps
            written with ``colour_encoding="srgb"`` to get the model's linear albedo back.
    """
    data = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise OSError(f"could not read image {path}")
    scale = 65535.0 if data.dtype == np.uint16 else 255.0
    if data.ndim == 2:
        data = data[..., None]
    elif data.shape[-1] == 3:
        data = data[..., ::-1]
    elif data.shape[-1] == 4:
        data = data[..., [2, 1, 0, 3]]
    image = np.transpose(data.astype(np.float64) / scale, (2, 0, 1))
    if srgb:
        colour = 3 if image.shape[0] >= 3 else 1
        image[:colour] = srgb_to_linear(image[:colour])
    return image


def read_normal_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a normal-map PNG (``(n + 1) / 2`` per channel) to unit vectors (3, H, W) in [-1, 1]."""
    encoded = read_texture(path)[:3]
    vectors = encoded * 2.0 - 1.0
    return vectors / np.maximum(np.linalg.norm(vectors, axis=0, keepdims=True), 1e-12)
