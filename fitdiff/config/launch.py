"""Which process of a multi-process launch this is, and the run name every process of one job agrees on.

A job started by ``torchrun`` or ``srun`` runs ``train.py`` once per device, and every process composes
its own Hydra config. With a timestamped run directory, processes that start a second apart would each
make their own. The resolvers below (registered by :func:`fitdiff.config.register_configs`, used in
``experiments/hydra/default.yaml``) give every process of one job the same run directory and let only
global rank 0 write Hydra's ``.hydra/`` files:

- ``${fitdiff:run_name,DEFAULT}`` -> :func:`run_name` (``DEFAULT`` is Hydra's timestamp);
- ``${fitdiff:hydra_subdir}`` -> ``.hydra`` on global rank 0, ``None`` (Hydra writes nothing) elsewhere.

Lightning's own launcher (``trainer.devices=N`` started as one process) passes ``hydra.run.dir`` and
``hydra.output_subdir=null`` to the processes it starts, so it needs none of this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

__all__ = ["RUN_NAME_ENV", "TIMESTAMP_FORMAT", "hydra_output_subdir", "process_rank", "run_name"]

#: environment variable naming the run explicitly (the same on every node of the job)
RUN_NAME_ENV = "FITDIFF_RUN_NAME"
#: the format of Hydra's default run-directory timestamp (``experiments/hydra/default.yaml``)
TIMESTAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"
#: where the global rank is found, in Lightning's order (torchrun, Lightning's launcher, srun, jsrun)
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key, "")
    try:
        return int(value)
    except ValueError:
        return default


def process_rank(env: Mapping[str, str] | None = None) -> int:
    """Global rank of this process from the launcher's environment (0 when not launched, >= 0)."""
    env = os.environ if env is None else env
    for key in _RANK_VARIABLES:
        if env.get(key, "") != "":
            return _int(env, key, 0)
    return 0


def _process_start(pid: int, proc: Path) -> datetime | None:
    """Start time of process ``pid`` from Linux's ``/proc`` (whole seconds), or None where unreadable."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks after boot
        boot = next(int(line.split()[1]) for line in (proc / "stat").read_text().splitlines()
                    if line.startswith("btime "))
        return datetime.fromtimestamp(boot + ticks // os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def run_name(default: str, env: Mapping[str, str] | None = None, parent_pid: int | None = None,
             proc: Path = Path("/proc")) -> str:
    """The run-directory name every process of this job computes alike.

    Args:
        default: the name of a run that is one process (Hydra's timestamp).
        env: the environment (default ``os.environ``).
        parent_pid: the launching process (default ``os.getppid()``: torchrun's agent for its workers).
        proc: the proc file system (tests pass a fake one).

    Returns, in order of precedence: ``$FITDIFF_RUN_NAME``; for the workers of one ``torchrun`` on one
    node, the agent's start time in the default's timestamp format (all its workers share the agent);
    for ``torchrun`` over several nodes, ``torchrun-<rdzv id>``; for a ``srun`` step of several tasks,
    ``slurm-<job id>.<step id>`` (the same after a requeue); otherwise ``default``.

    Raises:
        ValueError: ``torchrun`` over several nodes without a rendezvous id (``--rdzv-id``) or
            ``$FITDIFF_RUN_NAME``: each node would otherwise choose its own directory.
    """
    env = os.environ if env is None else env
    explicit = env.get(RUN_NAME_ENV, "").strip()
    if explicit:
        if "/" in explicit or explicit in (".", ".."):
            raise ValueError(f"{RUN_NAME_ENV}={explicit!r}: a run name is one folder name, without '/'")
        return explicit
    if "TORCHELASTIC_RUN_ID" in env and _int(env, "WORLD_SIZE", 1) > 1:
        nodes = _int(env, "WORLD_SIZE", 1) // max(1, _int(env, "LOCAL_WORLD_SIZE", 1))
        rdzv = env["TORCHELASTIC_RUN_ID"]
        if nodes > 1:
            if rdzv and rdzv != "none":
                return f"torchrun-{rdzv}"
            raise ValueError(
                f"torchrun over {nodes} nodes without a rendezvous id: every node would choose its own run "
                f"directory. Pass torchrun --rdzv-id=<job id> (the same on every node), set {RUN_NAME_ENV}, "
                "or give hydra.run.dir=<one folder> on every node")
        started = _process_start(os.getppid() if parent_pid is None else parent_pid, proc)
        if started is not None:
            return started.strftime(TIMESTAMP_FORMAT)
        if rdzv and rdzv != "none":
            return f"torchrun-{rdzv}"
        raise ValueError(f"torchrun: cannot read the launcher's start time here; set {RUN_NAME_ENV} or "
                         "hydra.run.dir so that every process writes into one run directory")
    tasks = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1))
    if env.get("SLURM_JOB_ID") and env.get("SLURM_STEP_ID", "") != "" and tasks > 1:
        return f"slurm-{env['SLURM_JOB_ID']}.{env['SLURM_STEP_ID']}"
    return default


def hydra_output_subdir(env: Mapping[str, str] | None = None) -> str | None:
    """``.hydra`` on global rank 0, None on the other processes (Hydra then writes no config files)."""
    return ".hydra" if process_rank(env) == 0 else None
