"""A compact face-recognition network for the synthetic dataset, and its ArcFace-loss training.

Pretrained recognition weights cannot be shipped or downloaded here, and a random-initialised ArcFace
carries little identity information. The synthetic dataset therefore trains this small network on
renders of its *training* subjects (additive angular margin loss, Deng et al. 2019) and embeds every
photo with it, so the identity signal of held-out subjects is real.

Network: 112x112 aligned RGB crops in [0, 1] -> ``2 x - 1`` -> 2x average pooling (56 px) -> a stride-2
stem and three residual stages (w, 2w, 4w channels at 28, 14, 7 px; w = 16 by default) -> 1x1 reduction
to 2w channels -> flatten -> linear 512 -> BatchNorm -> L2 normalisation (by :class:`IdentityEncoder`).

Weights are a plain state dict in a ``.safetensors`` file (or a ``torch.save`` file, read with
``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fitdiff.face.identity import (
    IdentityEncoder,
    WeightsMismatchError,
    load_state_dict_file,
    register_identity_encoder,
)

__all__ = [
    "RecognizerNet",
    "ArcMarginHead",
    "SyntheticRecognizer",
    "RecognizerTrainingConfig",
    "train_recognizer",
    "save_recognizer_weights",
    "load_recognizer_weights",
    "file_sha256",
]

log = logging.getLogger(__name__)

_HEADER_KEY = "fitdiff"  # safetensors metadata entry holding the architecture (JSON)


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


class RecognizerNet(nn.Module):
    """(B, 3, 112, 112) RGB in [0, 1] -> (B, embedding_dim) raw (not normalised) embeddings."""

    def __init__(self, embedding_dim: int = 512, width: int = 16) -> None:
        super().__init__()
        w = width
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
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(2 * w * 7 * 7, embedding_dim)
        self.out_bn = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (112, 112):
            raise ValueError(f"RecognizerNet expects (B, 3, 112, 112) crops, got {tuple(x.shape)}")
        x = F.avg_pool2d(x * 2.0 - 1.0, 2)
        x = self.features(x).flatten(1)
        return self.out_bn(self.fc(self.dropout(x)))


class ArcMarginHead(nn.Module):
    """Additive angular margin (ArcFace) logits: ``s cos(theta_y + m)`` for the true class, ``s cos(theta_j)``
    for the others, with theta the angle between the normalised embedding and class centre.

    Past ``theta + m > pi`` the target logit continues as ``cos(theta) - m sin(m)`` (monotone in theta).
    """

    def __init__(self, embedding_dim: int, n_classes: int, scale: float = 16.0, margin: float = 0.3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)
        self.scale = scale
        self.margin = margin

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, margin: float | None = None
    ) -> torch.Tensor:
        """(B, D) embeddings, (B,) labels -> (B, C) logits; ``margin`` overrides the configured one."""
        m = self.margin if margin is None else margin
        cos = F.linear(F.normalize(embeddings, dim=-1), F.normalize(self.weight, dim=-1)).clamp(
            -1 + 1e-7, 1 - 1e-7
        )
        target = cos.gather(1, labels[:, None])
        sin = (1.0 - target.pow(2)).sqrt()
        with_margin = target * math.cos(m) - sin * math.sin(m)
        with_margin = torch.where(target > math.cos(math.pi - m), with_margin, target - m * math.sin(m))
        logits = cos.scatter(1, labels[:, None], with_margin)
        return self.scale * logits


@dataclass
class RecognizerTrainingConfig:
    """Hyper-parameters of :func:`train_recognizer` (defaults fit the 5-minute dataset build).

    Attributes:
        epochs: passes over the crops; batch_size: crops per step.
        lr: peak AdamW learning rate (one-cycle cosine schedule, 10 % warm-up); weight_decay: AdamW.
        scale, margin: ArcFace logit scale s and angular margin m (radians); the margin ramps up linearly
            over the first ``margin_warmup`` fraction of the steps.
        max_shift: random translation of the crops in pixels (augmentation).
        width: channels of the first stage; embedding_dim: output size.
        seed: initialisation, batch order and augmentation.
    """

    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    scale: float = 16.0
    margin: float = 0.3
    margin_warmup: float = 0.3
    max_shift: int = 4
    width: int = 16
    embedding_dim: int = 512
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _shift(batch: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate each (3, H, W) image by integer (dx, dy) pixels with edge replication."""
    pad = int(shifts.abs().max())
    if pad == 0:
        return batch
    padded = F.pad(batch, (pad, pad, pad, pad), mode="replicate")
    h, w = batch.shape[-2:]
    return torch.stack(
        [
            padded[i, :, pad + dy : pad + dy + h, pad + dx : pad + dx + w]
            for i, (dx, dy) in enumerate(shifts.tolist())
        ]
    )


def train_recognizer(
    crops: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    config: RecognizerTrainingConfig | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[RecognizerNet, list[float]]:
    """Train a :class:`RecognizerNet` with the ArcFace loss; deterministic for a config and thread count.

    Args:
        crops: (N, 112, 112, 3) uint8 aligned crops (or (N, 3, 112, 112) float in [0, 1]).
        labels: (N,) int class ids in [0, C).
        config: hyper-parameters (default :class:`RecognizerTrainingConfig`).
        progress: called as ``progress(step, total_steps, loss)`` after every step.

    Returns:
        The trained network (eval mode, on CPU) and the mean loss of every epoch.
    """
    config = config or RecognizerTrainingConfig()
    images = torch.as_tensor(crops)
    if images.dtype == torch.uint8:
        images = images.permute(0, 3, 1, 2).float().div_(255.0)
    if images.ndim != 4 or images.shape[1:] != (3, 112, 112):
        raise ValueError(
            f"crops must be (N, 112, 112, 3) uint8 or (N, 3, 112, 112) float, got {tuple(images.shape)}"
        )
    targets = torch.as_tensor(labels, dtype=torch.long)
    if targets.shape != (len(images),):
        raise ValueError(f"labels must be ({len(images)},), got {tuple(targets.shape)}")
    n_classes = int(targets.max()) + 1
    if n_classes < 2:
        raise ValueError("recognizer training needs at least two identities")
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = RecognizerNet(config.embedding_dim, config.width)
        head = ArcMarginHead(config.embedding_dim, n_classes, config.scale, config.margin)
    params = list(net.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(images) // config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=total, pct_start=0.1)
    history: list[float] = []
    step = 0
    net.train()
    head.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        losses = []
        for b in range(steps_per_epoch):
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            shifts = torch.randint(
                -config.max_shift, config.max_shift + 1, (len(index), 2), generator=generator
            )
            batch = _shift(images[index], shifts)
            margin = config.margin * min(1.0, step / max(1.0, config.margin_warmup * total))
            # Dropout masks come from the global generator: seed it per step for determinism.
            torch.manual_seed(config.seed * 1_000_003 + step)
            loss = F.cross_entropy(head(net(batch), targets[index], margin=margin), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
            if progress is not None:
                progress(step, total, losses[-1])
        history.append(float(np.mean(losses)))
        log.info("recognizer epoch %d/%d: ArcFace loss %.4f", len(history), config.epochs, history[-1])
    return net.eval(), history


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def save_recognizer_weights(
    net: RecognizerNet, path: str | Path, metadata: dict[str, str] | None = None
) -> str:
    """Write the network's state dict to ``path`` (``.safetensors``); return the file's sha256.

    The header holds one metadata entry, ``fitdiff``: a JSON object (sorted keys) with the architecture's
    ``width`` and ``embedding_dim`` plus ``metadata``. (safetensors writes several metadata entries in
    a random order, which would make the file, and its checksum, differ from run to run.)
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    header = {"width": net.features[0][0].out_channels, "embedding_dim": net.fc.out_features}
    header.update(metadata or {})
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)})
    tmp.replace(path)
    return file_sha256(path)


def load_recognizer_weights(path: str | Path) -> RecognizerNet:
    """A :class:`RecognizerNet` with the weights in ``path`` (``.safetensors``, or a torch file read with
    ``weights_only=True``), in eval mode.

    Raises:
        FileNotFoundError: no such file; WeightsMismatchError: keys or shapes do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"synthetic recognizer weights {path} do not exist (data_prep/make_synthetic.py writes "
            f"DATASET/recognizer.safetensors)"
        )
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            header = json.loads((handle.metadata() or {}).get(_HEADER_KEY, "{}"))
        net = RecognizerNet(int(header.get("embedding_dim", 512)), int(header.get("width", 16)))
        state = load_file(str(path))
        expected = net.state_dict()
        bad = sorted(set(expected) ^ set(state)) + [
            k for k in expected if k in state and state[k].shape != expected[k].shape
        ]
        if bad:
            raise WeightsMismatchError(
                f"synthetic recognizer weights {path} do not match the network: {', '.join(bad[:8])}"
            )
        net.load_state_dict(state, strict=True)
    else:
        net = RecognizerNet()
        load_state_dict_file(net, path, what="synthetic recognizer weights")
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
