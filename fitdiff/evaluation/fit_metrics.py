"""Per-photo scores of a fit (:class:`~fitdiff.fitting.Reconstruction`) against a dataset photo.

=====================  ==============================================================================
``identity_eval``      cosine similarity of the **evaluation** recognizer's embeddings of the fit's
                       render (fitted camera and lights, over the photo) and of the photo, both aligned
                       by the photo's 5 landmarks; the evaluation recognizer never guides or conditions
``identity_guide``     the same with the guiding recognizer (what guidance optimises: for reference)
``photo_l1``           mean absolute display-space difference over the render's face mask
``photo_lpips``        LPIPS (VGG) between render and photo; outside the face the render is the photo,
                       so it compares the face region
``landmark_px``        mean distance between the fitted mesh's 68 projected landmarks and the photo's
                       68 landmarks, pixels
``shape_rmse_mm``      RMS per-vertex distance to the ground-truth mesh (model frame, no alignment), mm
``diffuse_psnr``       PSNR of the diffuse albedo map against the ground truth, dB
``seconds``            wall-clock seconds of the fit per photo (the batch's time over its photos)
=====================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio

from fitdiff.data.landmarks import five_point_landmarks
from fitdiff.face.scene import FaceScene
from fitdiff.fitting.reconstructor import Reconstruction
from fitdiff.fitting.relight import render_face
from fitdiff.metrics.identity import cosine_similarity
from fitdiff.metrics.shape import vertex_rmse

__all__ = ["FIT_METRICS", "FitMetrics"]

#: metric name -> whether higher is better
FIT_METRICS: dict[str, bool] = {
    "identity_eval": True,
    "identity_guide": True,
    "photo_l1": False,
    "photo_lpips": False,
    "landmark_px": False,
    "shape_rmse_mm": False,
    "diffuse_psnr": True,
    "seconds": False,
}

Encoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FitMetrics:
    """Scores fits of B photos (module docstring).

    Args:
        scene: the face scene of the checkpoint's shape model.
        eval_recognizer: the evaluation identity encoder.
        guide_recognizer: the guiding one (None drops ``identity_guide``).
        lpips: ``(x, y in [-1, 1]) -> (B,)`` (None drops ``photo_lpips``).
    """

    def __init__(self, scene: FaceScene, eval_recognizer: Encoder, guide_recognizer: Encoder | None = None,
                 lpips: nn.Module | None = None) -> None:
        self.scene = scene
        self.eval_recognizer = eval_recognizer
        self.guide_recognizer = guide_recognizer
        self.lpips = lpips

    @property
    def names(self) -> list[str]:
        drop = {"identity_guide"} if self.guide_recognizer is None else set()
        drop |= {"photo_lpips"} if self.lpips is None else set()
        return [m for m in FIT_METRICS if m not in drop]

    @torch.no_grad()
    def __call__(self, result: Reconstruction, photos: torch.Tensor, landmarks: torch.Tensor, shape: torch.Tensor,
                 diffuse: torch.Tensor) -> dict[str, torch.Tensor]:
        """Metric name -> (B,) float64 CPU values.

        Args:
            result: the fits of B photos.
            photos: (B, 3, H, W) the photos to compare with (the clean ones when the fit saw a corrupted
                copy); landmarks: (B, 68, 2) their landmarks, pixels.
            shape: (B, K) ground-truth coefficients; diffuse: (B, 3, R, R) ground-truth albedo in [0, 1].
        """
        device = result.latent.device
        photos, landmarks = photos.to(device), landmarks.to(device)
        batch = photos.shape[0]
        face = result.face
        render = render_face(self.scene, face, result.params, photos)
        five = torch.from_numpy(five_point_landmarks(landmarks.cpu().numpy())).to(device, photos.dtype)
        out = {"identity_eval": cosine_similarity(self.eval_recognizer(render.image, five),
                                                  self.eval_recognizer(photos, five))}
        if self.guide_recognizer is not None:
            out["identity_guide"] = cosine_similarity(self.guide_recognizer(render.image, five),
                                                      self.guide_recognizer(photos, five))
        alpha = render.alpha
        out["photo_l1"] = (alpha * (render.image - photos).abs()).sum((1, 2, 3)) / (
            3.0 * alpha.sum((1, 2, 3)).clamp(min=1.0))
        if self.lpips is not None:
            out["photo_lpips"] = self.lpips(render.image * 2.0 - 1.0, photos * 2.0 - 1.0)
        model = self.scene.model
        vertices = model(face.shape.float())
        projected = result.params.camera().project(vertices.index_select(1, model.landmarks_68))[0]
        out["landmark_px"] = (projected - landmarks).norm(dim=-1).mean(1)
        out["shape_rmse_mm"] = vertex_rmse(vertices, model(shape.to(device).float()))
        pred = face.maps["diffuse"].float().clamp(0.0, 1.0)
        out["diffuse_psnr"] = peak_signal_noise_ratio(pred, diffuse.to(device).float(), data_range=1.0,
                                                      reduction="none", dim=(1, 2, 3))
        out["seconds"] = torch.full((batch,), result.seconds / batch)
        return {k: v.detach().double().cpu() for k, v in out.items()}
