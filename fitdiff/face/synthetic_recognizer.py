"""A compact face-recognition network for the synthetic dataset, its weight files and identity encoder.

Pretrained recognition weights cannot be shipped or downloaded here, and a random-initialised ArcFace
carries little identity information. The synthetic dataset therefore trains this small network on
renders of its *training* subjects (additive angular margin loss, Deng et al. 2019; the training code
is :mod:`fitdiff.synthetic.recognizer_training`) and embeds every photo with it, so the identity
signal of held-out subjects is real. This module holds only what inference needs.

Network: 112x112 aligned RGB crops in [0, 1] -> ``2 x - 1`` -> 2x average pooling (56 px) -> a stride-2
stem and three residual stages (w, 2w, 4w channels at 28, 14, 7 px; w = 16 by default) -> 1x1 reduction
to 2w channels -> flatten -> linear 512 -> BatchNorm -> L2 normalisation (by :class:`IdentityEncoder`).

Weights are a plain state dict in a ``.safetensors`` file (or a ``torch.save`` file, read with
``weights_only=True``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fitdiff.face.identity import IdentityEncoder, load_state_dict_file, register_identity_encoder
from fitdiff.io import StateDictError, safetensors_metadata

__all__ = [
    "ARCHITECTURES",
    "RecognizerNet",
    "SyntheticRecognizer",
    "load_recognizer_weights",
    "WEIGHTS_HEADER_KEY",
]

log = logging.getLogger(__name__)

#: safetensors metadata entry holding the architecture (JSON: ``width``, ``embedding_dim``, ``arch``, extras)
WEIGHTS_HEADER_KEY = "fitdiff"


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class _Residual(nn.Module):
    """Two 3x3 convolutions with an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


#: architectures of :class:`RecognizerNet`
ARCHITECTURES = ("residual", "plain")


class RecognizerNet(nn.Module):
    """(B, 3, 112, 112) RGB in [0, 1] -> (B, embedding_dim) raw (not normalised) embeddings.

    Architectures (the input is average-pooled to 56 x 56 first):

    - ``residual`` (the dataset's recognizer): three stride-2 stages with a residual block each
      (56 -> 7 px), a 1x1 reduction, flatten, linear;
    - ``plain`` (the evaluation recognizer, a different network to judge identity with): four stride-2
      stages of two plain convolutions each, no shortcuts (56 -> 4 px), flatten, linear.
    """

    def __init__(self, embedding_dim: int = 512, width: int = 16, arch: str = "residual") -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"recognizer arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
        self.arch = arch
        w = width
        if arch == "residual":
            self.features = nn.Sequential(
                _conv_bn(3, w, 2),
                _Residual(w),
                _conv_bn(w, 2 * w, 2),
                _Residual(2 * w),
                _conv_bn(2 * w, 4 * w, 2),
                _Residual(4 * w),
                nn.Conv2d(4 * w, 2 * w, 1, bias=False),
                nn.BatchNorm2d(2 * w),
            )
            flat = 2 * w * 7 * 7
        else:
            self.features = nn.Sequential(
                _conv_bn(3, w, 2), _conv_bn(w, w),
                _conv_bn(w, 2 * w, 2), _conv_bn(2 * w, 2 * w),
                _conv_bn(2 * w, 4 * w, 2), _conv_bn(4 * w, 4 * w),
                _conv_bn(4 * w, 4 * w, 2),
            )
            flat = 4 * w * 4 * 4
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(flat, embedding_dim)
        self.out_bn = nn.BatchNorm1d(embedding_dim)

    @property
    def width(self) -> int:
        return int(self.features[0][0].out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (112, 112):
            raise ValueError(f"RecognizerNet expects (B, 3, 112, 112) crops, got {tuple(x.shape)}")
        x = F.avg_pool2d(x * 2.0 - 1.0, 2)
        x = self.features(x).flatten(1)
        return self.out_bn(self.fc(self.dropout(x)))


def load_recognizer_weights(path: str | Path) -> RecognizerNet:
    """A :class:`RecognizerNet` with the weights in ``path`` (``.safetensors``, or a torch file read with
    ``weights_only=True``), in eval mode. A safetensors header's ``fitdiff`` entry sets the architecture.

    Raises:
        FileNotFoundError: no such file; WeightsMismatchError: keys or shapes do not match;
        StateDictError: the file is unreadable.
    """
    path = Path(path)
    what = "synthetic recognizer weights"
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} {path} do not exist (data_prep/make_synthetic.py writes DATASET/recognizer.safetensors)"
        )
    header: dict = {}
    if path.suffix == ".safetensors":
        raw = safetensors_metadata(path, what=what).get(WEIGHTS_HEADER_KEY, "{}")
        try:
            header = json.loads(raw)
        except ValueError as exc:
            raise StateDictError(f"{what}: {path} has a malformed {WEIGHTS_HEADER_KEY!r} header: {exc}") from exc
    net = RecognizerNet(int(header.get("embedding_dim", 512)), int(header.get("width", 16)),
                        str(header.get("arch", "residual")))
    load_state_dict_file(net, path, what=what)
    return net.eval()


@register_identity_encoder("synthetic_recognizer")
class SyntheticRecognizer(IdentityEncoder):
    """The synthetic dataset's recognizer as a frozen :class:`IdentityEncoder` (512-d, 112x112 crops).

    Args:
        weights: weight file (e.g. ``DATASET/recognizer.safetensors``), a :class:`RecognizerNet`, or
            ``"random"`` for random initialisation (tests).
        device: where to put the network.
        name: identifier recorded with embeddings.
    """

    input_size = 112
    embedding_dim = 512

    def __init__(
        self,
        weights: str | Path | RecognizerNet,
        device: torch.device | str | None = None,
        name: str = "synthetic_recognizer",
    ) -> None:
        super().__init__()
        self.name = name
        if isinstance(weights, RecognizerNet):
            self.net = weights
        elif isinstance(weights, str) and weights == "random":
            log.warning("%s: using RANDOM weights; embeddings carry no identity information", name)
            self.net = RecognizerNet()
        else:
            self.net = load_recognizer_weights(weights)
        self.embedding_dim = self.net.fc.out_features
        if device is not None:
            self.to(device)
        self.freeze()

    def _embed(self, aligned: torch.Tensor) -> torch.Tensor:
        return self.net(aligned)
