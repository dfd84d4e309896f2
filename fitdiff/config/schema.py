"""Typed schema of the top level of a run's configuration.

Registered with Hydra's ConfigStore and listed first in the defaults of ``experiments/train.yaml`` and
``experiments/evaluate.yaml``, so composition itself rejects a top-level key that does not exist (a typo
in an experiment file, ``seeed: 1``) or a value of the wrong type (``seed=abc``), naming the key. Object
nodes (``data``, ``model``, ``trainer``...) are free-form here and are checked against the signature of
their ``_target_`` by :func:`fitdiff.config.validate.validate_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class PathsConfig:
    """Where things live. All absolute after interpolation."""

    root_dir: str = MISSING  #: repository / project root
    data_dir: str = MISSING  #: datasets (shards, the embedded synthetic dataset)
    log_dir: str = MISSING  #: parent of every run directory
    output_dir: str = MISSING  #: this run's directory (Hydra's runtime output dir)
    work_dir: str = MISSING  #: the directory the command was started from
    assets_dir: str = MISSING  #: pretrained weights and shape models (``fitdiff.assets``)


@dataclass
class ExtrasConfig:
    """Conveniences applied before a task starts."""

    ignore_warnings: bool = False  #: silence Python warnings
    print_config: bool = True  #: print the resolved config as YAML at start
    enforce_tags: bool = False  #: refuse to start a run with no tags


@dataclass
class TrainConfig:
    """Top level of ``experiments/train.yaml``."""

    task_name: str = "train"
    tags: list[str] = field(default_factory=lambda: ["dev"])
    seed: Optional[int] = None
    train: bool = True  #: run ``trainer.fit``
    test: bool = False  #: run ``trainer.test`` on the best (else last) checkpoint after training
    ckpt_path: Optional[str] = None  #: resume from this checkpoint file, or ``last`` (README "Resuming")
    optimized_metric: Optional[str] = None  #: metric returned to sweepers (e.g. ``val/loss``)
    float32_matmul_precision: str = "highest"  #: torch.set_float32_matmul_precision ("high" on GPUs)
    data: Any = None
    model: Any = None
    callbacks: Any = None
    logger: Any = None
    trainer: Any = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)


@dataclass
class EvaluateConfig(TrainConfig):
    """Top level of ``experiments/evaluate.yaml``: as training, plus what to evaluate.

    Without ``table`` the checkpoint ``ckpt_path`` is tested (``trainer.test``); with ``table=NAME`` the
    ``_target_`` node of ``experiments/table/NAME.yaml`` builds a result table of the ``ckpts``.
    """

    task_name: str = "evaluate"
    train: bool = False
    test: bool = True
    ckpts: list[str] = field(default_factory=list)  #: checkpoints a table compares
    table: Any = None  #: the result table to build (``table=conditioning``)
    report: bool = True  #: after a table, write ``report.html`` of the run dir


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore and the ``fitdiff:`` resolvers in OmegaConf (idempotent).

    Call before composing. Resolvers: ``${fitdiff:assets_dir}`` is :func:`fitdiff.assets.asset_dir`;
    ``${fitdiff:run_name,DEFAULT}`` and ``${fitdiff:hydra_subdir}`` name one run directory for every
    process of a multi-process job (:mod:`fitdiff.config.launch`).
    """
    if not OmegaConf.has_resolver("fitdiff"):
        OmegaConf.register_new_resolver("fitdiff", _fitdiff_resolver)
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)


def _fitdiff_resolver(name: str, *args: str) -> str | None:
    if name == "assets_dir":
        from fitdiff.assets import asset_dir

        return str(asset_dir())
    if name == "run_name":
        from fitdiff.config.launch import run_name

        if len(args) != 1:
            raise ValueError("${fitdiff:run_name,DEFAULT} takes one argument: the name of a one-process run")
        return run_name(str(args[0]))
    if name == "hydra_subdir":
        from fitdiff.config.launch import hydra_output_subdir

        return hydra_output_subdir()
    raise ValueError(f"unknown resolver ${{fitdiff:{name}}}; known: assets_dir, run_name, hydra_subdir")
