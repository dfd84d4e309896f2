"""The quickstart: the whole pipeline end to end, on whatever this machine has.

``make quickstart`` runs ``python -m fitdiff.quickstart``. It needs no data, no GPU and no network:
every stage works on the embedded synthetic dataset and reuses what an earlier run already produced,
so running it twice is cheap. Stages, in order:

1. ``assets``  — list the registered external files (pretrained weights, shape models) and their state;
   none is needed for the quickstart.
2. ``configs`` — compose and validate every experiment in ``experiments/experiment/``.
3. ``smoke``   — train and test the ``smoke`` experiment (the training stack: trainer, callbacks,
   default W&B logger offline, checkpointing) for a few steps.

Each later stage of the method (dataset, autoencoder, diffusion, guided reconstruction, evaluation)
adds itself here as it lands.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fitdiff.quickstart")

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = REPO_ROOT / "experiments"


@dataclass
class Stage:
    """One step of the quickstart: ``run(out_dir)`` does the work (and reuses earlier results)."""

    name: str
    description: str
    run: Callable[[Path], None]


def _stage_assets(out_dir: Path) -> None:
    from fitdiff.assets import print_status

    rows = print_status()
    missing = [r["name"] for r in rows if r["state"] != "ok"]
    if missing:
        log.info("not present (not needed by the quickstart): %s", ", ".join(missing))


def experiment_names() -> list[str]:
    """Names of every experiment preset, ``experiments/experiment/*.yaml``."""
    return sorted(p.stem for p in (EXPERIMENTS_DIR / "experiment").glob("*.yaml"))


def compose_experiment(name: str, output_dir: str | Path, overrides: list[str] | None = None, config_name: str = "train"):
    """Compose ``config_name`` with ``experiment=name`` outside a Hydra run, writing to ``output_dir``.

    Hydra's runtime values (``${hydra:...}``) do not exist outside ``@hydra.main``, so the paths that use
    them are set explicitly: the project root is the repository, the work dir the current directory.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fitdiff.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    paths = [
        f"paths.root_dir={REPO_ROOT}",
        f"paths.work_dir={Path.cwd()}",
        f"paths.output_dir={Path(output_dir).resolve()}",
    ]
    with initialize_config_dir(config_dir=str(EXPERIMENTS_DIR), version_base="1.3"):
        return compose(config_name, overrides=[f"experiment={name}", *paths, *(overrides or [])])


def _stage_configs(out_dir: Path) -> None:
    from fitdiff.config import validate_config

    names = experiment_names()
    for name in names:
        cfg = compose_experiment(name, out_dir / "configs" / name)
        validate_config(cfg)
        log.info("experiment=%s: composed and validated (%s, %s)", name, cfg.model._target_, cfg.data._target_)
    log.info("%d experiment configs are valid", len(names))


def _run_entry_point(script: str, args: list[str]) -> None:
    command = [sys.executable, str(REPO_ROOT / script), *args]
    log.info("$ %s", " ".join(command[1:]))
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def _stage_smoke(out_dir: Path) -> None:
    run_dir = out_dir / "smoke"
    _run_entry_point("train.py", ["experiment=smoke", "test=true", f"hydra.run.dir={run_dir}"])
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        raise RuntimeError(f"smoke training left no checkpoint in {run_dir / 'checkpoints'}")


STAGES: list[Stage] = [
    Stage("assets", "registered external files and their state", _stage_assets),
    Stage("configs", "compose and validate every experiment config", _stage_configs),
    Stage("smoke", "train + test the smoke experiment (training stack check)", _stage_smoke),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fitdiff.quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "quickstart", help="output folder")
    parser.add_argument("--only", nargs="*", choices=[s.name for s in STAGES], help="run only these stages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    selected = [s for s in STAGES if not args.only or s.name in args.only]
    timings = []
    for index, stage in enumerate(selected, 1):
        log.info("── stage %d/%d: %s — %s", index, len(selected), stage.name, stage.description)
        start = time.perf_counter()
        stage.run(args.out)
        timings.append((stage.name, time.perf_counter() - start))
    log.info("quickstart finished: %s", ", ".join(f"{n} {t:.1f}s" for n, t in timings))
    log.info("outputs in %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
