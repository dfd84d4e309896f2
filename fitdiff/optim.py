"""Optimisers and learning-rate schedules built from config nodes, as every LightningModule here does it.

A module takes its optimiser and schedule as ``_partial_`` config nodes and builds them in
``configure_optimizers``; the nodes are kept as plain dicts, so they are stored in checkpoints as
hyperparameters that load with ``torch.load(weights_only=True)``::

    optimizer: {_target_: torch.optim.Adam, _partial_: true, lr: 1.0e-4, betas: [0.5, 0.9]}
    scheduler: {_target_: fitdiff.optim.warmup_cosine, _partial_: true, warmup_steps: 500, total_steps: 300000}

Schedules are functions of the **optimiser step** (0-based: ``scheduler.step()`` is called once after each
optimiser step), never of epochs. Presets: ``experiments/model/optimizer/`` and
``experiments/model/scheduler/`` (``model/scheduler=cosine`` on the command line).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from fitdiff.config.errors import ConfigError

__all__ = [
    "Constant",
    "WarmupCosine",
    "build_optimizer",
    "build_partial",
    "build_scheduler",
    "config_node",
    "constant",
    "plain",
    "warmup_cosine",
]


def plain(value: Any) -> Any:
    """OmegaConf containers -> resolved plain dicts / lists, tuples -> lists; anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def config_node(node: Mapping[str, Any] | None, default_target: str, partial: bool = False) -> dict[str, Any]:
    """``node`` as a plain dict with ``_target_`` (``default_target`` when absent) and, if asked, ``_partial_``."""
    out = plain(dict(node or {}))
    if not isinstance(out, dict):
        raise ConfigError(f"expected a mapping for a {default_target} config node, got {type(node).__name__}")
    out.setdefault("_target_", default_target)
    if partial:
        out["_partial_"] = True
    return out


def build_partial(node: Mapping[str, Any], what: str, *args: Any, **kwargs: Any) -> Any:
    """Instantiate the ``_partial_`` node ``node`` and call the result with ``args`` and ``kwargs``.

    Raises:
        ConfigError: building failed (unknown key, bad value, import error); the message names ``what``.
    """
    try:
        factory = instantiate(dict(node), _convert_="all")
        return factory(*args, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # TypeError (bad keyword), ValueError (bad value), InstantiationException
        raise ConfigError(f"{what} ({node.get('_target_')}): {exc}") from exc


def build_optimizer(node: Mapping[str, Any], params: Iterable[Any], what: str = "model.optimizer") -> torch.optim.Optimizer:
    """The optimiser a ``_partial_`` node describes, over ``params``.

    Raises:
        ConfigError: the node does not build an optimiser (unknown key, bad value); names ``what``.
    """
    optimizer = build_partial(node, what, params)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"{what} built a {type(optimizer).__name__}, not a torch.optim.Optimizer")
    return optimizer


def build_scheduler(node: Mapping[str, Any] | None, optimizer: torch.optim.Optimizer,
                    what: str = "model.scheduler") -> LRScheduler:
    """The schedule a ``_partial_`` node describes, for ``optimizer``; ``None`` is a constant rate.

    Raises:
        ConfigError: the node does not build a learning-rate scheduler; names ``what``.
    """
    if node is None:
        return constant(optimizer)
    scheduler = build_partial(node, what, optimizer)
    if not isinstance(scheduler, LRScheduler):
        raise ConfigError(f"{what} built a {type(scheduler).__name__}, not a torch.optim.lr_scheduler.LRScheduler")
    return scheduler


# ------------------------------------------------------------------------------------------ schedules


@dataclass
class Constant:
    """Learning-rate factor at optimiser step ``s``: ``min(1, (s + 1) / warmup_steps)``, then 1.

    A plain object rather than a closure, so that :class:`~torch.optim.lr_scheduler.LambdaLR` stores its
    fields in the checkpoint and restores them on resume.
    """

    warmup_steps: int = 0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return 1.0


@dataclass
class WarmupCosine:
    """Learning-rate factor at optimiser step ``s`` (0-based), in [min_lr_ratio, 1].

    Linear warm-up ``(s + 1) / warmup_steps`` for ``s < warmup_steps``, then a half cosine from 1 at
    ``warmup_steps`` to ``min_lr_ratio`` at ``total_steps``, and ``min_lr_ratio`` after it.
    """

    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant(optimizer: torch.optim.Optimizer, warmup_steps: int = 0) -> LambdaLR:
    """The optimiser's learning rate, after an optional linear warm-up over ``warmup_steps`` steps (>= 0)."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    return LambdaLR(optimizer, Constant(int(warmup_steps)))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0,
    warmup_fraction: float | None = None,
) -> LambdaLR:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` times the rate at ``total_steps``.

    Args:
        optimizer: the optimiser whose groups' ``lr`` is the peak rate.
        total_steps: optimiser steps until the end of the decay (> ``warmup_steps``); the presets use
            ``trainer.max_steps``.
        warmup_steps: optimiser steps of linear warm-up (>= 0).
        min_lr_ratio: final rate as a fraction of the peak, in [0, 1].
        warmup_fraction: the warm-up as a fraction of ``total_steps`` in [0, 1) (rounded down), so a run
            shortened with ``trainer.max_steps`` keeps its proportions; used when ``warmup_steps`` is 0
            (a ``warmup_steps`` given on the command line takes precedence).
    """
    if warmup_fraction is not None:
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        if not warmup_steps:
            warmup_steps = int(warmup_fraction * total_steps)
    if warmup_steps < 0 or total_steps <= warmup_steps:
        raise ValueError(
            f"needs 0 <= warmup_steps < total_steps, got warmup_steps={warmup_steps}, total_steps={total_steps} "
            "(total_steps defaults to trainer.max_steps: set it, or set total_steps)"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    return LambdaLR(optimizer, WarmupCosine(int(total_steps), int(warmup_steps), float(min_lr_ratio)))
