"""The fitting loss: how well a face (maps + shape) under a camera and lights explains a photo.

For B photos, :class:`FitLoss` renders the face with :class:`~fitdiff.face.scene.FaceScene` over the
photo (outside the face the render *is* the photo) and returns per photo (B,)

    total = w_id * (1 - cos(ID(render), ID(photo)))      identity, the guiding recognizer
          + w_lpips * LPIPS(render, photo)                perceptual (VGG LPIPS, inputs in [-1, 1])
          + w_lmk * mean_i |proj_i - lmk_i| / H           landmarks, fraction of the image height
          + w_pix * sum(alpha |render - photo|) / (3 sum alpha)   masked L1, display space
          + w_prior * mean_k (c_k - c_k^prior)^2          shape coefficient prior (std units)

The prior's centre c^prior is the target's ``prior_shape``: none (0, the mean face) for the
optimisation fitter, which knows nothing of the person; for guided reconstruction with
``shape_prior: conditional`` the conditional mean shape that the diffusion model gives the photo's
identity embedding (:class:`~fitdiff.fitting.reconstructor.Reconstructor`). The weight is the same.

The render is aligned for the recognizer with the photo's own 5 landmarks, so both embeddings see the
same crop. A weight of 0 skips its term (LPIPS is then never built).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fitdiff.face.identity import IdentityEncoder
from fitdiff.face.scene import FaceRender, FaceScene
from fitdiff.fitting.scene_params import SceneParameters

__all__ = ["FitTarget", "LossWeights", "FitLoss", "LOSS_TERMS"]

#: the terms of :class:`FitLoss`, in report order
LOSS_TERMS = ("identity", "lpips", "landmarks", "pixel", "prior")


@dataclass
class FitTarget:
    """The photos a fit explains.

    Attributes:
        photo: (B, 3, H, W) display-space RGB in [0, 1].
        landmarks: (B, L, 2) pixels, L = 68 (the shape model's 68-point set) or 5 (ArcFace order).
        five: (B, 5, 2) ArcFace-order pixels that align the photo and the render for the recognizer.
        identity: (B, D) unit embeddings of the photos by the guiding recognizer.
        prior_shape: (B, K) centre of the shape prior (std units); None = 0, the mean face.
    """

    photo: torch.Tensor
    landmarks: torch.Tensor
    five: torch.Tensor
    identity: torch.Tensor
    prior_shape: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.photo.shape[0])

    def to(self, device: torch.device | str) -> FitTarget:
        prior = None if self.prior_shape is None else self.prior_shape.to(device)
        return FitTarget(*(t.to(device) for t in (self.photo, self.landmarks, self.five, self.identity)), prior)


@dataclass
class LossWeights:
    """Weights of :class:`FitLoss`'s terms (0 = off)."""

    identity: float = 1.0
    lpips: float = 0.0
    landmarks: float = 10.0
    pixel: float = 1.0
    prior: float = 0.01


class FitLoss(nn.Module):
    """Loss of faces against :class:`FitTarget` photos (module docstring).

    Args:
        scene: the face scene (shape model, normal space).
        recognizer: the guiding identity encoder (frozen), or None when ``weights.identity`` is 0.
        weights: the term weights.
        lpips: an LPIPS module ``(x, y in [-1, 1]) -> (B,)``; built (VGG, the ``lpips_vgg16`` asset) when
            None and ``weights.lpips`` > 0.
    """

    def __init__(self, scene: FaceScene, recognizer: IdentityEncoder | None, weights: LossWeights,
                 lpips: nn.Module | None = None) -> None:
        super().__init__()
        if weights.identity > 0 and recognizer is None:
            raise ValueError("the identity term (weight > 0) needs a recognizer")
        if weights.lpips > 0 and lpips is None:
            from fitdiff.metrics.lpips import PerceptualLoss

            lpips = PerceptualLoss()
        self.scene = scene
        self.recognizer = recognizer
        self.lpips = lpips
        self.weights = weights

    def landmark_vertices(self, count: int) -> torch.Tensor:
        model = self.scene.model
        if count == 68:
            return model.landmarks_68
        if count == 5:
            return model.landmarks_5
        raise ValueError(f"target landmarks must be 68 or 5 points, got {count}")

    def render(self, maps: dict[str, torch.Tensor], shape: torch.Tensor, params: SceneParameters,
               target: FitTarget) -> FaceRender:
        """The face over the photos with the current camera and lights."""
        return self.scene(shape, maps["diffuse"], maps["specular"], maps["normals"], params.camera(),
                          params.lights(), background=target.photo)

    def forward(self, maps: dict[str, torch.Tensor], shape: torch.Tensor, params: SceneParameters,
                target: FitTarget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total (B,), term name -> (B,) unweighted values) for data-space ``maps`` (B, C, R, R) and
        (B, K) ``shape``."""
        w = self.weights
        out = self.render(maps, shape, params, target)
        photo = target.photo
        terms: dict[str, torch.Tensor] = {}
        zero = photo.new_zeros(photo.shape[0])
        if w.identity > 0:
            emb = self.recognizer(out.image, target.five)
            terms["identity"] = 1.0 - (emb * target.identity.to(emb)).sum(-1)
        if w.lpips > 0:
            terms["lpips"] = self.lpips(out.image * 2.0 - 1.0, photo * 2.0 - 1.0)
        if w.landmarks > 0:
            index = self.landmark_vertices(target.landmarks.shape[1])
            projected = params.camera().project(out.vertices.index_select(1, index))[0]
            terms["landmarks"] = (projected - target.landmarks).norm(dim=-1).mean(1) / photo.shape[-2]
        if w.pixel > 0:
            alpha = out.alpha
            terms["pixel"] = (alpha * (out.image - photo).abs()).sum((1, 2, 3)) / (
                3.0 * alpha.sum((1, 2, 3)).clamp(min=1.0))
        if w.prior > 0:
            centre = target.prior_shape
            terms["prior"] = (shape if centre is None else shape - centre.to(shape)).pow(2).mean(1)
        total = zero
        for name, value in terms.items():
            total = total + getattr(w, name) * value
        return total, terms
