"""The ablation table: conditioning variant x guidance on/off x classifier-free guidance scale.

``python evaluate.py table=ablation ckpts=[SPADE.ckpt,NONE.ckpt]`` or ``table=ablation
runs=MULTIRUN_DIR`` (every ``checkpoints/last.ckpt`` under a Hydra multirun, e.g. of ``python train.py -m
experiment=ablation_spade,ablation_none``) fits the held-out photos of the reconstruction table with
each checkpoint, unguided and guided (``table.guidance``: the fitting presets of the two arms), at each
CFG scale (default: 1 and the checkpoint's own). Rows are ``<variant> / <unguided|guided> / s=<s>``,
scored like the reconstruction table (identity by the evaluation recognizer, photometric, landmark,
shape and albedo errors). The first checkpoint's fits at the presets' own scale are those of the
reconstruction table (shared in ``table=all``). Writes ``ablation.{csv,md}``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tqdm.auto import tqdm

from fitdiff.config.errors import ConfigError
from fitdiff.evaluation.checkpoints import CheckpointInfo, inspect_checkpoints
from fitdiff.evaluation.fit_runs import FitSetup
from fitdiff.evaluation.reconstruction import COLUMNS, ReconstructionResult, ReconstructionTable
from fitdiff.evaluation.table import ResultTable, TableRow

__all__ = ["AblationTable", "multirun_checkpoints"]

log = logging.getLogger(__name__)

_ARMS = ("unguided", "guided")


def multirun_checkpoints(runs: str | Path) -> list[tuple[Path, str]]:
    """``(checkpoint, job description)`` of every finished job under a multirun folder: its
    ``checkpoints/last.ckpt`` and the job's Hydra overrides (``.hydra/overrides.yaml``), in job order."""
    root = Path(runs)
    if not root.is_dir():
        raise ConfigError(f"table.runs: no folder {root}")
    found = sorted(root.glob("**/checkpoints/last.ckpt"), key=lambda p: [int(s) if s.isdigit() else s
                                                                          for s in p.parts])
    if not found:
        raise ConfigError(f"table.runs: no checkpoints/last.ckpt under {root} (train with python train.py -m ...)")
    out = []
    for ckpt in found:
        overrides = ckpt.parent.parent / ".hydra" / "overrides.yaml"
        job = " ".join(OmegaConf.load(overrides)) if overrides.is_file() else ckpt.parent.parent.name
        out.append((ckpt, job))
    return out


class AblationTable(ReconstructionTable):
    """``experiments/table/ablation.yaml``.

    Args:
        ckpts: the checkpoints of the variants (or ``runs``); runs: a multirun folder.
        guidance: the fitting presets of the ``unguided`` and ``guided`` arms, in that order.
        guidance_scales: CFG scales of every arm; None = 1 and each checkpoint's own scale.
        labels: row names of the checkpoints (default: the net's conditioning).
        The other arguments are those of :class:`ReconstructionTable`.
    """

    title = "Ablation"
    plot_metrics = (("identity_eval", True), ("shape_rmse_mm", False), ("diffuse_psnr", True))

    def __init__(self, ckpts: Sequence[str] = (), data_dir: str = "", runs: str | None = None,
                 guidance: Sequence[str] = ("unguided", "guided_eps"), guidance_scales: Sequence[float] | None = None,
                 labels: Sequence[str] | None = None, name: str = "ablation", **kwargs: Any) -> None:
        kwargs.pop("presets", None)
        kwargs.pop("mean_face", None)
        self.jobs: dict[str, str] = {}
        paths = [str(p) for p in ckpts or []]
        if runs:
            found = multirun_checkpoints(runs)
            paths = [str(p) for p, _ in found]
            self.jobs = {str(p): job for p, job in found}
        if not paths:
            raise ConfigError("table=ablation needs checkpoints: ckpts=[A.ckpt,B.ckpt] or table.runs=MULTIRUN_DIR")
        if len(guidance) != 2:
            raise ConfigError(f"table.guidance: two presets (unguided arm, guided arm), got {list(guidance)}")
        super().__init__([paths[0]], data_dir, presets=list(guidance), mean_face=False, name=name, **kwargs)
        self.infos: list[CheckpointInfo] = inspect_checkpoints(paths, labels)
        self.guidance_scales = None if guidance_scales is None else [float(s) for s in guidance_scales]

    def _scales(self, info: CheckpointInfo) -> list[float]:
        if self.guidance_scales is not None:
            return self.guidance_scales
        return sorted({1.0, float(info.guidance_scale)})

    def _arms(self, info: CheckpointInfo) -> list[tuple[str, Any]]:
        from fitdiff.fitting import load_preset

        rows = []
        for scale in self._scales(info):
            for arm, preset in zip(_ARMS, self.presets):
                overrides = [*self.preset_overrides.get(preset, []), f"guidance_scale={scale:g}"]
                rows.append((f"{info.label} / {arm} / s={scale:g}", load_preset(preset, overrides)))
        return rows

    def _setup_for(self, info: CheckpointInfo, base: FitSetup) -> FitSetup:
        """``base`` (photos, scene, recognizers) with ``info``'s denoiser."""
        if base.info is not None and Path(base.info.path) == Path(info.path):
            return base
        from fitdiff.ldm.module import LatentDiffusionModule

        module = LatentDiffusionModule.load_checkpoint(info.path, map_location=self.device)
        if base.info is not None and info.shape_dim != base.info.shape_dim:
            raise ConfigError(f"{info.path}: {info.shape_dim} shape coefficients, the first checkpoint has "
                              f"{base.info.shape_dim}: the variants must share the shape model")
        return dataclasses.replace(base, pipeline=module.pipeline(ema=self.ema), info=info, cache={})

    def run(self, out_dir: str | Path, setup: FitSetup | None = None) -> ReconstructionResult:
        out_dir = Path(out_dir)
        base = setup or self.setup()
        plan = [(info, self._arms(info)) for info in self.infos]
        total = sum(len(arms) for _, arms in plan) * len(base.photos)
        bar = tqdm(total=total, desc="ablation table", disable=not self.progress, dynamic_ncols=True)
        rows: list[TableRow] = []
        for info, arms in plan:
            variant = self._setup_for(info, base)
            rows += [self.fit_row(variant, cfg, label, bar) for label, cfg in arms]
        bar.close()
        table = ResultTable(rows, [c for c in COLUMNS if c.key in base.metrics.names], counts=["n_photos"])
        header = self._header(base.photos, [], base.lpips_state)
        header[2] = "checkpoints: " + "; ".join(
            f"{i.label} = {i.path} (sha256 {i.sha256}, step {i.global_step}, conditioning {i.conditioning}, own CFG "
            f"s={i.guidance_scale:g}{', job: ' + self.jobs[str(i.path)] if str(i.path) in self.jobs else ''})"
            for i in self.infos)
        header.append("arms: unguided = " + self._describe_arm(self.presets[0]) + "; guided = "
                      + self._describe_arm(self.presets[1]) + "; each at CFG scale s")
        csv_path, md_path, markdown = table.write(out_dir, self.name, title=self.title, header=header)
        log.info("wrote %s, %s", csv_path, md_path)
        return ReconstructionResult(table, markdown, [csv_path, md_path], name=self.name, title=self.title,
                                    plot_metrics=self.plot_metrics)

    def _describe_arm(self, preset: str) -> str:
        from fitdiff.fitting import load_preset

        d = load_preset(preset, self.preset_overrides.get(preset)).describe()
        text = f"preset {d['name']} ({d['sampler']['scheduler']} {d['sampler']['num_inference_steps']} steps"
        if d["method"] == "guided":
            g = d["guidance"]
            text += f", rule {g['rule']} scale {g['scale']} on [{g['start']}, {g['stop']})"
        return text + ")"
