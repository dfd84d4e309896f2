"""A small face detector with 5 landmarks for photos of the embedded synthetic dataset.

RetinaFace weights (the ``retinaface_resnet50`` asset) cannot be downloaded here, and the tools still
need to find a face and its landmarks in a photo nobody annotated (the demo's uploads, ``fitdiff.sample
--identity photo.png``) and to say when there is none. The dataset's own photos come with landmarks and
with the background each was composited over, so a detector for that domain can be trained on them:
:mod:`fitdiff.synthetic.detector_training` does so (``data_prep/train_detector.py``), this module holds
what inference needs. It is a stand-in for RetinaFace on synthetic photos only; on real photos use the
asset.

Network (:class:`DetectorNet`): an RGB photo in [0, 1] resized to 96 x 96 -> ``2 x - 1`` -> 3x3
convolution stages (BatchNorm, ReLU) to stride 4 (24 x 24) and on to stride 16 (6 x 6); a face logit
from the pooled coarse features, and the 5 ArcFace-order landmarks as the soft-argmax of heatmaps on the
24 x 24 grid (fine features with the upsampled coarse ones), as fractions of the photo's width and
height. One face per photo (the dataset's photos hold one); its box is the landmarks' bounding box
grown to the face's usual extent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fitdiff.face.detection import Detection, NoFaceError, image_to_tensor
from fitdiff.face.identity import load_state_dict_file
from fitdiff.io import StateDictError, safetensors_metadata

__all__ = ["DETECTOR_FILE", "DETECTOR_KIND", "INPUT_SIZE", "DetectorNet", "SyntheticFaceDetector", "load_detector_weights"]

#: input side of the network, pixels
INPUT_SIZE = 96
#: the detector's file name inside a synthetic dataset folder
DETECTOR_FILE = "detector.safetensors"
#: safetensors metadata entry with the training record (JSON)
HEADER_KEY = "fitdiff"
#: the record's ``kind``: what tells a detector file from other weights
DETECTOR_KIND = "synthetic_face_detector"


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DetectorNet(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] (resized to 96 x 96 inside) -> (B, 11): face logit, then 5 (x, y)
    landmarks as fractions of the width and height (continuous coordinates: 0 = left/top edge).

    Landmarks are the soft-argmax of 5 heatmaps on a 24 x 24 grid, computed from the stride-4 features
    concatenated with the upsampled stride-16 ones (so each heatmap sees the whole face and can tell
    the left eye from the right); the face logit comes from the pooled stride-16 features.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.fine = nn.Sequential(_conv(3, w, 2), _conv(w, 2 * w, 2), _conv(2 * w, 2 * w, 1))  # 24 x 24
        self.coarse = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w, 2), _conv(4 * w, 4 * w, 1))  # 6 x 6
        self.heat = nn.Sequential(_conv(6 * w, 2 * w, 1), nn.Conv2d(2 * w, 5, 1))
        self.score = nn.Linear(4 * w, 1)
        side = INPUT_SIZE // 4
        centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
        self.register_buffer("grid_y", centres.repeat_interleave(side), persistent=False)
        self.register_buffer("grid_x", centres.repeat(side), persistent=False)

    @property
    def width(self) -> int:
        return int(self.fine[0][0].out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=True)
        fine = self.fine(x * 2.0 - 1.0)
        coarse = self.coarse(fine)
        up = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        prob = self.heat(torch.cat([fine, up], 1)).flatten(2).softmax(-1)  # (B, 5, 576)
        points = torch.stack([prob @ self.grid_x, prob @ self.grid_y], -1)  # (B, 5, 2) fractions
        return torch.cat([self.score(coarse.mean((2, 3))), points.flatten(1)], 1)


def load_detector_weights(path: str | Path) -> tuple[DetectorNet, dict]:
    """The :class:`DetectorNet` in ``path`` (``.safetensors``) in eval mode, and its training record.

    Raises:
        FileNotFoundError: no such file (the message says which command writes it);
        StateDictError / WeightsMismatchError: the file is unreadable or does not fit the network.
    """
    path = Path(path)
    what = "synthetic face detector weights"
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} do not exist (python data_prep/train_detector.py --data "
                                f"DATASET writes DATASET/{DETECTOR_FILE}; make quickstart runs it)")
    raw = safetensors_metadata(path, what=what).get(HEADER_KEY, "{}")
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise StateDictError(f"{what}: {path} has a malformed {HEADER_KEY!r} header: {exc}") from exc
    net = DetectorNet(int(record.get("width", 16)))
    load_state_dict_file(net, path, what=what)
    return net.eval(), record


def box_from_landmarks(points: torch.Tensor) -> torch.Tensor:
    """(4,) ``x1, y1, x2, y2`` face box around 5 ArcFace landmarks (eyes to mouth is about half a face)."""
    centre = points.mean(0)
    extent = (points.max(0).values - points.min(0).values).max().clamp(min=1.0)
    half = 1.1 * extent
    return torch.stack([centre[0] - half, centre[1] - 1.2 * half, centre[0] + half, centre[1] + 0.9 * half])


class SyntheticFaceDetector(nn.Module):
    """:class:`DetectorNet` behind the :class:`~fitdiff.face.detection.FaceDetector` interface.

    Args:
        weights: a weight file (``DATASET/detector.safetensors``) or a :class:`DetectorNet`.
        score_threshold: minimum face probability for a detection.
    """

    def __init__(self, weights: str | Path | DetectorNet, score_threshold: float = 0.5) -> None:
        super().__init__()
        if isinstance(weights, DetectorNet):
            self.net, self.record = weights.eval(), {}
        else:
            self.net, self.record = load_detector_weights(weights)
        self.source = str(weights) if not isinstance(weights, DetectorNet) else "DetectorNet"
        self.score_threshold = float(score_threshold)
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> SyntheticFaceDetector:
        """Stay in eval mode (inference only)."""
        return super().train(False)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> face probabilities (B,) and landmarks (B, 5, 2) in pixels."""
        out = self.net(images.float())
        size = images.new_tensor([images.shape[-1], images.shape[-2]], dtype=torch.float32)
        return torch.sigmoid(out[:, 0]), out[:, 1:].view(-1, 5, 2) * size

    def detect(self, image: torch.Tensor | np.ndarray) -> list[Detection]:
        """The face of ``image`` (torch (3, H, W) in [0, 1] or numpy (H, W, 3) uint8), or ``[]``."""
        rgb = image_to_tensor(image).to(next(self.parameters()).device)
        score, points = self.predict(rgb[None])
        if float(score[0]) <= self.score_threshold:
            return []
        landmarks = points[0].cpu()
        return [Detection(box=box_from_landmarks(landmarks), score=float(score[0]), landmarks=landmarks)]

    def detect_one(self, image: torch.Tensor | np.ndarray, source: str | None = None) -> Detection:
        """The face; raises :class:`~fitdiff.face.detection.NoFaceError` naming ``source`` when there is none."""
        found = self.detect(image)
        if not found:
            raise NoFaceError(f"no face found in {source or 'the image'} (synthetic face detector {self.source}, "
                              f"score <= {self.score_threshold}); give its landmarks instead")
        return found[0]
