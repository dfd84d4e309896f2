"""``python evaluate.py table=all``: every result table of one checkpoint (or several) in one run.

The tables of ``experiments/table/all.yaml`` — conditioning, reconstruction, robustness, reflectance,
shape, ablation, in that order — are built one after another into the same run dir. Tables that fit
the same photos with the same checkpoint, recognizers and device share one
:class:`~fitdiff.evaluation.fit_runs.FitSetup` (and tables of fewer photos its cache of fits, which is
kept by batch), so each preset's fits are made once and reused: the
reconstruction table's guided fits are also the robustness table's clean rows, the reflectance and
shape tables' fitted rows and the ablation table's rows at the presets' CFG scale. The conditioning
table compares every checkpoint of ``ckpts``; the fitting tables use the first, except the ablation,
which takes them all. ``evaluate.py`` then plots each table and writes the report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fitdiff.config.errors import ConfigError

__all__ = ["AllTables", "AllResult", "TABLES"]

log = logging.getLogger(__name__)

#: the tables of ``table=all``, in report order
TABLES: tuple[str, ...] = ("conditioning", "reconstruction", "robustness", "reflectance", "shape", "ablation")
_MULTI_CHECKPOINT = {"conditioning", "ablation"}


@dataclass
class AllResult:
    """Every table's result (``parts``, in order), their Markdown one after another."""

    parts: list[Any] = field(default_factory=list)

    @property
    def markdown(self) -> str:
        return "\n".join(part.markdown for part in self.parts)

    @property
    def paths(self) -> list[Path]:
        return [p for part in self.parts for p in part.paths]

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in self.parts:
            out.update(part.metrics())
        return out


class AllTables:
    """``experiments/table/all.yaml``.

    Args:
        ckpts: the diffusion checkpoints (the first is the one the fitting tables fit with).
        tables: table name -> its config node (``experiments/table/<name>.yaml``), instantiated here.
        order: the tables to build, in order (a subset of :data:`TABLES`).
        preset_overrides: fitting preset -> Hydra overrides, given to every fitting table that uses the
            preset (after the table's own ``preset_overrides``).
    """

    def __init__(self, ckpts: Sequence[str], tables: Mapping[str, Any], order: Sequence[str] = TABLES,
                 preset_overrides: Mapping[str, Sequence[str]] | None = None, **_: Any) -> None:
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        ckpts = [str(c) for c in ckpts or []]
        if not ckpts:
            raise ConfigError("table=all needs at least one checkpoint: ckpts=[CKPT]")
        unknown = [name for name in order if name not in tables]
        if unknown:
            raise ConfigError(f"table.order names tables without a config: {', '.join(unknown)} "
                              f"(configured: {', '.join(tables)})")
        self.tables: dict[str, Any] = {}
        for name in order:
            node = tables[name]
            chosen = ckpts if name in _MULTI_CHECKPOINT else ckpts[:1]
            extra: dict[str, Any] = {}
            if preset_overrides and "preset_overrides" in node:
                used = set(node.get("presets") or []) | set(node.get("guidance") or [])
                own = dict(node.get("preset_overrides") or {})
                for preset, overrides in preset_overrides.items():
                    if preset in used:
                        own[preset] = [*own.get(preset, []), *overrides]
                extra["preset_overrides"] = own
            try:
                self.tables[name] = instantiate(node, ckpts=chosen, _convert_="all", **extra)
            except InstantiationException as exc:
                if isinstance(exc.__cause__, ConfigError):
                    raise ConfigError(f"table.tables.{name}: {exc.__cause__}") from None
                raise

    @staticmethod
    def _setup_key(table: Any) -> tuple | None:
        """What decides a table's :class:`FitSetup` (None: the table does not fit photos)."""
        if not hasattr(table, "setup") or not hasattr(table, "eval_recognizer_weights"):
            return None
        return (str(table.info.path), str(table.data_dir), tuple(table.splits), str(table.device), table.ema,
                str(table.recognizer_weights), str(table.eval_recognizer_weights), table.lpips)

    def run(self, out_dir: str | Path) -> AllResult:
        """Build every table into ``out_dir``; returns their results in order."""
        out_dir = Path(out_dir)
        setups: dict[tuple, Any] = {}
        caches: dict[tuple, dict] = {}
        result = AllResult()
        for index, (name, table) in enumerate(self.tables.items(), 1):
            log.info("table %d/%d: %s", index, len(self.tables), name)
            key = self._setup_key(table)
            if key is None:
                result.parts.append(table.run(out_dir))
                continue
            if (key, table.n_photos) not in setups:
                setup = table.setup()
                setup.cache = caches.setdefault(key, {})  # fits are cached by batch: any photo count shares them
                setups[key, table.n_photos] = setup
            result.parts.append(table.run(out_dir, setup=setups[key, table.n_photos]))
        return result
