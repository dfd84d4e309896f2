"""Five ArcFace-order landmarks from a sample's landmark array."""

from __future__ import annotations

import numpy as np

__all__ = ["five_point_landmarks"]

# 68-point (iBUG/300-W, 0-based) indices: eyes 36-41 and 42-47, nose tip 30, mouth corners 48 and 54
_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_LEFT = 48
_MOUTH_RIGHT = 54


def five_point_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """ArcFace 5-point landmarks (eye, eye, nose tip, mouth corner, mouth corner; image-left first).

    Args:
        landmarks: (5, 2) returned as is, or (68, 2) iBUG-68 points, pixels; or a batch (B, N, 2).

    Returns:
        (5, 2) or (B, 5, 2) float32 pixels.

    Raises:
        ValueError: any other number of points.
    """
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim not in (2, 3) or points.shape[-1] != 2:
        raise ValueError(f"landmarks must be (N, 2) or (B, N, 2), got {points.shape}")
    count = points.shape[-2]
    if count == 5:
        return points.copy()
    if count != 68:
        raise ValueError(f"5-point landmarks need N == 5 or N == 68 landmarks, got N == {count}")
    return np.stack(
        [
            points[..., _LEFT_EYE, :].mean(axis=-2),
            points[..., _RIGHT_EYE, :].mean(axis=-2),
            points[..., _NOSE_TIP, :],
            points[..., _MOUTH_LEFT, :],
            points[..., _MOUTH_RIGHT, :],
        ],
        axis=-2,
    ).astype(np.float32)
