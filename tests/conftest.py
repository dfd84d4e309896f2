"""Shared fixtures. Every test runs offline, with W&B credentials hidden and assets in a temp folder."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path_factory):
    """No W&B key, no forced W&B mode, an empty asset folder: tests never reach the network."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "FITDIFF_ROOT", "FITDIFF_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path_factory.getbasetemp() / "no-netrc"))
    monkeypatch.setenv("FITDIFF_ASSETS", str(tmp_path_factory.mktemp("assets")))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb")))


@pytest.fixture
def compose_train(tmp_path):
    """``compose_train(experiment, *overrides)`` -> a train config writing into ``tmp_path``."""
    from fitdiff.quickstart import compose_experiment

    def _compose(experiment: str, *overrides: str, config_name: str = "train"):
        return compose_experiment(experiment, tmp_path / "run", list(overrides), config_name=config_name)

    return _compose


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: tiny convolutions run faster, and far faster on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
