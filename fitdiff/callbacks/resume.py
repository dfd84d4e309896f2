"""Exact resume: what checkpoints carry besides Lightning's state, and which checkpoint ``ckpt_path`` means.

Lightning's checkpoints restore the weights (the EMA is part of the module), optimisers, schedules, loop
counters and the DataModule's ``state_dict`` (the data position, :mod:`fitdiff.data.position`).
:class:`ResumeState` (added to every training run by :mod:`fitdiff.tasks`) adds the rest, under
``checkpoint["resume_state"]``:

- the states of torch's (CPU and CUDA), numpy's and Python's global random generators, restored when
  training starts again, so that the noise, timesteps and condition dropout of every later step are the
  ones an uninterrupted run draws (rank 0's states are restored on every rank: the ranks of a job seed
  alike and draw alike);
- the W&B run id, so that the resumed run logs into the same W&B run (:func:`wandb_run_id`).

:func:`resolve_checkpoint` turns ``ckpt_path`` into a file: ``last`` is ``<run dir>/checkpoints/last.ckpt``
of this run directory when it has one (the run directory was reused: ``hydra.run.dir=...`` or
``FITDIFF_RUN_NAME``), else of the newest run beside it (``outputs/<task_name>/runs/*``: the latest run of
the same experiment; not in a multirun, whose jobs must reuse their directories). A checkpoint that cannot
be read (truncated) is refused naming the file; for ``last`` the previous one, ``last-prev.ckpt``, is used
instead, with a warning.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from fitdiff.callbacks.checkpoint import previous_checkpoint
from fitdiff.config.errors import ConfigError
from fitdiff.io import load_checkpoint_file

__all__ = ["LAST", "RESUME_KEY", "Resolved", "ResumeState", "read_checkpoint", "resolve_checkpoint",
           "wandb_run_id"]

log = logging.getLogger(__name__)

#: the ``ckpt_path`` value meaning "the latest checkpoint of this experiment"
LAST = "last"
#: the checkpoint key of :class:`ResumeState`'s entry
RESUME_KEY = "resume_state"


# ----------------------------------------------------------------------------------------- random generators

def rng_states() -> dict[str, Any]:
    """The global generators' states, as types ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore :func:`rng_states` (a CUDA state is skipped when the device count differs)."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = states.get("torch.cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("resume: the CUDA generator states of %d devices were saved, %d are visible: not restored",
                        len(cuda), torch.cuda.device_count())


def _wandb_id(trainer: L.Trainer) -> str | None:
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            try:
                version = logger.version
            except Exception:  # no run on this rank
                return None
            return str(version) if version else None
    return None


class ResumeState(L.Callback):
    """Save the random generators' states and the W&B run id in checkpoints; restore the generators.

    The states are restored at the start of training (after Lightning set up the training loader), so
    the next training step draws what it drew in the interrupted run.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RESUME_KEY] = {"rng": rng_states(), "wandb_run_id": _wandb_id(trainer)}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._pending = (checkpoint.get(RESUME_KEY) or {}).get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None


# ----------------------------------------------------------------------------------------- checkpoint files

def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (memory-mapped, ``weights_only=True``), checked to be a training checkpoint.

    Raises:
        ValueError: the file cannot be read (truncated, not a torch file) or holds no ``state_dict``; the
            message names the file and the reason, on one line.
    """
    path = Path(path)
    try:
        checkpoint = load_checkpoint_file(path)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        size = path.stat().st_size if path.is_file() else 0
        raise ValueError(f"{path} is not a readable checkpoint ({size} bytes; truncated?): {reason[:300]}") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a training checkpoint (no state_dict)")
    return checkpoint


@dataclass
class Resolved:
    """A readable checkpoint that ``ckpt_path`` resolved to."""

    path: Path
    global_step: int | None = None
    wandb_run_id: str | None = None  #: the W&B run it logged to (saved by :class:`ResumeState`)

    @classmethod
    def read(cls, path: Path) -> Resolved:
        """Read ``path`` (:func:`read_checkpoint`, which raises ValueError) and keep what resuming needs."""
        checkpoint = read_checkpoint(path)
        step = checkpoint.get("global_step")
        return cls(path, int(step) if step is not None else None, wandb_run_id(checkpoint))


def _first_readable(files: list[Path], what: str) -> Resolved:
    """The first readable file of ``files`` (those that exist), warning about each unreadable one."""
    problems: list[str] = []
    for path in files:
        try:
            resolved = Resolved.read(path)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if problems:
            log.warning("%s: %s; resuming from the previous checkpoint %s instead", what, problems[-1], path)
        return resolved
    raise ConfigError(f"{what}: no readable checkpoint: " + "; ".join(problems))


def _candidates(run: Path, filename: str) -> list[Path]:
    last = run / "checkpoints" / f"{filename}.ckpt"
    return [p for p in (last, previous_checkpoint(last)) if p.is_file()]


def _newest(paths: list[Path]) -> float:
    return max((p.stat().st_mtime for p in paths), default=0.0)


def resolve_checkpoint(value: str | None, output_dir: str | Path, *, filename: str = "last",
                       search_siblings: bool = True) -> Resolved | None:
    """The checkpoint ``ckpt_path=value`` names (None for no value); see the module docstring.

    Args:
        value: ``ckpt_path``: a file, ``last``, or None / empty.
        output_dir: this run's directory.
        filename: the latest checkpoint's name without ``.ckpt`` (``callbacks.last_checkpoint.filename``).
        search_siblings: for ``last``, look in the newest run beside ``output_dir`` when it has none.

    Raises:
        ConfigError: no such file; an unreadable file (named, with the intact previous checkpoint when
            there is one); for ``last``, no checkpoint at all or none readable.
    """
    if not value:
        return None
    if value != LAST:
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"ckpt_path: no checkpoint file at {value}")
        try:
            return Resolved.read(path)
        except ValueError as exc:
            hint = ""
            previous = previous_checkpoint(path)
            if previous.is_file():
                try:
                    read_checkpoint(previous)
                    hint = f"; the previous checkpoint {previous} is intact (ckpt_path={previous} or ckpt_path=last)"
                except ValueError:
                    pass
            raise ConfigError(f"ckpt_path: {exc}{hint}") from None
    output_dir = Path(output_dir).resolve()
    files = _candidates(output_dir, filename)
    if not files and search_siblings and output_dir.parent.is_dir():
        runs = [(p, _candidates(p, filename)) for p in output_dir.parent.iterdir() if p.is_dir() and p != output_dir]
        runs = [(p, f) for p, f in runs if f]
        if runs:
            run, files = max(runs, key=lambda item: _newest(item[1]))
            log.info("ckpt_path=last: %s has no checkpoint; the newest run beside it is %s", output_dir, run)
    if not files:
        where = f"{output_dir}/checkpoints" + (f" or any run in {output_dir.parent}" if search_siblings else "")
        raise ConfigError(f"ckpt_path=last: no {filename}.ckpt in {where}")
    resolved = _first_readable(files, "ckpt_path=last")
    log.info("ckpt_path=last: resuming from %s (step %s)", resolved.path, resolved.global_step)
    return resolved


def wandb_run_id(checkpoint: dict[str, Any]) -> str | None:
    """The W&B run id :class:`ResumeState` saved in ``checkpoint`` (None without one)."""
    value = (checkpoint.get(RESUME_KEY) or {}).get("wandb_run_id")
    return str(value) if value else None
