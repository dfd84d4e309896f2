"""Per-photo errors of a predicted face against the ground truth of a dataset photo.

A prediction is a :class:`FacePrediction`: (B, K) shape coefficients and the three UV maps. Against the
ground truth of B photos, :class:`FaceMetrics` returns one value per photo of

=====================  ==============================================================================
``shape_rmse_mm``      RMS per-vertex distance between the two meshes of the shape model, mm, in the
                       model frame, no alignment (docs/DESIGN.md §5)
``shape_coef_rms``     RMS difference of the coefficients, std units
``diffuse_rmse``       RMS difference of the diffuse maps over texels and channels, [0, 1] units
``diffuse_psnr``       PSNR of the diffuse map, dB, data range 1 (torchmetrics)
``specular_psnr``      PSNR of the specular map, dB, data range 1
``normals_angle_deg``  mean angle between the normal maps over the valid texels (ground-truth normal
                       of length > 0.5), degrees
``identity_cos``       cosine similarity of the recognizer's embeddings of the render and of the photo,
                       the render made with the photo's own camera and lights (``meta.json``) and
                       composited over the photo; aligned by its own projected landmarks
=====================  ==============================================================================

``identity_cos`` needs a recognizer and photos with meta; without a recognizer it is left out.
Predicted albedos are clamped to [0, 1] and normals renormalised before scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio

from fitdiff.data.landmarks import five_point_landmarks
from fitdiff.evaluation.faces import FaceSet
from fitdiff.face.scene import FaceScene, camera_from_meta
from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.metrics.angular import angular_error
from fitdiff.metrics.identity import cosine_similarity
from fitdiff.metrics.shape import vertex_rmse

__all__ = ["FacePrediction", "FaceMetrics", "METRICS", "mean_prediction"]

#: metric name -> whether higher is better
METRICS: dict[str, bool] = {
    "shape_rmse_mm": False,
    "shape_coef_rms": False,
    "diffuse_rmse": False,
    "diffuse_psnr": True,
    "specular_psnr": True,
    "normals_angle_deg": False,
    "identity_cos": True,
}

Encoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FacePrediction:
    """B predicted faces: ``shape`` (B, K) std units, ``diffuse`` (B, 3, R, R) and ``specular``
    (B, C, R, R) in [0, 1], ``normals`` (B, 3, R, R) unit vectors."""

    shape: torch.Tensor
    diffuse: torch.Tensor
    specular: torch.Tensor
    normals: torch.Tensor

    def to(self, device: torch.device | str) -> FacePrediction:
        return FacePrediction(
            *(
                t.to(device=device, dtype=torch.float32)
                for t in (self.shape, self.diffuse, self.specular, self.normals)
            )
        )

    def cleaned(self) -> FacePrediction:
        """Albedos clamped to [0, 1], normals renormalised."""
        return FacePrediction(
            self.shape, self.diffuse.clamp(0, 1), self.specular.clamp(0, 1), F.normalize(self.normals, dim=1)
        )

    def repeat(self, n: int) -> FacePrediction:
        """Each face repeated ``n`` times in place (B -> B * n), for broadcasting one face to many photos."""
        return FacePrediction(
            *(t.repeat_interleave(n, 0) for t in (self.shape, self.diffuse, self.specular, self.normals))
        )


def mean_prediction(pred: FacePrediction, k: int) -> FacePrediction:
    """The average of every ``k`` consecutive faces (B * k -> B): mean coefficients and maps, the mean
    normal renormalised."""

    def avg(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, k, *t.shape[1:]).mean(1)

    return FacePrediction(
        avg(pred.shape), avg(pred.diffuse), avg(pred.specular), F.normalize(avg(pred.normals), dim=1)
    )


class FaceMetrics:
    """Scores predictions against photos of a :class:`~fitdiff.evaluation.faces.FaceSet`.

    Args:
        shape_model: the PCA model the coefficients belong to.
        recognizer: ``encoder(images (B, 3, H, W) in [0, 1], landmarks (B, 5, 2) px) -> (B, D)`` unit
            embeddings, or None to skip ``identity_cos``.
        device: where meshes, renders and the recognizer run.
    """

    def __init__(
        self,
        shape_model: PCAShapeModel,
        recognizer: Encoder | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = shape_model.to(self.device)
        self.scene = FaceScene(self.model, landmarks="68")
        self.recognizer = recognizer
        self._photo_embeddings: dict[str, torch.Tensor] = {}

    @property
    def names(self) -> list[str]:
        """The metrics this instance reports."""
        return [m for m in METRICS if m != "identity_cos" or self.recognizer is not None]

    def vertices(self, shape: torch.Tensor) -> torch.Tensor:
        """(B, K) coefficients -> (B, V, 3) mm."""
        return self.model(shape.to(self.device, torch.float32))

    @torch.no_grad()
    def photo_embeddings(self, faces: FaceSet) -> torch.Tensor:
        """(N, D) recognizer embeddings of the photos (aligned by their stored landmarks), cached by key."""
        if self.recognizer is None:
            raise RuntimeError("no recognizer was given")
        missing = [i for i, k in enumerate(faces.keys) if k not in self._photo_embeddings]
        if missing:
            if faces.image is None or faces.landmarks is None:
                raise ValueError("identity similarity needs the photos and their landmarks")
            images = faces.image[missing].to(self.device)
            five = torch.from_numpy(five_point_landmarks(faces.landmarks[missing].numpy())).to(self.device)
            embeddings = self.recognizer(images, five)
            for i, e in zip(missing, embeddings):
                self._photo_embeddings[faces.keys[i]] = e
        return torch.stack([self._photo_embeddings[k] for k in faces.keys])

    @torch.no_grad()
    def render(self, pred: FacePrediction, faces: FaceSet) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, 3, H, W), landmarks (B, 68, 2)) of the predictions with each photo's camera and
        lights, composited over the photo."""
        if faces.meta is None or faces.image is None:
            raise ValueError("rendering needs the photos and their meta.json")
        camera, lights = camera_from_meta(faces.meta, device=self.device)
        spaces = {str(m.get("normal_space", "tangent")) for m in faces.meta}
        if len(spaces) != 1:
            raise ValueError(f"photos of one batch use different normal spaces: {sorted(spaces)}")
        self.scene.normal_space = spaces.pop()
        out = self.scene(
            pred.shape,
            pred.diffuse,
            pred.specular,
            pred.normals,
            camera,
            lights,
            background=faces.image.to(self.device),
        )
        return out.image, out.landmarks

    @torch.no_grad()
    def __call__(self, pred: FacePrediction, faces: FaceSet) -> dict[str, torch.Tensor]:
        """Metric name -> (B,) float64 CPU values for predictions ``pred`` of the B photos ``faces``."""
        if pred.shape.shape[0] != len(faces):
            raise ValueError(f"{pred.shape.shape[0]} predictions for {len(faces)} photos")
        pred = pred.to(self.device).cleaned()
        gt_shape = faces.shape.to(self.device)
        out = {
            "shape_rmse_mm": vertex_rmse(self.vertices(pred.shape), self.vertices(gt_shape)),
            "shape_coef_rms": (pred.shape - gt_shape).pow(2).mean(1).sqrt(),
        }
        diffuse, specular = faces.diffuse.to(self.device), faces.specular.to(self.device)
        if pred.specular.shape[1] != specular.shape[1]:  # grey prediction vs RGB ground truth or back
            pred.specular = pred.specular.mean(1, keepdim=True).expand_as(specular)
        out["diffuse_rmse"] = (pred.diffuse - diffuse).pow(2).mean((1, 2, 3)).sqrt()
        out["diffuse_psnr"] = peak_signal_noise_ratio(
            pred.diffuse, diffuse, data_range=1.0, reduction="none", dim=(1, 2, 3)
        )
        out["specular_psnr"] = peak_signal_noise_ratio(
            pred.specular, specular, data_range=1.0, reduction="none", dim=(1, 2, 3)
        )
        normals = faces.normals.to(self.device)
        angle = angular_error(pred.normals, normals, degrees=True)
        valid = (normals.norm(dim=1) > 0.5).to(angle.dtype)
        out["normals_angle_deg"] = (angle * valid).sum((1, 2)) / valid.sum((1, 2)).clamp(min=1)
        if self.recognizer is not None:
            images, landmarks = self.render(pred, faces)
            five = torch.from_numpy(five_point_landmarks(landmarks.cpu().numpy())).to(self.device)
            out["identity_cos"] = cosine_similarity(
                self.recognizer(images, five), self.photo_embeddings(faces)
            )
        return {k: v.detach().double().cpu() for k, v in out.items()}
