"""Helpers shared by test modules (import as ``from helpers import ...``)."""

from __future__ import annotations

import builtins
import errno
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_script(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None):
    """Run ``python <args>`` from the repository root (stdin closed); return the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=full_env,
    )


def diffusion_overrides(name: str, dataset) -> list[str]:
    """``latent_dataset`` overrides for experiment ``name`` (the aux one also needs the recognizer)."""
    extra = [f"model.aux_losses.identity.recognizer_weights={dataset.recognizer}"] if "aux" in name else []
    return [*dataset.overrides, *extra]


def run_main(main, *args: str, capsys) -> tuple[int, str]:
    """Call a command's ``main(argv)`` in this process; return (exit code, captured stderr).

    Saves a Python start per call (seconds each on 2 cores) where the test is about the message, not
    the process: each command keeps one ``run_script`` test of its real entry point.
    """
    capsys.readouterr()
    try:
        rc = main(list(args))
    except SystemExit as exc:  # argparse errors
        rc = exc.code if isinstance(exc.code, int) else 1
    return int(rc or 0), capsys.readouterr().err


class Disk:
    """``free`` bytes for every file :mod:`fitdiff.io` opens for writing; a write past them fails (ENOSPC)."""

    def __init__(self, free: int) -> None:
        self.free = free

    def open(self, file, mode="r", **kwargs):
        handle = builtins.open(file, mode, **kwargs)
        return handle if "r" in mode else _DiskFile(handle, self)


class _DiskFile:
    def __init__(self, handle, disk: Disk) -> None:
        self.handle, self.disk = handle, disk

    def write(self, data) -> int:
        if len(data) > self.disk.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.disk.free -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def full_disk(monkeypatch, free: int) -> Disk:
    """From now on :mod:`fitdiff.io`'s atomic writers (shards, manifests, checkpoints) have ``free`` bytes
    left on the disk; set the returned ``Disk.free`` to give space back."""
    import fitdiff.io

    disk = Disk(free)
    monkeypatch.setattr(fitdiff.io, "open", disk.open, raising=False)
    return disk


def leftovers(folder: Path) -> list[str]:
    """Unfinished files under ``folder``: atomic writers' ``*.tmp`` and shard writers' ``*.partial``."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial")))


def train_detector(data: Path, epochs: int, batch_size: int = 8) -> Path:
    """``data/detector.safetensors`` trained by the real command (``data_prep/train_detector.py``, one
    thread, this process); the caller's torch thread count is restored."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("train_detector", REPO_ROOT / "data_prep" / "train_detector.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        code = module.main(["--data", str(data), "--epochs", str(epochs), "--batch-size", str(batch_size),
                            "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, f"train_detector.py --data {data} exited with {code}"
    return Path(data) / "detector.safetensors"
