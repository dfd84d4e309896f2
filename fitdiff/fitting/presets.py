"""Fitting presets: ``experiments/fitting/NAME.yaml`` composed by Hydra into a :class:`FitConfig`.

A preset names every number of a fit (method, sampler and steps, CFG scale, guidance rule, step size,
range and recurrence, loss weights, camera initialisation, optimisation and polish budgets), so a result
can say which preset produced it. Overrides use Hydra's syntax relative to the preset, e.g.
``["guidance.scale=0.2", "sampler.num_inference_steps=50"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fitdiff.fitting.guidance import GuidanceConfig
from fitdiff.fitting.losses import LossWeights
from fitdiff.fitting.optimize import OptimizeConfig
from fitdiff.fitting.reconstructor import CameraInitConfig, FitConfig

__all__ = ["EXPERIMENTS_DIR", "available_presets", "load_preset", "preset_from_mapping"]

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


def available_presets() -> list[str]:
    """Names of the presets in ``experiments/fitting/``."""
    return sorted(p.stem for p in (EXPERIMENTS_DIR / "fitting").glob("*.yaml"))


def _section(node: dict[str, Any], key: str, cls: type, where: str) -> Any:
    values = dict(node.get(key) or {})
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} in '{key}' (known: {', '.join(sorted(known))})")
    return cls(**values)


def preset_from_mapping(node: dict[str, Any], where: str = "fitting preset") -> FitConfig:
    """:class:`FitConfig` from a resolved preset mapping (the sampler node is instantiated)."""
    from hydra.utils import instantiate

    allowed = {"name", "method", "sampler", "guidance_scale", "shape_temperature", "shape_prior", "guidance", "loss", "camera", "optimize", "polish"}
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    sampler = instantiate(node["sampler"], _convert_="all") if node.get("sampler") else None
    return FitConfig(
        name=str(node.get("name", "custom")),
        method=str(node.get("method", "guided")),
        sampler=sampler,
        guidance_scale=float(node.get("guidance_scale", 1.0)),
        shape_temperature=float(node.get("shape_temperature", 1.0)),
        shape_prior=str(node.get("shape_prior", "mean")),
        guidance=_section(node, "guidance", GuidanceConfig, where),
        loss=_section(node, "loss", LossWeights, where),
        camera=_section(node, "camera", CameraInitConfig, where),
        optimize=_section(node, "optimize", OptimizeConfig, where),
        polish=_section(node, "polish", OptimizeConfig, where) if node.get("polish") else OptimizeConfig(steps=0),
    )


def load_preset(name: str, overrides: list[str] | None = None) -> FitConfig:
    """The preset ``experiments/fitting/{name}.yaml`` with Hydra ``overrides`` relative to it.

    Raises:
        ValueError: unknown preset (the message lists the available ones) or unknown keys.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    names = available_presets()
    if name not in names:
        raise ValueError(f"unknown fitting preset {name!r}; presets in {EXPERIMENTS_DIR / 'fitting'}: {', '.join(names)}")
    from hydra.core.global_hydra import GlobalHydra

    hydra_overrides = [f"fitting={name}", *(f"fitting.{o}" for o in overrides or [])]
    holder = GlobalHydra.instance()
    saved = holder.hydra if holder.is_initialized() else None
    if saved is not None:  # inside a Hydra application (evaluate.py): compose apart, then put it back
        holder.clear()
    try:
        with initialize_config_dir(config_dir=str(EXPERIMENTS_DIR), version_base="1.3"):
            cfg = compose("reconstruct", overrides=hydra_overrides)
    finally:
        if saved is not None:  # the context manager swaps the singleton: take the current one
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(saved)
    node = OmegaConf.to_container(cfg.fitting, resolve=True)
    return preset_from_mapping(node, where=f"experiments/fitting/{name}.yaml")
