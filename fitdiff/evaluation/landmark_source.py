"""Where the fits of a fitting table take their 2D landmarks: the dataset's, or a detector's on the photo.

The embedded dataset's photos come with the 68 landmarks of their ground-truth face. Fitting with them
measures the method under perfect landmarks; a corruption of the photo (occluder, side light, noise,
JPEG) then never reaches the landmark term, which pins the fitter's shape whatever the photo shows. With
``table.landmarks=detected`` every fit instead takes the 5 landmarks that the dataset's synthetic face
detector (``DATASET/detector.safetensors``, written by ``data_prep/train_detector.py``) finds on the photo
the fit sees, corrupted or not: what a fit of an unannotated photo gets. The scores (landmark error
included) are always against the dataset's ground truth.

The detector's face probability is kept per photo: a photo whose probability is at or below the
detector's threshold counts as "no face found" (the ``faces_found`` count of each row) and is still
fitted with the landmarks the network predicts, so every row keeps every photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fitdiff.config.errors import ConfigError
from fitdiff.io import sha256_file

__all__ = ["LANDMARK_SOURCES", "LandmarkSource", "landmark_source"]

#: the values of ``table.landmarks``
LANDMARK_SOURCES = ("dataset", "detected")


@dataclass
class LandmarkSource:
    """The landmarks each fit gets.

    Attributes:
        name: ``dataset`` or ``detected``.
        detector: the :class:`~fitdiff.face.synthetic_detector.SyntheticFaceDetector` (``detected`` only).
        weights, sha256: its file and hash, for the tables' headers.
    """

    name: str = "dataset"
    detector: Any = None
    weights: Path | None = None
    sha256: str | None = None

    def __call__(self, seen: torch.Tensor, given: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Landmarks for the (B, 3, H, W) photos ``seen`` by the fit, in [0, 1]: ``given`` (B, 68, 2) pixels
        for ``dataset``; for ``detected`` the detector's (B, 5, 2) pixels on ``seen`` and a (B,) float
        tensor, 1 where a face was found (probability above the detector's threshold)."""
        if self.detector is None:
            return given, None
        device = next(self.detector.parameters()).device
        prob, points = self.detector.predict(seen.to(device, torch.float32))
        return points.cpu(), (prob > self.detector.score_threshold).float().cpu()

    @property
    def key(self) -> str:
        """What decides the landmarks, for the fits' cache keys."""
        return self.name if self.detector is None else f"detected:{self.sha256}"

    def describe(self) -> str:
        """One header line."""
        if self.detector is None:
            return "landmarks: the dataset's 68 ground-truth landmarks of each photo"
        return (f"landmarks: 5 detected on the photo each fit sees (corrupted or clean) by the synthetic face "
                f"detector {self.weights} (sha256 {self.sha256}, face threshold {self.detector.score_threshold}); "
                "photos without a face found are fitted with the predicted points and counted in faces_found")


def landmark_source(kind: str, data_dir: str | Path, weights: str | Path | None = None,
                    device: str | torch.device = "cpu") -> LandmarkSource:
    """The :class:`LandmarkSource` named ``kind`` (``table.landmarks``); ``detected`` loads the synthetic
    detector from ``weights`` (default ``<data_dir>/detector.safetensors``).

    Raises:
        ConfigError: an unknown ``kind``, or detector weights that are missing or not a synthetic
            detector's (the message names the file and the command that writes it).
    """
    if kind not in LANDMARK_SOURCES:
        raise ConfigError(f"table.landmarks: {kind!r} is not one of {', '.join(LANDMARK_SOURCES)}")
    if kind == "dataset":
        return LandmarkSource()
    from fitdiff.face.detectors import is_synthetic_detector
    from fitdiff.face.synthetic_detector import DETECTOR_FILE, SyntheticFaceDetector

    path = Path(weights) if weights is not None else Path(data_dir) / DETECTOR_FILE
    if not path.is_file():
        raise ConfigError(f"table.landmarks=detected: no face detector at {path}; train it with python "
                          f"data_prep/train_detector.py --data {data_dir} (about 2 minutes on 2 CPU cores) or set "
                          "table.detector_weights=...")
    if not is_synthetic_detector(path):
        raise ConfigError(f"table.detector_weights: {path} is not a synthetic face detector file (written by "
                          "data_prep/train_detector.py); the fitting tables batch its predictions")
    detector = SyntheticFaceDetector(path).to(device)
    return LandmarkSource("detected", detector, path, sha256_file(path))
