"""The quickstart's diffusion stage: which earlier runs it reuses and which it sets aside."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from fitdiff.config.compose import compose_experiment
from fitdiff.quickstart import stages
from fitdiff.tasks import RESOLVED_CONFIG


def _fake_run(run_dir, max_steps: int, global_step: int) -> None:
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml({"trainer": {"max_steps": max_steps}}))
    torch.save({"global_step": global_step}, run_dir / "checkpoints" / "last.ckpt")


def test_a_run_of_another_step_budget_is_set_aside_not_reused(tmp_path):
    budget = int(compose_experiment("quickstart_ldm", tmp_path / "probe").trainer.max_steps)
    old = tmp_path / "ldm"
    _fake_run(old, budget // 2, budget // 2)
    assert stages.finished(old)  # finished by its own budget...
    assert not stages.finished(old, "quickstart_ldm")  # ...not by the current one (make tables refuses it)
    stages._set_aside_other_budget("quickstart_ldm", old)
    aside = tmp_path / f"ldm-{budget // 2}steps"
    assert not old.exists() and stages.finished(aside)  # ...kept under a new name, nothing lost
    _fake_run(old, budget // 2, budget // 2)  # a second one goes beside the first
    stages._set_aside_other_budget("quickstart_ldm", old)
    assert (tmp_path / f"ldm-{budget // 2}steps-1").is_dir() and aside.is_dir()


def test_a_run_of_the_current_budget_stays(tmp_path):
    budget = int(compose_experiment("quickstart_ldm", tmp_path / "probe").trainer.max_steps)
    run = tmp_path / "ldm"
    _fake_run(run, budget, budget // 2)  # interrupted: resumed in place by the stage
    stages._set_aside_other_budget("quickstart_ldm", run)
    assert run.is_dir() and not stages.finished(run)
    _fake_run(tmp_path / "done", budget, budget)
    assert stages.finished(tmp_path / "done", "quickstart_ldm")
    stages._set_aside_other_budget("quickstart_ldm", tmp_path / "never_trained")  # nothing there: no-op
    assert not (tmp_path / "never_trained").exists()
