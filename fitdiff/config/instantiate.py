"""Build the collections of objects a run needs (callbacks, loggers) from their config groups."""

from __future__ import annotations

import logging

from hydra.utils import instantiate
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from fitdiff.config.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["instantiate_callbacks", "instantiate_loggers"]


def _instantiate_group(cfg: DictConfig | None, group: str, expected: type) -> list:
    """Instantiate every ``_target_`` entry of a mapping config group, in file order."""
    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"'{group}' must be a mapping of name -> object config, got {type(cfg).__name__}")
    objects = []
    for name, node in cfg.items():
        if node is None:
            continue  # disabled from the command line: callbacks.rich_progress_bar=null
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"'{group}.{name}' needs a _target_ (got {node!r})")
        obj = instantiate(node)
        if not isinstance(obj, expected):
            raise ConfigError(f"'{group}.{name}' built a {type(obj).__name__}, not a {expected.__name__}")
        log.info("%s: %s", group, type(obj).__name__)
        objects.append(obj)
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """Lightning callbacks from the ``callbacks`` group (a mapping of name -> config)."""
    return _instantiate_group(cfg, "callbacks", Callback)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Lightning loggers from the ``logger`` group (a mapping of name -> config)."""
    return _instantiate_group(cfg, "logger", Logger)
