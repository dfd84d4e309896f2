"""The one rule from iBUG-68 landmarks to the 5 ArcFace landmarks, and the 5-point landmarks of a sample.

ArcFace's template lists its points in image order for a frontal face: the eye on the image's left
first. On a photo of a frontal face the image's left is the *subject's right*, which iBUG-68 numbers
36-41 (and mouth corner 48). Naming below is by image side, with the subject's side in the comments.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IBUG68_TO_ARCFACE5", "five_from_68", "five_point_landmarks"]

#: iBUG-68 (0-based) indices averaged into each ArcFace point, in ArcFace template order.
IBUG68_TO_ARCFACE5: tuple[tuple[int, ...], ...] = (
    tuple(range(36, 42)),  # image-left eye centre = subject's right eye (6 contour points)
    tuple(range(42, 48)),  # image-right eye centre = subject's left eye
    (30,),  # nose tip
    (48,),  # image-left mouth corner = subject's right
    (54,),  # image-right mouth corner = subject's left
)


def five_from_68(points: np.ndarray) -> np.ndarray:
    """ArcFace 5 points from iBUG-68 points of any dimension: (..., 68, D) -> (..., 5, D).

    Each output point is the mean of its :data:`IBUG68_TO_ARCFACE5` group (eye centres; nose tip and
    mouth corners are single points). Floating dtypes are kept, others become float64.
    """
    points = np.asarray(points)
    if points.ndim < 2 or points.shape[-2] != 68:
        raise ValueError(f"expected (..., 68, D) iBUG-68 points, got {points.shape}")
    if not np.issubdtype(points.dtype, np.floating):
        points = points.astype(np.float64)
    return np.stack([points[..., list(group), :].mean(axis=-2) for group in IBUG68_TO_ARCFACE5], axis=-2)


def five_point_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """ArcFace 5-point landmarks of a sample (eye, eye, nose tip, mouth corner, mouth corner; image-left
    first, see :data:`IBUG68_TO_ARCFACE5`).

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
    return five_from_68(points).astype(np.float32)
