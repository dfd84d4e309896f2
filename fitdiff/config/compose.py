"""Composing the ``experiments/`` config tree outside a Hydra application (tests, the quickstart, benchmarks)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO_ROOT", "EXPERIMENTS_DIR", "compose_experiment", "experiment_names"]

#: the repository root and its Hydra config root
REPO_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = REPO_ROOT / "experiments"


def experiment_names() -> list[str]:
    """Names of every experiment preset, ``experiments/experiment/*.yaml``."""
    return sorted(p.stem for p in (EXPERIMENTS_DIR / "experiment").glob("*.yaml"))


def compose_experiment(
    name: str | None, output_dir: str | Path, overrides: list[str] | None = None, config_name: str = "train"
):
    """Compose ``config_name`` (``train`` or ``evaluate``) with ``experiment=name`` (none when None), writing
    to ``output_dir``.

    Hydra's runtime values (``${hydra:...}``) do not exist outside ``@hydra.main``, so the paths that use
    them are set explicitly: the project root is the repository, the work dir the current directory.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fitdiff.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    paths = [
        f"paths.root_dir={REPO_ROOT}",
        f"paths.work_dir={Path.cwd()}",
        f"paths.output_dir={Path(output_dir).resolve()}",
    ]
    with initialize_config_dir(config_dir=str(EXPERIMENTS_DIR), version_base="1.3"):
        experiment = [f"experiment={name}"] if name is not None else []
        return compose(config_name, overrides=[*experiment, *paths, *(overrides or [])])
