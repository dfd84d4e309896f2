"""Which training stage a checkpoint belongs to, and a clear error when it is not the one a command needs.

A Lightning checkpoint records its module's hyperparameters, not its class; the two stages tell apart
by them (read with ``torch.load(weights_only=True, mmap=True)``: the tensors are not read):

=================  ===============================================  ==========================================
stage              module                                            recognised by
=================  ===============================================  ==========================================
``autoencoder``    ``fitdiff.autoencoder.AutoencoderModule``         ``disc_optimizer`` / ``loss``, a ``net``
                                                                     node of a ``BranchedVQAutoencoder``, or
                                                                     the old flat ``maps`` / ``branches``;
                                                                     a ``.safetensors`` autoencoder export
``diffusion``      ``fitdiff.ldm.LatentDiffusionModule``             ``layout`` / ``autoencoder_sha256``
=================  ===============================================  ==========================================

:func:`check_checkpoint_stage` raises :class:`CheckpointStageError` (a :class:`ConfigError`) naming the
file, the stage it belongs to, the stage expected and what to pass instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fitdiff.config.errors import ConfigError

__all__ = ["STAGE_MODULES", "CheckpointStageError", "checkpoint_stage", "check_checkpoint_stage",
           "model_stage"]

#: stage -> the LightningModule that trains it
STAGE_MODULES: dict[str, str] = {
    "autoencoder": "fitdiff.autoencoder.AutoencoderModule",
    "diffusion": "fitdiff.ldm.LatentDiffusionModule",
}

#: stage -> the file a command of the other stage should be given instead
_WHAT_TO_PASS: dict[str, str] = {
    "autoencoder": "an autoencoder checkpoint (python train.py experiment=quickstart_ae, "
                   "<run>/checkpoints/last.ckpt) or its export (python -m fitdiff.autoencoder CKPT OUT.safetensors)",
    "diffusion": "a diffusion checkpoint (python train.py experiment=quickstart_ldm, <run>/checkpoints/last.ckpt)",
}

_AUTOENCODER_EXPORT_FORMAT = "fitdiff.autoencoder/"  # + version


class CheckpointStageError(ConfigError):
    """A checkpoint of one stage was given where another stage's was expected.

    Attributes:
        path: the file; found: its stage (``None``: neither); expected: the stage needed.
    """

    def __init__(self, message: str, path: Path, found: str | None, expected: str) -> None:
        super().__init__(message)
        self.path, self.found, self.expected = path, found, expected


def _class_name(target: Any) -> str:
    return str(target or "").rsplit(".", 1)[-1]


def stage_of_hparams(hparams: Mapping[str, Any]) -> str | None:
    """``"autoencoder"``, ``"diffusion"`` or None, from a checkpoint's ``hyper_parameters``."""
    if "layout" in hparams or "autoencoder_sha256" in hparams:
        return "diffusion"
    net = hparams.get("net")
    target = _class_name(net.get("_target_")) if isinstance(net, Mapping) else ""
    if "disc_optimizer" in hparams or "VQAutoencoder" in target or ("maps" in hparams and "branches" in hparams):
        return "autoencoder"
    return None


def checkpoint_stage(checkpoint: Any) -> str | None:
    """The stage of a loaded checkpoint (a dict with ``hyper_parameters``), or None."""
    if not isinstance(checkpoint, Mapping):
        return None
    hparams = checkpoint.get("hyper_parameters")
    return stage_of_hparams(hparams) if isinstance(hparams, Mapping) else None


def model_stage(target: str | None) -> str | None:
    """The stage a ``model._target_`` trains (None for another module, e.g. the smoke model)."""
    name = _class_name(target)
    return next((stage for stage, module in STAGE_MODULES.items() if _class_name(module) == name), None)


def _file_stage(path: Path) -> tuple[str | None, str]:
    """(stage, how the file was read) of a checkpoint or autoencoder export; a readable file only."""
    if path.suffix == ".safetensors":
        from fitdiff.io import safetensors_metadata

        fmt = safetensors_metadata(path, what="weight file").get("format")
        found = "autoencoder" if str(fmt).startswith(_AUTOENCODER_EXPORT_FORMAT) else None
        return found, f"a .safetensors file (format {fmt!r})"
    from fitdiff.io import load_checkpoint_file

    return checkpoint_stage(load_checkpoint_file(path)), "a file without either stage's hyperparameters"


def check_checkpoint_stage(path: str | Path, expected: str, *, what: str, checkpoint: Any = None) -> None:
    """Raise :class:`CheckpointStageError` unless ``path`` is a checkpoint of stage ``expected``.

    Args:
        path: the checkpoint (``.ckpt``) or, for the autoencoder, its ``.safetensors`` export.
        expected: ``"autoencoder"`` or ``"diffusion"``.
        what: how the message names the input (``"--ckpt"``, ``"model.autoencoder"``, ``"ckpt_path"``).
        checkpoint: the checkpoint already loaded (saves reading ``path`` again).

    A file that cannot be read is left to the caller's loader (whose error names the damage).
    """
    if expected not in STAGE_MODULES:
        raise ValueError(f"unknown stage {expected!r}; stages: {', '.join(STAGE_MODULES)}")
    path = Path(path)
    if checkpoint is not None:
        found, read_as = checkpoint_stage(checkpoint), "a file without either stage's hyperparameters"
    else:
        try:
            found, read_as = _file_stage(path)
        except Exception:  # unreadable: the loader reports it
            return
    if found == expected:
        return
    instead = f"pass {_WHAT_TO_PASS[expected]}"
    if found is None:
        message = (f"{what}: {path} is not a checkpoint of the {expected} stage ({STAGE_MODULES[expected]}): it is "
                   f"{read_as}; {instead}")
    else:
        message = (f"{what}: {path} is a checkpoint of the {found} stage ({STAGE_MODULES[found]}), but the "
                   f"{expected} stage ({STAGE_MODULES[expected]}) is expected here; {instead}")
    raise CheckpointStageError(message, path, found, expected)
