"""The training stack end to end on the smoke experiment: run dir, checkpoints, resume, evaluate, loggers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fitdiff import tasks


def _train(compose_train, *overrides):
    cfg = compose_train("smoke", "logger=csv", *overrides)
    metrics = tasks.train(cfg)
    return cfg, metrics, Path(cfg.paths.output_dir)


def _global_step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


def test_smoke_training_writes_run_directory(compose_train):
    cfg, metrics, out = _train(compose_train, "test=true")
    resolved = OmegaConf.load(out / tasks.RESOLVED_CONFIG)
    assert resolved.trainer.max_epochs == cfg.trainer.max_epochs
    assert "${" not in OmegaConf.to_yaml(resolved)  # fully resolved
    assert _global_step(out / "checkpoints" / "last.ckpt") == 16  # 2 epochs x 8 batches
    assert {"train/loss", "val/loss", "test/loss"} <= set(metrics)
    assert (out / "csv" / "metrics.csv").read_text().count("\n") > 1


def test_resume_continues_from_checkpoint(compose_train, tmp_path):
    _, _, first = _train(compose_train)
    ckpt = first / "checkpoints" / "last.ckpt"
    first_weights = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    resumed_dir = tmp_path / "resumed"
    cfg = compose_train("smoke", "logger=csv", f"ckpt_path={ckpt}", "trainer.max_epochs=3")
    cfg.paths.output_dir = str(resumed_dir)
    tasks.train(cfg)
    state = torch.load(resumed_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 24  # 16 restored + 8 new, not 24 from scratch with 3 epochs
    assert not torch.equal(state["state_dict"]["layer.weight"], first_weights["layer.weight"])


def test_run_shorter_than_its_first_validation_validates_the_final_weights(compose_train, caplog):
    # the smoke experiment validates at the end of each 8-batch epoch: 2 steps never get there
    with caplog.at_level("WARNING", logger="fitdiff.tasks"):
        cfg, metrics, out = _train(compose_train, "trainer.max_steps=2")
    assert "before its first validation" in caplog.text
    assert "val/loss" in metrics and "train/loss" in metrics
    assert _global_step(out / "checkpoints" / "last.ckpt") == 2  # written at the end of the run
    assert tasks.run_cli(lambda _: metrics, cfg) == metrics["val/loss"]


def test_missing_optimized_metric_is_a_warning(compose_train, caplog):
    cfg = compose_train("smoke", "logger=csv", "trainer.max_steps=2", "trainer.limit_val_batches=0")
    with caplog.at_level("WARNING", logger="fitdiff.tasks"):
        assert tasks.run_cli(tasks.train, cfg) is None
    assert "optimized_metric 'val/loss' was not logged" in caplog.text
    assert "before its first validation" not in caplog.text  # validation is disabled: nothing to run
    assert _global_step(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt") == 2


def test_missing_checkpoint_is_a_config_error(compose_train):
    from fitdiff.config import ConfigError

    cfg = compose_train("smoke", "logger=csv", "ckpt_path=/nonexistent/model.ckpt")
    with pytest.raises(ConfigError, match="/nonexistent/model.ckpt"):
        tasks.train(cfg)


@pytest.mark.slow  # a training run, then evaluate.py on its checkpoint
def test_evaluate_tests_a_checkpoint(compose_train):
    _, _, out = _train(compose_train)
    cfg = compose_train("smoke", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", config_name="evaluate")
    metrics = tasks.evaluate(cfg)
    assert set(metrics) == {"test/loss"}
    assert (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").is_file()


def test_default_wandb_logger_runs_offline_without_key(compose_train):
    cfg = compose_train("smoke")  # default logger: wandb, mode auto, no API key in the environment
    tasks.train(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
