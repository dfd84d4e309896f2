"""What ``train.py`` and ``evaluate.py`` run: build the objects a config describes and drive Lightning.

Both tasks take a composed Hydra config (``experiments/train.yaml`` / ``experiments/evaluate.yaml``),
validate it completely before doing any work, save the resolved config in the run directory, and
return the final metrics as plain floats. Tests call these functions directly.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf, open_dict

from fitdiff.callbacks.checkpoint import AtomicCheckpointIO
from fitdiff.callbacks.resume import LAST, Resolved, ResumeState, resolve_checkpoint
from fitdiff.config import ConfigError, validate_config
from fitdiff.config.checkpoint_kind import check_checkpoint_stage, model_stage
from fitdiff.config.instantiate import instantiate_callbacks, instantiate_loggers
from fitdiff.config.launch import process_rank
from fitdiff.data.errors import ManifestError
from fitdiff.io import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["train", "evaluate", "prepare_run", "run_cli"]

RESOLVED_CONFIG = "config_resolved.yaml"


def prepare_run(cfg: DictConfig) -> Path:
    """Validate ``cfg``, apply ``extras``, seed, and save the resolved config; return the run dir."""
    validate_config(cfg)
    _single_console_handler()
    if cfg.extras.ignore_warnings:
        warnings.filterwarnings("ignore")
    if cfg.extras.enforce_tags and not cfg.get("tags"):
        raise ConfigError("extras.enforce_tags is set but 'tags' is empty: pass tags=[...]")
    os.environ["FITDIFF_ASSETS"] = str(cfg.paths.assets_dir)  # fitdiff.assets.require looks there
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if process_rank() == 0:  # every process of a multi-process job shares the run dir
        atomic_write_text(output_dir / RESOLVED_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.extras.print_config:
        _print_config(cfg)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    return output_dir


def _single_console_handler() -> None:
    """Lightning attaches its own console handler; under Hydra's logging every line would print twice."""
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True  # to the run's console and log-file handlers


def _print_config(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.syntax import Syntax

    text = OmegaConf.to_yaml(cfg, resolve=True)
    Console(stderr=True).print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))


class _ValidationRecorder(L.Callback):
    """Records whether a validation loop (not the sanity check) completed during ``fit``."""

    def __init__(self) -> None:
        self.validated = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated = True


def _build(cfg: DictConfig, resume: Resolved | None = None) -> tuple[Any, L.LightningModule, L.Trainer]:
    """DataModule, model and trainer (with callbacks and loggers) from ``cfg``; W&B loggers continue the run
    of the checkpoint ``resume`` (its saved run id, ``resume="allow"``)."""
    if cfg.get("data") is None or cfg.get("model") is None:
        raise ConfigError("the run needs 'data' and 'model': choose an experiment, e.g. experiment=smoke")
    log.info("data: %s", cfg.data._target_)
    datamodule = instantiate(cfg.data)
    log.info("model: %s", cfg.model._target_)
    model = instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    run_id = resume.wandb_run_id if resume is not None else None
    loggers = instantiate_loggers(_continue_wandb_run(cfg.get("logger"), run_id))
    callbacks += [_ValidationRecorder(), ResumeState()]
    extra = {} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}  # atomic checkpoint files
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra)
    hparams = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)
    return datamodule, model, trainer


def _metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}


def _continue_wandb_run(loggers: DictConfig | None, run_id: str | None) -> DictConfig | None:
    """The ``logger`` group with ``id=run_id, resume=allow`` in each W&B node that sets no ``id`` itself."""
    if loggers is None or not run_id:
        return loggers
    loggers = copy.deepcopy(loggers)  # the run's config stays as composed (interpolations still resolve)
    with open_dict(loggers):
        for name, node in loggers.items():
            target = str(node.get("_target_", "")) if isinstance(node, DictConfig) else ""
            if target.rsplit(".", 1)[-1] in ("wandb_logger", "WandbLogger") and not node.get("id"):
                node.id, node.resume = run_id, "allow"
                log.info("logger.%s: continuing W&B run %s", name, run_id)
    return loggers


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # no Hydra application (tests, compose)
        return False


def _check_ckpt(cfg: DictConfig, allow_last: bool = True) -> Resolved | None:
    """``ckpt_path`` resolved and read (:func:`fitdiff.callbacks.resume.resolve_checkpoint`), or None."""
    value = cfg.get("ckpt_path")
    if value == LAST and not allow_last:
        raise ConfigError("ckpt_path=last resumes training; name the checkpoint file to evaluate")
    node = (cfg.get("callbacks") or {}).get("last_checkpoint") or {}
    resolved = resolve_checkpoint(value, cfg.paths.output_dir, filename=str(node.get("filename") or "last"),
                                  search_siblings=not _in_multirun())
    stage = model_stage((cfg.get("model") or {}).get("_target_"))
    if resolved is not None and stage is not None:  # a checkpoint of the other stage fails before any work
        check_checkpoint_stage(resolved.path, stage, what="ckpt_path")
    return resolved


def _validate_if_never_validated(trainer: L.Trainer, model: L.LightningModule, datamodule: Any) -> dict[str, float]:
    """Validate the final weights when ``fit`` finished without a validation; return those metrics.

    A run shorter than ``val_check_interval`` (``trainer.max_steps=2``, an early ``max_time``) would
    otherwise end with no validation metric at all. Nothing is done when validation is disabled
    (``limit_val_batches=0``), the model has no ``validation_step``, or fit did not finish.
    """
    recorder = next((c for c in trainer.callbacks if isinstance(c, _ValidationRecorder)), None)
    if (
        recorder is None
        or recorder.validated
        or trainer.state.status != TrainerStatus.FINISHED
        or trainer.limit_val_batches == 0
        or not is_overridden("validation_step", model)
        or not hasattr(datamodule, "val_dataloader")
    ):
        return {}
    log.warning(
        "training ended at step %d before its first validation (val_check_interval=%s): validating the final weights",
        trainer.global_step, trainer.val_check_interval,
    )
    trainer.validate(model, datamodule=datamodule, verbose=False)
    return _metrics(trainer)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and optionally test) the model a config describes.

    A run that ends before its first validation (fewer steps than ``val_check_interval``) validates its
    final weights once after ``fit``.

    ``ckpt_path`` (a file, or ``last``: :func:`fitdiff.callbacks.resume.resolve_checkpoint`) resumes
    exactly: weights, EMA, optimisers, schedules, data position, random generators and the W&B run.

    Returns:
        The trainer's final callback metrics (train, val and, with ``test=true``, test), as floats.
    """
    prepare_run(cfg)
    resume = _check_ckpt(cfg)
    ckpt = str(resume.path) if resume is not None else None
    datamodule, model, trainer = _build(cfg, resume)
    try:
        metrics: dict[str, float] = {}
        if cfg.train:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
            metrics = _metrics(trainer)
            metrics.update(_validate_if_never_validated(trainer, model, datamodule))
        if cfg.test:
            callback = trainer.checkpoint_callback
            best = callback.best_model_path if cfg.train and callback is not None else ""
            if cfg.train and not best:
                log.warning("no best checkpoint recorded: testing the final weights")
            trainer.test(model, datamodule=datamodule, ckpt_path=best or (None if cfg.train else ckpt), weights_only=True)
            metrics.update(_metrics(trainer))
    finally:
        _finish_loggers(trainer.loggers)
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test a trained checkpoint (``ckpt_path=...``) on the test split; return the test metrics.

    With ``table=NAME`` (``experiments/table/NAME.yaml``) build that result table instead: its files go
    into the run dir, its Markdown is printed, and its ``<table>/<method>/<metric>_<mean|std>`` values
    are returned.
    """
    if cfg.get("table") is not None:
        return _evaluate_table(cfg)
    prepare_run(cfg)
    resolved = _check_ckpt(cfg, allow_last=False)
    if resolved is None:
        raise ConfigError("evaluate needs a checkpoint: ckpt_path=/path/to/model.ckpt")
    ckpt = str(resolved.path)
    datamodule, model, trainer = _build(cfg)
    try:
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    finally:
        _finish_loggers(trainer.loggers)
    return _metrics(trainer)


def _evaluate_table(cfg: DictConfig) -> dict[str, float]:
    """Build ``cfg.table`` (a node whose object has ``run(out_dir)``) in the run dir, print its Markdown,
    plot it, index it in ``tables.json``, log it to W&B (with a W&B logger) and write ``report.html``."""
    from hydra.errors import InstantiationException

    from fitdiff.evaluation.publish import log_wandb_tables, publish_tables

    output_dir = prepare_run(cfg)
    log.info("table: %s", cfg.table._target_)
    try:
        table = instantiate(cfg.table, _convert_="all")
    except InstantiationException as exc:  # report the table's own configuration error on one line
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise
    result = table.run(output_dir)
    sys.stdout.write("\n" + result.markdown)
    sys.stdout.flush()
    parts = list(getattr(result, "parts", [result]))
    publish_tables(output_dir, parts)
    loggers = instantiate_loggers(cfg.get("logger"))
    try:
        log_wandb_tables(loggers, output_dir, parts)
    finally:
        _finish_loggers(loggers)
    if cfg.get("report", True):
        from fitdiff.report import write_report

        log.info("report: %s", write_report(output_dir))
    return result.metrics()


def _finish_loggers(loggers: list[Any]) -> None:
    """Finalize ``loggers`` and close W&B runs so a multirun's next job starts a new one."""
    for logger in loggers:
        finalize = getattr(logger, "finalize", None)
        if finalize is not None:
            finalize("success")
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def run_cli(task: Callable[[DictConfig], dict[str, float]], cfg: DictConfig) -> float | None:
    """Run ``task`` for a command-line entry point.

    A configuration error, and a data folder whose manifest is missing or unreadable (found when the
    DataModule is set up, before the first step), is reported on one line and exits with status 2.
    Returns the value of ``cfg.optimized_metric`` for Hydra sweepers, when set; when the run did not log
    it (no validation data, validation disabled, a misspelt name) a warning lists what was logged and
    ``None`` is returned.
    """
    try:
        metrics = task(cfg)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        raise SystemExit(2) from None
    except ManifestError as exc:
        log.error("data error: %s", str(exc).replace("\n", " "))  # one line
        raise SystemExit(2) from None
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        log.warning("optimized_metric '%s' was not logged; logged metrics: %s", name, ", ".join(sorted(metrics)))
        return None
    return metrics[name]
