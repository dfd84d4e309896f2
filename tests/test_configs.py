"""Every experiment composes and instantiates; bad keys and types fail before any work, naming the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fitdiff.config import ConfigError, validate_config
from fitdiff.config.compose import experiment_names
from fitdiff.config.instantiate import instantiate_callbacks, instantiate_loggers
from fitdiff.config.validate import check_value_type
from helpers import diffusion_overrides, run_script

EXPERIMENTS = experiment_names()


def test_there_are_experiments():
    assert "smoke" in EXPERIMENTS


def _is_diffusion(name: str, compose_train) -> bool:
    return compose_train(name).model._target_ == "fitdiff.ldm.LatentDiffusionModule"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_validates_and_instantiates(name, compose_train, request):
    # diffusion experiments need an autoencoder file and latents: the tiny ones of the latent_dataset fixture
    overrides = (diffusion_overrides(name, request.getfixturevalue("latent_dataset"))
                 if _is_diffusion(name, compose_train) else [])
    cfg = compose_train(name, *overrides)
    validate_config(cfg)
    assert cfg.task_name  # experiments name their runs
    assert instantiate(cfg.data) is not None
    assert instantiate(cfg.model) is not None
    callbacks = instantiate_callbacks(cfg.callbacks)
    loggers = instantiate_loggers(cfg.logger)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.loggers and callbacks


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_evaluate_config_composes(name, compose_train):
    cfg = compose_train(name, "ckpt_path=/tmp/x.ckpt", config_name="evaluate")
    validate_config(cfg)
    assert cfg.test and not cfg.train


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_cfg_job_prints_composed_config(name):
    result = run_script("train.py", "--cfg", "job", f"experiment={name}")
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    assert {"data", "model", "trainer", "logger", "callbacks", "paths"} <= set(printed)
    assert printed.model._target_ and printed.trainer._target_ == "lightning.pytorch.Trainer"


@pytest.mark.slow
def test_unknown_top_level_key_on_command_line_is_named():
    result = run_script("train.py", "experiment=smoke", "no_such_key=1")
    assert result.returncode != 0
    assert "no_such_key" in result.stdout + result.stderr


@pytest.mark.slow
def test_wrong_type_on_command_line_is_named_before_any_work(tmp_path):
    result = run_script("train.py", "experiment=smoke", "trainer.max_epochs=ten", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "trainer.max_epochs" in result.stdout + result.stderr
    assert not (tmp_path / "checkpoints").exists()  # nothing was trained


def test_unknown_nested_key_is_named_with_suggestion(compose_train):
    cfg = compose_train("smoke", "+trainer.max_epoch=3")
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch'.*Did you mean: max_epochs"):
        validate_config(cfg)


def _experiment_file(tmp_path, body: str) -> str:
    """An extra config dir holding experiment/typo.yaml; returns the searchpath override."""
    folder = tmp_path / "extra_configs" / "experiment"
    folder.mkdir(parents=True)
    header = "# @package _global_\ndefaults:\n  - override /data: boring\n  - override /model: smoke\n"
    (folder / "typo.yaml").write_text(header + body)
    return f"hydra.searchpath=[file://{folder.parent}]"


def test_schema_rejects_top_level_typo_in_experiment_file(compose_train, tmp_path):
    with pytest.raises(ConfigCompositionException, match="seeed"):
        compose_train("typo", _experiment_file(tmp_path, "seeed: 3\n"))


def test_nested_typo_in_experiment_file_is_named(compose_train, tmp_path):
    cfg = compose_train("typo", _experiment_file(tmp_path, "trainer:\n  max_epoch: 3\n"))
    with pytest.raises(ConfigError, match=r"'trainer\.max_epoch'"):
        validate_config(cfg)


def test_schema_rejects_wrong_top_level_type(compose_train):
    with pytest.raises(ConfigCompositionException, match="seed"):
        compose_train("smoke", "seed=abc")


@pytest.mark.slow
def test_unknown_experiment_lists_choices():
    result = run_script("train.py", "experiment=does_not_exist")
    assert result.returncode != 0
    assert "smoke" in result.stdout + result.stderr  # Hydra lists the available options


@pytest.mark.parametrize(
    "node, message",
    [
        ({"m": {"_target_": "torch.nn.Linear", "in_features": 2, "out_featurs": 3}}, r"m\.out_featurs"),
        ({"m": {"_target_": "torch.nn.Linear", "in_features": 2}}, r"missing required key.*'m\.out_features'"),
        ({"m": {"_target_": "torch.nn.Linear", "in_features": 2.5, "out_features": 1}}, r"m\.in_features"),
        ({"m": {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1, "bias": "yes"}}, r"m\.bias"),
        ({"m": {"_target_": "no.such.module.Thing"}}, r"m\._target_: cannot import 'no\.such\.module\.Thing'"),
        ({"a": {"b": [{"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1, "x": 1}]}}, r"a\.b\[0\]\.x"),
    ],
)
def test_validate_names_the_bad_key(node, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(OmegaConf.create(node))


def test_validate_accepts_good_nodes_and_partial():
    validate_config(OmegaConf.create({"m": {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1}}))
    validate_config(OmegaConf.create({"opt": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}}))


def test_validate_reports_unresolvable_interpolation():
    with pytest.raises(ConfigError, match="missing"):
        validate_config(OmegaConf.create({"a": "${missing}"}))


def test_check_value_type_rules():
    from collections.abc import Sequence
    from typing import Literal, Optional, Union

    assert check_value_type(3, float) and not check_value_type(3.5, int)
    assert not check_value_type(True, int) and check_value_type(True, bool)
    assert check_value_type(None, Optional[int]) and not check_value_type("x", Optional[int])
    assert check_value_type("bf16-mixed", Literal["bf16-mixed", "32-true"])
    assert not check_value_type("bf17", Literal["bf16-mixed", "32-true"])
    assert not check_value_type(32, Literal["32"])  # Literal compares type too
    assert check_value_type([1, 2], list[int]) and not check_value_type([1, "a"], list[int])
    assert check_value_type("auto", Union[list[int], str, int])
    assert check_value_type([0.5, 0.5], Sequence[float]) and not check_value_type(3, Sequence[float])
