"""Auxiliary training losses on the denoiser's predicted x_0: shape and identity consistency.

Both act only at low-noise timesteps (t <= ``max_timestep``), where x̂_0 is close enough to a face for a
decoded shape or a render to mean something, and are weighted per loss. They are ``_target_`` nodes in
``model.aux_losses`` (off in the baseline configs, on in ``experiment=ldm_spade_aux``)::

    aux_losses:
      shape: {_target_: fitdiff.ldm.aux_losses.ShapeLoss, weight: 0.1, max_timestep: 250, shape_model: {...}}
      identity: {_target_: fitdiff.ldm.aux_losses.IdentityLoss, weight: 0.05, max_timestep: 250, ...}

Each is called as ``loss(x0=, t=, batch=, latents=, pipeline=)`` and returns (weighted scalar, logs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from fitdiff.face.identity import IdentityEncoder, build_identity_encoder
from fitdiff.face.scene import FaceScene, camera_from_meta
from fitdiff.face.shape_model import PCAShapeModel

__all__ = ["IdentityLoss", "ShapeLoss", "build_shape_model"]


def build_shape_model(node: Mapping[str, Any] | PCAShapeModel) -> PCAShapeModel:
    """A shape model from a ``_target_`` node (e.g. ``fitdiff.synthetic.load_shape_model``) or as given."""
    if isinstance(node, PCAShapeModel):
        return node
    model = instantiate(dict(node), _convert_="all")
    if not isinstance(model, PCAShapeModel):
        raise TypeError(f"shape_model built a {type(model).__name__}, not a PCAShapeModel")
    return model


class _LowNoiseLoss(nn.Module):
    def __init__(self, weight: float, max_timestep: int) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"aux loss weight must be >= 0, got {weight}")
        self.weight = float(weight)
        self.max_timestep = int(max_timestep)

    def select(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the samples at low enough noise."""
        return t <= self.max_timestep


class ShapeLoss(_LowNoiseLoss):
    """Mean squared per-vertex distance (mm², over vertices and the selected samples) between the mesh of
    the shape decoded from x̂_0 and the ground-truth mesh, times ``weight`` / ``scale_mm``².

    Args:
        weight: loss weight.
        max_timestep: only samples with t <= this count.
        shape_model: ``_target_`` node of the dataset's PCA shape model.
        scale_mm: distance unit of the loss (1 mm by default: a 1 mm RMS error costs ``weight``).
    """

    def __init__(self, weight: float, max_timestep: int, shape_model: Mapping[str, Any] | PCAShapeModel,
                 scale_mm: float = 1.0) -> None:
        super().__init__(weight, max_timestep)
        self.shape_model = build_shape_model(shape_model)
        self.shape_model.requires_grad_(False)
        self.scale_mm = float(scale_mm)

    def forward(self, x0: torch.Tensor, t: torch.Tensor, latents: Any, pipeline: Any, **_: Any
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sel = self.select(t)
        if not sel.any():
            zero = x0.sum() * 0.0
            return zero, {"loss": zero.detach()}
        _, shape = pipeline.layout.unpack(pipeline.stats.denormalize(x0[sel]))
        diff = self.shape_model(shape) - self.shape_model(latents.shape[sel])
        mse = diff.pow(2).sum(-1).mean() / self.scale_mm**2
        return self.weight * mse, {"loss": mse.detach(), "rms_mm": mse.detach().sqrt() * self.scale_mm}


class IdentityLoss(_LowNoiseLoss):
    """1 − cos between the recognizer's embedding of a render of x̂_0 and the sample's identity embedding.

    The maps are decoded from x̂_0 by the frozen autoencoder, the mesh from its shape plane, and the face
    is rendered with the sample's own camera and lights (``meta``: the batch must carry it, so latent
    shards need ``meta`` or the maps come from face shards) through :class:`~fitdiff.face.scene.FaceScene`.

    Args:
        weight, max_timestep: as :class:`ShapeLoss`.
        shape_model: ``_target_`` node of the dataset's PCA shape model.
        recognizer: registered identity-encoder name (``synthetic_recognizer``, ``arcface_ir_se50``).
        recognizer_weights: its weights file (the dataset's ``recognizer.safetensors``).
        max_samples: render at most this many selected samples per batch (the render is the cost).
    """

    def __init__(self, weight: float, max_timestep: int, shape_model: Mapping[str, Any] | PCAShapeModel,
                 recognizer: str = "synthetic_recognizer", recognizer_weights: str | None = None,
                 max_samples: int = 8) -> None:
        super().__init__(weight, max_timestep)
        self.scene = FaceScene(build_shape_model(shape_model), landmarks="5")  # the 5 ArcFace points
        kwargs = {} if recognizer_weights is None else {"weights": recognizer_weights}
        encoder: IdentityEncoder = build_identity_encoder(recognizer, **kwargs)
        self.encoder = encoder.freeze()
        self.max_samples = int(max_samples)

    def forward(self, x0: torch.Tensor, t: torch.Tensor, latents: Any, pipeline: Any, **_: Any
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        idx = torch.nonzero(self.select(t)).flatten()[: self.max_samples]
        if idx.numel() == 0:
            zero = x0.sum() * 0.0
            return zero, {"loss": zero.detach()}
        if latents.meta is None:
            raise KeyError("the identity loss renders with each sample's camera: the batch needs 'meta'")
        face = pipeline.decode(x0[idx])
        camera, lights = camera_from_meta([latents.meta[i] for i in idx.tolist()], device=x0.device)
        render = self.scene(face.shape, face.maps["diffuse"], face.maps["specular"], face.maps["normals"],
                            camera, lights)
        emb = self.encoder(render.image, render.landmarks)
        loss = (1.0 - torch.nn.functional.cosine_similarity(emb, latents.identity[idx], dim=-1)).mean()
        return self.weight * loss, {"loss": loss.detach()}
