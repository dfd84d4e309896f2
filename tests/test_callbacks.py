"""LastCheckpoint (end of every run, intervals, Ctrl-C / SIGTERM, atomic) and the step progress bar."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fitdiff.callbacks import LastCheckpoint, StepProgressBar


def _trainer(tmp_path: Path, callbacks: list, **kwargs) -> L.Trainer:
    kwargs = {"max_epochs": None, "limit_train_batches": 4, "limit_val_batches": 0, "num_sanity_val_steps": 0,
              **kwargs}
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
                     enable_checkpointing=False, enable_model_summary=False, **kwargs)


def _step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


class _RaiseAt(L.Callback):
    """Raises ``exception`` at the end of training step ``step``."""

    def __init__(self, step: int, exception: BaseException) -> None:
        self.step, self.exception = step, exception

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise self.exception


@pytest.fixture
def restore_sigint():
    """Lightning ignores SIGINT after a KeyboardInterrupt; give the test process its handler back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def test_written_when_max_steps_ends_the_run_between_intervals(tmp_path):
    saved = []

    class Spy(LastCheckpoint):
        def save(self, trainer):
            saved.append(trainer.global_step)
            return super().save(trainer)

    callback = Spy(str(tmp_path / "ckpt"), every_n_train_steps=4)
    _trainer(tmp_path, [callback], max_steps=6, enable_progress_bar=False).fit(BoringModel())
    assert saved == [4, 6]  # the interval, then the end of fit
    assert _step(tmp_path / "ckpt" / "last.ckpt") == 6
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last-prev.ckpt", "last.ckpt"]  # no temp file


def test_every_epoch_by_default(tmp_path):
    callback = LastCheckpoint(str(tmp_path), filename="latest")
    _trainer(tmp_path, [callback], max_epochs=2, enable_progress_bar=False).fit(BoringModel())
    assert _step(tmp_path / "latest.ckpt") == 8 and callback.last_saved_step == 8


def test_ctrl_c_writes_the_state_reached(tmp_path, restore_sigint):
    callbacks = [LastCheckpoint(str(tmp_path), every_n_train_steps=100), _RaiseAt(3, KeyboardInterrupt())]
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown exits with status 1
        _trainer(tmp_path, callbacks, max_steps=50, enable_progress_bar=False).fit(BoringModel())
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 3 and state["optimizer_states"]


def test_sigterm_writes_the_state_reached(tmp_path):
    callbacks = [LastCheckpoint(str(tmp_path), every_n_train_steps=100), _RaiseAt(2, SIGTERMException())]
    with pytest.raises(SIGTERMException):
        _trainer(tmp_path, callbacks, max_steps=50, enable_progress_bar=False).fit(BoringModel())
    assert _step(tmp_path / "last.ckpt") == 2


def test_other_errors_leave_the_last_checkpoint_alone(tmp_path):
    callbacks = [LastCheckpoint(str(tmp_path), every_n_train_steps=2), _RaiseAt(3, RuntimeError("boom"))]
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, callbacks, max_steps=50, enable_progress_bar=False).fit(BoringModel())
    assert _step(tmp_path / "last.ckpt") == 2  # the interval write, not the failing state


@pytest.mark.parametrize("kwargs", [dict(every_n_train_steps=0), dict(filename="a/b")])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        LastCheckpoint(str(tmp_path), **kwargs)


class _BarProbe(L.Callback):
    """Records the training bar's (description, completed, total) after every batch."""

    def __init__(self, bar: StepProgressBar) -> None:
        self.bar, self.seen = bar, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        task = self.bar.progress.tasks[self.bar.train_progress_bar_id]
        self.seen.append((task.description.strip(), task.completed, task.total))


def test_progress_bar_counts_steps_out_of_max_steps(tmp_path):
    bar = StepProgressBar()
    probe = _BarProbe(bar)
    _trainer(tmp_path, [bar, probe], max_steps=10).fit(BoringModel())  # 4 batches per epoch, 3 epochs
    assert [s[1] for s in probe.seen] == list(range(1, 11))  # not reset at each epoch
    assert {s[2] for s in probe.seen} == {10} and all(s[0].endswith("Step") for s in probe.seen)


def test_progress_bar_keeps_epochs_when_bounded_by_epochs(tmp_path):
    bar = StepProgressBar()
    probe = _BarProbe(bar)
    _trainer(tmp_path, [bar, probe], max_epochs=2).fit(BoringModel())
    assert [s[1] for s in probe.seen] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert probe.seen[-1][0].endswith("Epoch 1/1") and probe.seen[-1][2] == 4
