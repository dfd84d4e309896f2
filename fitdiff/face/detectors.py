"""Choosing a face detector from a weights file: RetinaFace (the asset) or the synthetic detector.

Both detectors answer ``detect(image) -> list[Detection]`` and ``detect_one(image, source)`` (raising
:class:`~fitdiff.face.detection.NoFaceError`), so the tools that need landmarks of an unannotated photo
(``fitdiff.reconstruct``, ``fitdiff.sample --identity``, the demo) take either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from fitdiff.face import detection
from fitdiff.face.detection import FaceDetector
from fitdiff.face.synthetic_detector import DETECTOR_KIND, HEADER_KEY, SyntheticFaceDetector

__all__ = ["AnyFaceDetector", "face_detector", "is_synthetic_detector"]

AnyFaceDetector = Union[FaceDetector, SyntheticFaceDetector]


def is_synthetic_detector(path: str | Path) -> bool:
    """Whether ``path`` is a ``.safetensors`` file written by ``data_prep/train_detector.py``."""
    import json

    from fitdiff.io import safetensors_metadata

    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        record = json.loads(safetensors_metadata(path, what="face detector weights").get(HEADER_KEY, "{}"))
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("kind") == DETECTOR_KIND


def face_detector(weights: str | Path | None = None) -> AnyFaceDetector:
    """The detector of ``weights``: None -> RetinaFace from the ``retinaface_resnet50`` asset; a synthetic
    detector file (``DATASET/detector.safetensors``) -> :class:`SyntheticFaceDetector`; any other file ->
    RetinaFace with those weights.

    Raises:
        FileNotFoundError: ``weights`` names no file. Asset errors: the RetinaFace asset is missing.
    """
    if weights is None:  # looked up at call time, so a stand-in set on the module is used
        return detection.FaceDetector()
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"face detector weights {path} do not exist")
    if is_synthetic_detector(path):
        return SyntheticFaceDetector(path)
    return detection.FaceDetector(path)
