"""How the quickstart runs the project's entry points: in this process where it can, else as a child.

Each Python start costs about 10 s of imports on 2 cores (torch, Lightning, diffusers), so the stages call
``main(argv)`` of the command-line tools and :func:`fitdiff.tasks.train` / ``evaluate`` on configs composed
here, and log the equivalent command line. Only the dataset build, whose worker processes need a clean
``spawn`` start anyway, runs as a child process.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

from fitdiff.config.compose import REPO_ROOT, compose_experiment

__all__ = ["run_child", "run_main", "run_train"]

log = logging.getLogger("fitdiff.quickstart")


def run_child(script: str, args: list[str]) -> None:
    """Run ``python script args`` (``script`` relative to the repository root) in a child process."""
    command = [sys.executable, str(REPO_ROOT / script), *args]
    log.info("$ %s", " ".join(command[1:]))
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def run_main(script: str, args: list[str]) -> None:
    """Call ``main(args) -> int`` of a tool in this process: ``script="-m"`` with the module first in
    ``args`` (a package's ``__main__`` module when the package has no ``main``), or a script path relative
    to the repository root. A non-zero return raises :class:`subprocess.CalledProcessError`."""
    log.info("$ %s", " ".join([script, *args] if script == "-m" else [script, *args]))
    if script == "-m":
        module = importlib.import_module(args[0])
        if not hasattr(module, "main"):
            module = importlib.import_module(f"{args[0]}.__main__")
        args = args[1:]
    else:
        spec = importlib.util.spec_from_file_location(f"quickstart_{Path(script).stem}", REPO_ROOT / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    code = module.main(list(args))
    if code:
        raise subprocess.CalledProcessError(code, [script, *args])


def run_train(experiment: str, run_dir: Path, overrides: list[str]) -> None:
    """``python train.py experiment=... paths.output_dir=run_dir overrides...``, in this process."""
    from fitdiff.tasks import train

    log.info("$ train.py experiment=%s %s hydra.run.dir=%s", experiment, " ".join(overrides), run_dir)
    train(compose_experiment(experiment, run_dir, overrides))
