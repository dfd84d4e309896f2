"""Training of the synthetic dataset's face recognizer: ArcFace margin head, augmentation, weight files.

The network and its loading live in :mod:`fitdiff.face.synthetic_recognizer` (what inference needs);
this module trains it on aligned crops of the synthetic training subjects (additive angular margin loss,
Deng et al. 2019) and writes the weights as a deterministic ``.safetensors`` file.
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

from fitdiff.face.synthetic_recognizer import WEIGHTS_HEADER_KEY, RecognizerNet
from fitdiff.io import atomic_write_bytes

__all__ = [
    "ArcMarginHead",
    "RecognizerTrainingConfig",
    "shift_images",
    "train_recognizer",
    "save_recognizer_weights",
]

log = logging.getLogger(__name__)


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
        width: channels of the first stage; embedding_dim: output size; arch: the network
            (:data:`fitdiff.face.synthetic_recognizer.ARCHITECTURES`).
        seed: initialisation, batch order and augmentation.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    scale: float = 16.0
    margin: float = 0.3
    margin_warmup: float = 0.3
    max_shift: int = 4
    width: int = 16
    embedding_dim: int = 512
    arch: str = "residual"
    seed: int = 0

    def to_dict(self) -> dict:
        """The fields as a dict; ``arch`` only when it is not the default (records of builds made before
        the field existed stay the same)."""
        data = asdict(self)
        if data["arch"] == "residual":
            data.pop("arch")
        return data


def shift_images(batch: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate each image of a (B, 3, H, W) batch by its integer (dx, dy) of ``shifts`` (B, 2), in pixels
    (positive dx moves the content left: output pixel x reads input x + dx), replicating the edges."""
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
    # uint8 crops stay uint8 (a quarter of the memory) and become floats one batch at a time.
    as_uint8 = images.dtype == torch.uint8
    if images.ndim != 4 or images.shape[1:] != ((112, 112, 3) if as_uint8 else (3, 112, 112)):
        raise ValueError(
            f"crops must be (N, 112, 112, 3) uint8 or (N, 3, 112, 112) float, got {tuple(images.shape)}"
        )

    def batch_of(index: torch.Tensor) -> torch.Tensor:
        if as_uint8:
            return images[index].permute(0, 3, 1, 2).float().div_(255.0)
        return images[index]

    targets = torch.as_tensor(labels, dtype=torch.long)
    if targets.shape != (len(images),):
        raise ValueError(f"labels must be ({len(images)},), got {tuple(targets.shape)}")
    n_classes = int(targets.max()) + 1
    if n_classes < 2:
        raise ValueError("recognizer training needs at least two identities")
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = RecognizerNet(config.embedding_dim, config.width, config.arch)
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
            batch = shift_images(batch_of(index), shifts)
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


def save_recognizer_weights(
    net: RecognizerNet, path: str | Path, metadata: dict[str, str] | None = None
) -> str:
    """Write the network's state dict to ``path`` (``.safetensors``); return the file's sha256.

    The header holds one metadata entry, ``fitdiff``: a JSON object (sorted keys) with the architecture's
    ``width`` and ``embedding_dim`` plus ``metadata``. (safetensors writes several metadata entries in
    a random order, which would make the file, and its checksum, differ from run to run.)
    """
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    header = {"width": net.width, "embedding_dim": net.fc.out_features}
    if net.arch != "residual":  # files of the default architecture keep their bytes (and checksums)
        header["arch"] = net.arch
    header.update(metadata or {})
    payload = save(state, metadata={WEIGHTS_HEADER_KEY: json.dumps(header, sort_keys=True)})
    atomic_write_bytes(path, payload)
    return hashlib.sha256(payload).hexdigest()
