"""Experiment loggers: Weights & Biases that never prompts or hangs, and a plain CSV alternative.

``wandb_logger(mode="auto")`` goes online only when an API key is configured *and* the W&B server
answers within a couple of seconds; otherwise it logs offline into the run directory (sync later with
``wandb sync <run_dir>/wandb/offline-run-*``). ``WANDB_MODE`` in the environment always wins.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)

__all__ = ["wandb_logger", "resolve_wandb_mode"]

WandbMode = Literal["auto", "online", "offline", "disabled"]


def _has_api_key(base_url: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(base_url).hostname or ""
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(netrc_path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(base_url: str, timeout: float) -> bool:
    parsed = urlparse(base_url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: WandbMode = "auto", timeout: float = 2.0) -> str:
    """Decide the W&B mode: ``online``, ``offline`` or ``disabled``.

    Args:
        mode: ``auto`` chooses online only with an API key and a reachable server.
        timeout: seconds to wait for the server in ``auto`` mode.
    """
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        return "offline" if env_mode == "dryrun" else env_mode
    if mode != "auto":
        return mode
    base_url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if not _has_api_key(base_url):
        log.info("W&B: no API key configured (WANDB_API_KEY or `wandb login`): logging offline")
        return "offline"
    if not _reachable(base_url, timeout):
        log.warning("W&B: %s not reachable within %.0fs: logging offline", base_url, timeout)
        return "offline"
    return "online"


def wandb_logger(
    project: str = "fitdiff",
    save_dir: str = ".",
    name: Optional[str] = None,
    mode: WandbMode = "auto",
    tags: Optional[list[str]] = None,
    group: Optional[str] = None,
    entity: Optional[str] = None,
    log_model: bool = False,
    **kwargs: Any,
) -> WandbLogger:
    """A :class:`~lightning.pytorch.loggers.WandbLogger` whose online/offline mode is chosen safely.

    Args:
        project: W&B project.
        save_dir: folder for the local run files (the run directory).
        name: run name shown in the W&B UI.
        mode: ``auto`` | ``online`` | ``offline`` | ``disabled`` (see :func:`resolve_wandb_mode`).
        tags, group, entity: W&B run metadata.
        log_model: upload checkpoints as artifacts (online only).
        **kwargs: passed to ``wandb.init``.
    """
    resolved = resolve_wandb_mode(mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = dict(kwargs)
    if resolved == "disabled":
        extra["mode"] = "disabled"
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        offline=resolved == "offline",
        tags=list(tags) if tags else None,
        group=group,
        entity=entity,
        log_model=log_model if resolved == "online" else False,
        **extra,
    )
