"""Face-recognition identity encoders: a frozen interface, ArcFace IR-SE50, a registry and loss helpers.

An :class:`IdentityEncoder` maps face images to L2-normalised embeddings. It is always frozen (no
parameter requires grad, always in eval mode even under a parent's ``.train()``), yet differentiable
with respect to its input pixels, so it can sit inside a loss (guided fitting, identity metrics).

Encoders are built by name (``build_identity_encoder("arcface_ir_se50", weights=...)``) or directly via
Hydra (``_target_: fitdiff.face.identity.ArcFaceEncoder``); new recognisers register with
``@register_identity_encoder("name")``.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from fitdiff.face.alignment import align_faces, arcface_template
from fitdiff.io import load_state_dict
from fitdiff.metrics.identity import cosine_similarity

__all__ = [
    "IdentityEncoder",
    "ArcFaceEncoder",
    "WeightsMismatchError",
    "load_state_dict_file",
    "register_identity_encoder",
    "build_identity_encoder",
    "available_identity_encoders",
    "cosine_similarity",
    "identity_loss",
]

logger = logging.getLogger(__name__)

WeightsArg = str | Path | None


class WeightsMismatchError(ValueError):
    """A weight file's keys or shapes do not match the network it is loaded into."""


def _list_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_state_dict_file(
    module: nn.Module,
    path: str | Path,
    *,
    what: str = "weights",
    optional_suffixes: tuple[str, ...] = ("num_batches_tracked",),
) -> None:
    """Load a weight file into ``module`` with strict key and shape matching.

    The file is read by :func:`fitdiff.io.load_state_dict` (``.safetensors`` or a torch file with
    ``weights_only=True``; ``{"state_dict": ...}`` containers and ``module.`` prefixes unwrapped). Keys
    ending in ``optional_suffixes`` (BatchNorm counters, absent from old checkpoints) may be missing.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StateDictError: the file is unreadable or not a mapping of tensors.
        WeightsMismatchError: missing / unexpected keys or shape mismatches, listed with the file name.
    """
    path = Path(path)
    state = load_state_dict(path, what=what)

    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(optional_suffixes)]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong_shape:
        lines = [f"{what}: {path} does not match the network ({type(module).__name__})."]
        if missing:
            lines.append(f"  missing keys: {_list_keys(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {_list_keys(unexpected)}")
        if wrong_shape:
            lines.append(f"  shape mismatches: {_list_keys(wrong_shape, 4)}")
        raise WeightsMismatchError("\n".join(lines))
    full = dict(expected)
    full.update(state)
    module.load_state_dict(full, strict=True)
    logger.info("%s: loaded %d tensors from %s", what, len(state), path)


class IdentityEncoder(nn.Module, abc.ABC):
    """Frozen face-recognition network: images in [0, 1] -> L2-normalised (B, D) embeddings.

    Subclasses implement :meth:`_embed` on aligned crops of ``input_size`` pixels and call
    :meth:`freeze` at the end of ``__init__``.

    Attributes:
        name: identifier recorded with embeddings (sample ``meta.json``, manifests).
        input_size: side of the square aligned crop the network expects, in pixels.
        embedding_dim: length D of the embedding.
    """

    name: str = "identity"
    input_size: int = 112
    embedding_dim: int = 512

    @abc.abstractmethod
    def _embed(self, aligned: torch.Tensor) -> torch.Tensor:
        """Raw embedding of (B, 3, input_size, input_size) RGB crops in [0, 1] -> (B, D)."""

    def freeze(self) -> IdentityEncoder:
        """Stop gradients to all parameters and switch to eval mode (idempotent)."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> IdentityEncoder:
        """Stay in eval mode whatever ``mode`` says (BatchNorm/Dropout must not change)."""
        return self.freeze()

    @property
    def device(self) -> torch.device:
        """Device of the parameters (CPU for a parameter-free encoder)."""
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def _param_dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            return tensor.dtype
        return torch.float32

    def _check_images(self, images: torch.Tensor, what: str) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: {what} must be (B, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        return images.to(device=self.device, dtype=self._param_dtype())

    def embed_aligned(self, aligned: torch.Tensor) -> torch.Tensor:
        """Embed aligned crops.

        Args:
            aligned: (B, 3, S, S) RGB in [0, 1], aligned to the ArcFace template scaled to S pixels;
                resized (bilinear, antialiased) when S differs from ``input_size``.

        Returns:
            (B, embedding_dim) unit-length embeddings, differentiable w.r.t. ``aligned``.
        """
        aligned = self._check_images(aligned, "aligned crops")
        if aligned.shape[-2:] != (self.input_size, self.input_size):
            if aligned.shape[-1] != aligned.shape[-2]:
                raise ValueError(f"{self.name}: aligned crops must be square, got {tuple(aligned.shape)}")
            aligned = F.interpolate(
                aligned, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                antialias=aligned.shape[-1] > self.input_size,
            )
        embedding = self._embed(aligned)
        return F.normalize(embedding, dim=-1)

    def align(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Differentiably align (B, 3, H, W) images with (B, 5, 2) pixel landmarks -> (B, 3, S, S) crops."""
        images = self._check_images(images, "images")
        template = arcface_template(self.input_size, device=images.device, dtype=images.dtype)
        return align_faces(images, landmarks.to(images.device, images.dtype), self.input_size, template)

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """Embed faces.

        Args:
            images: (B, 3, H, W) RGB in [0, 1]; already-aligned square crops when ``landmarks`` is None.
            landmarks: optional (B, 5, 2) ArcFace-order landmarks in ``images`` pixels.

        Returns:
            (B, embedding_dim) L2-normalised embeddings.
        """
        self.freeze()
        if landmarks is not None:
            return self.embed_aligned(self.align(images, landmarks))
        return self.embed_aligned(images)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, embedding_dim={self.embedding_dim}"


_REGISTRY: dict[str, Callable[..., IdentityEncoder]] = {}
_Factory = TypeVar("_Factory", bound=Callable[..., IdentityEncoder])


def register_identity_encoder(name: str) -> Callable[[_Factory], _Factory]:
    """Decorator registering an encoder class or factory function under ``name``."""

    def decorator(factory: _Factory) -> _Factory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"identity encoder {name!r} is already registered ({_REGISTRY[name]!r})")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_identity_encoders() -> list[str]:
    """Registered encoder names, sorted."""
    return sorted(_REGISTRY)


def build_identity_encoder(name: str, **kwargs: Any) -> IdentityEncoder:
    """Instantiate the encoder registered as ``name`` with ``kwargs`` (e.g. ``weights=...``)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown identity encoder {name!r}; registered: {', '.join(available_identity_encoders())}"
        ) from None
    encoder = factory(**kwargs)
    if not isinstance(encoder, IdentityEncoder):
        raise TypeError(f"identity encoder factory {name!r} returned {type(encoder).__name__}")
    return encoder


@register_identity_encoder("arcface_ir_se50")
class ArcFaceEncoder(IdentityEncoder):
    """ArcFace IR-SE50 (facexlib ``Backbone(50, 0.6, 'ir_se')``): 112x112 RGB crops -> 512-d embeddings.

    The network sees RGB scaled to [-1, 1] (``2 x - 1``).

    Args:
        weights: weight file; ``None`` -> the ``arcface_ir_se50`` asset (checksum-verified, raises
            AssetMissingError with the fetch command when absent); ``"random"`` -> random
            initialisation (tests, synthetic experiments), logged as a warning.
        device: where to put the network (default CPU; ``.to()`` moves it later as usual).
        name: identifier recorded with embeddings.
    """

    input_size = 112
    embedding_dim = 512

    def __init__(
        self,
        weights: WeightsArg = None,
        device: torch.device | str | None = None,
        name: str = "arcface_ir_se50",
    ) -> None:
        super().__init__()
        from facexlib.recognition.arcface_arch import Backbone

        self.name = name
        self.net = Backbone(50, 0.6, "ir_se")
        if isinstance(weights, str) and weights == "random":
            logger.warning("%s: using RANDOM weights; embeddings carry no identity information", name)
        else:
            if weights is None:
                from fitdiff.assets import require

                weights = require("arcface_ir_se50")
            load_state_dict_file(self.net, weights, what=f"{name} weights")
        if device is not None:
            self.to(device)
        self.freeze()

    def _embed(self, aligned: torch.Tensor) -> torch.Tensor:
        return self.net(aligned * 2.0 - 1.0)


def identity_loss(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``1 - cos(a, b)`` for (..., D) embeddings, in [0, 2]; ``reduction`` is "mean", "sum" or "none"."""
    loss = 1.0 - cosine_similarity(a, b)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"identity_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
