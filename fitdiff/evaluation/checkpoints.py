"""What a table needs to know about the diffusion checkpoints it compares, checked before any work.

:func:`inspect_checkpoints` reads each checkpoint's hyperparameters (``torch.load(weights_only=True,
mmap=True)``: the tensors are not read) and refuses, naming the files, a list with a missing file, a
file that is not a :class:`~fitdiff.ldm.module.LatentDiffusionModule` checkpoint, or checkpoints made
with different autoencoders (their latents, hence their samples, would not be comparable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fitdiff.config.checkpoint_kind import check_checkpoint_stage, checkpoint_stage
from fitdiff.config.errors import ConfigError
from fitdiff.io import sha256_file

__all__ = ["CheckpointInfo", "inspect_checkpoints"]


@dataclass(frozen=True)
class CheckpointInfo:
    """One diffusion checkpoint.

    Attributes:
        path: the file; sha256: its hex digest.
        label: the name its rows carry (the net's conditioning, ``+aux`` with auxiliary losses).
        conditioning: the denoiser's conditioning (``spade``, ``adagn``, ``crossattn``, ``concat``, ``none``).
        autoencoder_sha256: the autoencoder its latents come from.
        guidance_scale: the checkpoint's default classifier-free guidance scale.
        shape_dim: K of its latent layout.
        global_step: training steps, when recorded.
    """

    path: Path
    sha256: str
    label: str
    conditioning: str
    autoencoder_sha256: str | None
    guidance_scale: float
    shape_dim: int
    global_step: int | None


def _read(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # not a zip checkpoint, unpicklable content, truncated...
        raise ConfigError(f"checkpoint {path} cannot be read as a Lightning checkpoint: {exc}") from exc
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or "layout" not in hp or "net" not in hp:
        if checkpoint_stage(ckpt) == "autoencoder":  # say which stage it is and what to pass instead
            check_checkpoint_stage(path, "diffusion", what="ckpts", checkpoint=ckpt)
        raise ConfigError(
            f"{path} is not a diffusion (LatentDiffusionModule) checkpoint: no layout / net hyperparameters"
        )
    return {"hp": hp, "global_step": ckpt.get("global_step"), "extra": ckpt.get("fitdiff") or {}}


def inspect_checkpoints(
    paths: Sequence[str | Path], labels: Sequence[str] | None = None
) -> list[CheckpointInfo]:
    """Check and describe the checkpoints (in order); see the module docstring.

    Args:
        paths: checkpoint files.
        labels: row names instead of the conditioning-derived ones (one per checkpoint).

    Raises:
        ConfigError: no checkpoint, a missing or foreign file, labels of the wrong length or repeated,
            or two checkpoints with different autoencoder hashes (both files and hashes named).
    """
    if not paths:
        raise ConfigError("no checkpoint given: ckpts=[RUN/checkpoints/last.ckpt, ...]")
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"ckpts: no checkpoint file at {', '.join(missing)}")
    if labels is not None and len(labels) != len(paths):
        raise ConfigError(f"{len(labels)} labels for {len(paths)} checkpoints")
    infos: list[CheckpointInfo] = []
    for i, path in enumerate(paths):
        data = _read(path)
        hp = data["hp"]
        net = dict(hp.get("net") or {})
        conditioning = str(net.get("conditioning", "spade"))
        label = labels[i] if labels is not None else conditioning + ("+aux" if hp.get("aux_losses") else "")
        ae = hp.get("autoencoder_sha256") or data["extra"].get("autoencoder_sha256")
        step = data["global_step"]
        infos.append(
            CheckpointInfo(
                path=path,
                sha256=sha256_file(path),
                label=str(label),
                conditioning=conditioning,
                autoencoder_sha256=str(ae) if ae else None,
                guidance_scale=float(hp.get("guidance_scale", 1.0)),
                shape_dim=int(dict(hp["layout"]).get("shape_dim", 0)),
                global_step=int(step) if step is not None else None,
            )
        )
    first = infos[0]
    for info in infos[1:]:
        if info.autoencoder_sha256 != first.autoencoder_sha256:
            raise ConfigError(
                f"checkpoints made with different autoencoders: {first.path} (autoencoder sha256 "
                f"{first.autoencoder_sha256}) and {info.path} (autoencoder sha256 {info.autoencoder_sha256}); "
                "compare checkpoints trained on the latents of one autoencoder"
            )
    names = [i.label for i in infos]
    if labels is not None and len(set(names)) != len(names):
        raise ConfigError(f"labels must be distinct, got {names}")
    counts: dict[str, int] = {}
    out = []
    for info in infos:  # two checkpoints of one variant: "spade", "spade (2)"
        counts[info.label] = counts.get(info.label, 0) + 1
        if names.count(info.label) > 1 and counts[info.label] > 1:
            info = CheckpointInfo(**{**info.__dict__, "label": f"{info.label} ({counts[info.label]})"})
        out.append(info)
    return out
