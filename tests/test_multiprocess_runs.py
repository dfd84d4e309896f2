"""One run directory, one set of Hydra files, one resolved config and one W&B run per multi-process job
(torchrun, srun), whichever process composes the config (fitdiff/config/launch.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.loggers.logger import DummyExperiment
from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import OmegaConf

from fitdiff import tasks
from fitdiff.config.compose import EXPERIMENTS_DIR, REPO_ROOT
from fitdiff.config.launch import TIMESTAMP_FORMAT, hydra_output_subdir, process_rank, run_name
from fitdiff.config.schema import register_configs
from helpers import run_script

TORCHRUN_ONE_NODE = {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4", "RANK": "3"}


def _fake_proc(tmp_path: Path, pid: int, ticks: int, boot: int = 1_700_000_000) -> Path:
    """A /proc holding ``pid``'s stat (start time ``ticks`` after boot) and the boot time."""
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True)
    fields = ["S"] + ["0"] * 18 + [str(ticks)] + ["0"] * 10  # field 22 (starttime) is the 20th after ")"
    (proc / str(pid) / "stat").write_text(f"{pid} (python (torchrun)) " + " ".join(fields))
    (proc / "stat").write_text(f"cpu  1 2 3\nbtime {boot}\nprocesses 9\n")
    return proc


def test_rank_comes_from_the_launcher_in_lightnings_order():
    assert process_rank({}) == 0
    assert process_rank({"RANK": "5", "LOCAL_RANK": "1", "SLURM_PROCID": "7"}) == 5
    assert process_rank({"SLURM_PROCID": "7"}) == 7
    assert process_rank({"LOCAL_RANK": "1", "SLURM_PROCID": "0"}) == 1  # a child of Lightning's launcher
    assert hydra_output_subdir({}) == ".hydra" and hydra_output_subdir({"RANK": "2"}) is None


def test_one_process_runs_keep_the_timestamp():
    assert run_name("2026-01-02_03-04-05", env={}) == "2026-01-02_03-04-05"
    # a one-task srun step or one torchrun worker is a one-process run
    assert run_name("stamp", env={"SLURM_JOB_ID": "9", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"}) == "stamp"
    assert run_name("stamp", env={"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "1"}) == "stamp"


def test_torchrun_workers_on_one_node_share_the_agents_start_time(tmp_path):
    clk = os.sysconf("SC_CLK_TCK")
    proc = _fake_proc(tmp_path, 4242, ticks=3600 * clk + 5)
    expected = datetime.fromtimestamp(1_700_000_000 + 3600).strftime(TIMESTAMP_FORMAT)
    for rank in range(4):  # every worker, whatever its own start time
        env = {**TORCHRUN_ONE_NODE, "RANK": str(rank)}
        assert run_name("own-timestamp", env=env, parent_pid=4242, proc=proc) == expected


def test_torchrun_without_a_readable_agent_uses_the_rendezvous_id_or_refuses(tmp_path):
    env = {**TORCHRUN_ONE_NODE, "TORCHELASTIC_RUN_ID": "job77"}
    assert run_name("x", env=env, parent_pid=1, proc=tmp_path / "absent") == "torchrun-job77"
    with pytest.raises(ValueError, match="FITDIFF_RUN_NAME"):
        run_name("x", env=TORCHRUN_ONE_NODE, parent_pid=1, proc=tmp_path / "absent")


def test_torchrun_over_nodes_needs_a_shared_id():
    env = {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}
    with pytest.raises(ValueError, match=r"rdzv-id.*FITDIFF_RUN_NAME.*hydra\.run\.dir"):
        run_name("x", env=env)
    assert run_name("x", env={**env, "TORCHELASTIC_RUN_ID": "job42"}) == "torchrun-job42"


def test_srun_tasks_share_the_job_and_step_id():
    env = {"SLURM_JOB_ID": "123456", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "16", "SLURM_PROCID": "11"}
    assert run_name("own-timestamp", env=env) == "slurm-123456.0"


def test_an_explicit_name_wins_and_must_be_one_folder():
    env = {"FITDIFF_RUN_NAME": "exp7", "SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "8"}
    assert run_name("x", env=env) == "exp7"
    with pytest.raises(ValueError, match="FITDIFF_RUN_NAME"):
        run_name("x", env={"FITDIFF_RUN_NAME": "../elsewhere"})


def _hydra_config(*overrides: str):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(EXPERIMENTS_DIR), version_base="1.3"):
        return compose("train", overrides=["experiment=smoke", f"paths.root_dir={REPO_ROOT}", *overrides],
                       return_hydra_config=True)


def test_the_composed_run_dir_and_hydra_subdir_follow_the_launcher(monkeypatch):
    monkeypatch.setenv("FITDIFF_RUN_NAME", "shared")
    monkeypatch.setenv("RANK", "1")
    cfg = _hydra_config()
    assert cfg.hydra.run.dir == f"{REPO_ROOT}/outputs/smoke/runs/shared"
    assert cfg.hydra.sweep.dir == f"{REPO_ROOT}/outputs/smoke/multiruns/shared"
    assert cfg.hydra.output_subdir is None
    monkeypatch.delenv("FITDIFF_RUN_NAME")
    monkeypatch.setenv("RANK", "0")
    cfg = _hydra_config()
    name = Path(cfg.hydra.run.dir).name
    assert datetime.strptime(name, TIMESTAMP_FORMAT) and cfg.hydra.output_subdir == ".hydra"


def test_only_rank_zero_writes_the_resolved_config(compose_train, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    cfg = compose_train("smoke", "logger=csv", "extras.print_config=false")
    out = tasks.prepare_run(cfg)
    assert out.is_dir() and not (out / tasks.RESOLVED_CONFIG).exists()
    monkeypatch.setenv("RANK", "0")
    tasks.prepare_run(cfg)
    assert OmegaConf.load(out / tasks.RESOLVED_CONFIG).task_name == "smoke"


def test_wandb_logger_of_a_rank_above_zero_starts_no_run(tmp_path, monkeypatch):
    import wandb

    from fitdiff.loggers import wandb_logger

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = wandb_logger(save_dir=str(tmp_path), mode="offline")
    assert isinstance(logger.experiment, DummyExperiment)
    logger.log_hyperparams({"a": 1})
    logger.log_metrics({"m": 1.0}, step=0)
    assert wandb.run is None and not (tmp_path / "wandb").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchrun_with_two_processes_makes_one_run_dir_and_one_wandb_run(tmp_path):
    # torchrun's own module: the same launcher as the torchrun command
    result = run_script(
        "-m", "torch.distributed.run", "--nproc_per_node=2", "train.py", "experiment=smoke", "trainer=ddp_cpu",
        "logger=wandb", "trainer.max_steps=2", "extras.print_config=false", f"paths.log_dir={tmp_path}",
        timeout=240, env={"FITDIFF_RUN_NAME": ""},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "MEMBER: 2/2" in output
    runs = list((tmp_path / "smoke" / "runs").iterdir())
    assert len(runs) == 1, runs  # both processes wrote into one run directory
    run = runs[0]
    assert datetime.strptime(run.name, TIMESTAMP_FORMAT)
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # one W&B run, rank 0's
    assert OmegaConf.load(run / tasks.RESOLVED_CONFIG).trainer.devices == 2
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_srun_tasks_are_one_lightning_job_with_one_run_dir(tmp_path):
    """What ``srun`` gives each task of scripts/slurm/train.sbatch, faked for two CPU tasks on this machine."""
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_JOB_NAME": "fitdiff", "SLURM_NTASKS": "2",
             "SLURM_NTASKS_PER_NODE": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NNODES": "1",
             "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1"}
    command = [sys.executable, "train.py", "experiment=smoke", "trainer=ddp_cpu", "trainer.devices=2",
               "trainer.num_nodes=1", "logger=csv", "trainer.max_steps=2", "extras.print_config=false",
               f"paths.log_dir={tmp_path}"]
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
        env.update(slurm, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), PYTHONUNBUFFERED="1")
        procs.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "MEMBER: 2/2" in "".join(outputs)
    assert [p.name for p in (tmp_path / "smoke" / "runs").iterdir()] == ["slurm-4242.0"]
    run = tmp_path / "smoke" / "runs" / "slurm-4242.0"
    assert (run / ".hydra" / "config.yaml").is_file() and (run / tasks.RESOLVED_CONFIG).is_file()
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
