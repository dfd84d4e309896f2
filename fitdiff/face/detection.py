"""Face detection with 5 landmarks (facexlib RetinaFace), and the landmark step of the photo pipeline.

facexlib's RetinaFace network expects a (1, 3, H, W) float tensor in **BGR** channel order, values in
[0, 255] minus the per-channel mean (104, 117, 123) (BGR), at the image's own size (its
``detect_faces`` does this preprocessing; we do the same so the module can follow its device). Its
outputs are, per prior box: box offsets (4), softmax class scores (2, column 1 = face) and landmark
offsets (10), decoded against priors given in normalised centre form. Decoded coordinates are
continuous image coordinates (prior centres lie at ``(j + 0.5) * step``), i.e. the project convention;
the original training annotations may differ from it by up to half a pixel.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fitdiff.face.alignment import arcface_template
from fitdiff.face.identity import load_state_dict_file

__all__ = [
    "Detection",
    "NoFaceError",
    "MissingLandmarksError",
    "FaceDetector",
    "image_to_tensor",
    "landmarks_for",
]

logger = logging.getLogger(__name__)

_BGR_MEAN = (104.0, 117.0, 123.0)


class NoFaceError(RuntimeError):
    """The detector found no face above its score threshold."""


class MissingLandmarksError(ValueError):
    """Neither landmarks nor a detector were given for a photo that needs alignment."""


@dataclass(frozen=True)
class Detection:
    """One detected face, in pixels of the input image (project convention, x right, y down).

    Attributes:
        box: (4,) float32 ``x1, y1, x2, y2``.
        score: face probability in [0, 1].
        landmarks: (5, 2) float32, ArcFace order (image-left eye, image-right eye, nose, image-left
            mouth corner, image-right mouth corner).
    """

    box: torch.Tensor
    score: float
    landmarks: torch.Tensor


def image_to_tensor(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Normalise an input photo to a (3, H, W) float32 RGB tensor in [0, 1].

    Accepts a torch (3, H, W) float tensor in [0, 1], or a numpy (H, W, 3) RGB array (uint8 in
    [0, 255], or float in [0, 1]).
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected a numpy (H, W, 3) RGB image, got shape {image.shape}")
        if image.dtype == np.uint8:
            array = image.astype(np.float32) / 255.0
        elif np.issubdtype(image.dtype, np.floating):
            array = image.astype(np.float32)
        else:
            raise ValueError(f"numpy images must be uint8 or float, got {image.dtype}")
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    if isinstance(image, torch.Tensor):
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a torch (3, H, W) RGB image in [0, 1], got shape {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image.float() / 255.0
        return image.float()
    raise TypeError(f"expected a torch tensor or numpy array image, got {type(image).__name__}")


class FaceDetector(nn.Module):
    """RetinaFace (ResNet-50) face detector with 5 landmarks; inference only, frozen.

    Args:
        weights: weight file; ``None`` -> the ``retinaface_resnet50`` asset; ``"random"`` -> random
            initialisation (tests only: detections are meaningless), logged as a warning.
        device: where to put the network (default CPU); ``.to()`` moves it later as usual.
        score_threshold: minimum face probability kept.
        nms_threshold: IoU above which lower-scoring overlapping boxes are dropped.
        max_size: if set, images whose longer side exceeds it are downscaled for detection (outputs are
            mapped back to the original pixels); ``None`` runs at the original size like facexlib.
        network_name: facexlib RetinaFace variant ("resnet50" or "mobile0.25").
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: torch.device | str | None = None,
        *,
        score_threshold: float = 0.8,
        nms_threshold: float = 0.4,
        max_size: int | None = None,
        network_name: str = "resnet50",
    ) -> None:
        super().__init__()
        from facexlib.detection.retinaface import RetinaFace

        with warnings.catch_warnings():
            # torchvision deprecation notices about the 'pretrained' argument facexlib passes.
            warnings.simplefilter("ignore", UserWarning)
            self.net = RetinaFace(network_name=network_name, half=False, device="cpu")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_size = max_size
        if isinstance(weights, str) and weights == "random":
            logger.warning("FaceDetector: using RANDOM weights; detections are meaningless")
        else:
            if weights is None:
                if network_name != "resnet50":
                    raise ValueError(f"FaceDetector: pass weights= for network_name={network_name!r}")
                from fitdiff.assets import require

                weights = require("retinaface_resnet50")
            load_state_dict_file(self.net, weights, what="RetinaFace weights")
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        if device is not None:
            self.to(device)
        super().train(False)

    def train(self, mode: bool = True) -> FaceDetector:
        """Stay in eval mode (inference-only network)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _priors(self, height: int, width: int) -> torch.Tensor:
        from facexlib.detection.retinaface_utils import PriorBox

        return PriorBox(self.net.cfg, image_size=(height, width)).forward().to(self.device)

    def _raw_outputs(self, bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network outputs for a (1, 3, H, W) mean-subtracted BGR image: loc (P, 4), scores (P,), landm (P, 10)."""
        loc, conf, landm = self.net(bgr)
        return loc[0], conf[0, :, 1], landm[0]

    @torch.no_grad()
    def detect(self, image: torch.Tensor | np.ndarray) -> list[Detection]:
        """All faces above ``score_threshold`` after NMS, best first.

        Args:
            image: torch (3, H, W) RGB in [0, 1], or numpy (H, W, 3) RGB uint8.

        Returns:
            Detections in pixels of ``image``, sorted by decreasing score (possibly empty).
        """
        from facexlib.detection.retinaface_utils import decode, decode_landm

        rgb = image_to_tensor(image).to(self.device)
        height, width = rgb.shape[-2:]
        if self.max_size is not None and max(height, width) > self.max_size:
            factor = self.max_size / max(height, width)
            size = (max(1, round(height * factor)), max(1, round(width * factor)))
            rgb = F.interpolate(rgb[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        net_h, net_w = rgb.shape[-2:]
        bgr = rgb.flip(0) * 255.0 - rgb.new_tensor(_BGR_MEAN).view(3, 1, 1)
        loc, scores, landm = self._raw_outputs(bgr[None])

        priors = self._priors(net_h, net_w)
        variances = self.net.cfg["variance"]
        # Decoded coordinates are fractions of the network input's width/height; a resize with
        # align_corners=False scales continuous coordinates exactly, so multiplying by the ORIGINAL size
        # gives original pixels.
        to_pixels = rgb.new_tensor([width, height])
        boxes = (decode(loc, priors, variances).view(-1, 2, 2) * to_pixels).view(-1, 4)
        points = decode_landm(landm, priors, variances).view(-1, 5, 2) * to_pixels

        finite = torch.isfinite(boxes).all(1) & torch.isfinite(points).flatten(1).all(1) & torch.isfinite(scores)
        if not bool(finite.all()):
            logger.debug("FaceDetector: dropped %d non-finite predictions", int((~finite).sum()))
        keep = finite & (scores > self.score_threshold)
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        if scores.numel() == 0:
            return []
        kept = torchvision.ops.nms(boxes.float(), scores.float(), self.nms_threshold)  # sorted by score
        return [
            Detection(box=boxes[i].float().cpu(), score=float(scores[i]), landmarks=points[i].float().cpu())
            for i in kept.tolist()
        ]

    def detect_one(self, image: torch.Tensor | np.ndarray, source: str | None = None) -> Detection:
        """The highest-scoring face; raises :class:`NoFaceError` naming ``source`` when there is none."""
        detections = self.detect(image)
        if not detections:
            shape = tuple(image_to_tensor(image).shape[-2:])
            where = source if source is not None else "the image"
            raise NoFaceError(
                f"no face found in {where} (H x W = {shape[0]} x {shape[1]}) with score > "
                f"{self.score_threshold}; pass its 5 landmarks (ArcFace order, image pixels) instead, "
                f"or lower score_threshold"
            )
        return detections[0]


def landmarks_for(
    image: torch.Tensor | np.ndarray,
    landmarks: torch.Tensor | np.ndarray | None = None,
    detector: FaceDetector | None = None,
    *,
    aligned: bool = False,
    source: str | None = None,
) -> torch.Tensor:
    """5 ArcFace-order landmarks of a photo, (5, 2) float32 in its pixels.

    Order of preference: given ``landmarks``; for ``aligned=True`` (a square crop already aligned to the
    ArcFace template) the template scaled to the crop; otherwise the best face of ``detector``.

    Raises:
        MissingLandmarksError: none of the three sources is available.
        NoFaceError: the detector finds no face.
    """
    if landmarks is not None:
        if isinstance(landmarks, torch.Tensor):
            points = landmarks.detach().cpu()
        else:
            points = torch.from_numpy(np.asarray(landmarks, dtype=np.float32))
        if points.shape != (5, 2):
            raise ValueError(f"landmarks for {source or 'the image'} must be (5, 2), got {tuple(points.shape)}")
        return points.float()
    height, width = image_to_tensor(image).shape[-2:]
    if aligned:
        if height != width:
            raise ValueError(
                f"aligned crop {source or ''} must be square to use the ArcFace template, got {height} x {width}"
            )
        return arcface_template(height)
    if detector is None:
        raise MissingLandmarksError(
            f"{source or 'the image'} needs 5 landmarks for alignment: pass landmarks=(5, 2) in image pixels "
            f"(ArcFace order), or aligned=True for a crop already aligned to the ArcFace template, or a "
            f"detector (FaceDetector() loads the retinaface_resnet50 asset: python -m fitdiff.assets fetch "
            f"retinaface_resnet50)"
        )
    return detector.detect_one(image, source=source).landmarks
