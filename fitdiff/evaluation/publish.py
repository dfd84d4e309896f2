"""What ``evaluate.py`` adds to every table it builds: a PNG plot, an entry in the run dir's
``tables.json`` index (read by ``python -m fitdiff.report``) and, with a W&B logger, a W&B table.

``tables.json`` (atomic, merged: a table built again replaces its entry)::

    {"title": "FitDiff evaluation", "created": "<UTC ISO time>",
     "tables": [{"name", "title", "csv", "markdown", "plot"}],   # paths relative to the run dir
     "images": [{"path", "caption"}],                             # the fits' image grids
     "settings": ["config_resolved.yaml", ".hydra/overrides.yaml"]}  # those that exist
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fitdiff.evaluation.plots import plot_table
from fitdiff.io import atomic_write_text

__all__ = ["INDEX_NAME", "publish_tables", "update_index", "log_wandb_tables"]

log = logging.getLogger(__name__)

INDEX_NAME = "tables.json"
_SETTINGS = ("config_resolved.yaml", ".hydra/overrides.yaml")


def update_index(out_dir: Path, parts: Iterable[Any], title: str = "FitDiff evaluation") -> Path:
    """Merge the tables and images of ``parts`` (table results) into ``out_dir/tables.json``."""
    path = out_dir / INDEX_NAME
    index: dict[str, Any] = {"title": title, "tables": [], "images": []}
    if path.is_file():
        try:
            index.update(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("%s is not readable (%s): writing a new index", path, exc)
    tables = {t["name"]: t for t in index.get("tables", [])}
    images = {i["path"]: i for i in index.get("images", [])}
    for part in parts:
        plot = out_dir / f"{part.name}.png"
        tables[part.name] = {"name": part.name, "title": part.title, "csv": f"{part.name}.csv",
                             "markdown": f"{part.name}.md", "plot": plot.name if plot.is_file() else None}
        for image, caption in part.images:
            images[image] = {"path": image, "caption": caption}
    index.update(tables=list(tables.values()), images=list(images.values()),
                 created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 settings=[s for s in _SETTINGS if (out_dir / s).is_file()])
    return atomic_write_text(path, json.dumps(index, indent=2) + "\n")


def publish_tables(out_dir: str | Path, parts: list[Any]) -> Path:
    """Plot every table result of ``parts`` (``<name>.png``) and update the index; returns its path."""
    out_dir = Path(out_dir)
    for part in parts:
        if part.plot_metrics:
            try:
                plot_table(part.table, part.plot_metrics, out_dir / f"{part.name}.png", title=part.title)
            except ValueError as exc:  # a table without the plotted columns: no plot, the rest stands
                log.warning("no plot of %s: %s", part.name, exc)
    return update_index(out_dir, parts)


def log_wandb_tables(loggers: Iterable[Any], out_dir: str | Path, parts: list[Any]) -> None:
    """Each table as a W&B table (``tables/<name>``, the CSV's columns) and its plot and image grids as
    W&B images, for every :class:`~lightning.pytorch.loggers.WandbLogger` of ``loggers``."""
    from lightning.pytorch.loggers import WandbLogger

    out_dir = Path(out_dir)
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        for part in parts:
            records = part.table.records()
            columns = list(part.table.fieldnames)
            logger.log_table(key=f"tables/{part.name}", columns=columns,
                             data=[[record[c] for c in columns] for record in records])
            plot = out_dir / f"{part.name}.png"
            if plot.is_file():
                logger.log_image(key=f"plots/{part.name}", images=[str(plot)], caption=[part.title])
            if part.images:
                logger.log_image(key=f"images/{part.name}", images=[str(out_dir / p) for p, _ in part.images],
                                 caption=[c for _, c in part.images])
        logger.experiment.summary.update(
            {k: v for part in parts for k, v in part.metrics().items()})
