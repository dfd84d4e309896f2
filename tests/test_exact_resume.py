"""Exact resume: a run killed mid-epoch and resumed ends bit-identical to an uninterrupted one (weights, EMA,
optimisers, schedules); the data position, ``ckpt_path=last``, unreadable checkpoints and the W&B run id."""

from __future__ import annotations

import logging
import os
import signal
import warnings
from pathlib import Path

import pytest
import torch
from conftest import TINY_UNET

from fitdiff import tasks
from fitdiff.callbacks import LastCheckpoint
from fitdiff.callbacks.checkpoint import AtomicCheckpointIO
from fitdiff.callbacks.resume import RESUME_KEY, Resolved, resolve_checkpoint
from fitdiff.config import ConfigError
from fitdiff.config.compose import compose_experiment
from fitdiff.data import LatentDataModule
from helpers import REPO_ROOT, run_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: one intra-op thread in every process: the same reduction order, so equal results bit for bit
ONE_THREAD = {"PYTHONPATH": str(REPO_ROOT / "tests"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_equal(a, b, where: str = "") -> None:
    """``a`` and ``b`` (nested dicts / lists of tensors and plain values) are equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        assert same, f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            _assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _assert_same_training_state(done: dict, resumed: dict) -> None:
    assert done["global_step"] == resumed["global_step"]
    assert any(k.startswith("ema.average.module.") for k in done["state_dict"])
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        _assert_equal(done[key], resumed[key], key)
    _assert_equal(done[RESUME_KEY]["rng"]["torch"], resumed[RESUME_KEY]["rng"]["torch"], "rng")


# ----------------------------------------------------------------------------------------- end to end

@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkilled_diffusion_run_resumes_bit_exactly(latent_dataset, tmp_path, caplog):
    """4 batches per epoch, checkpoints every 3 steps, validations at 3 and 6: the child is killed at step 5
    (pass 1), resumes from step 3 (mid pass 0, just before a validation) and ends at step 6. Bit-exact: the
    same operations in the same order on one thread."""
    common = [
        "train.py", "experiment=quickstart_ldm", *latent_dataset.overrides, *TINY_UNET, "logger=csv",
        "extras.print_config=false", "data.batch_size=4", "trainer.max_steps=6", "trainer.val_check_interval=3",
        "callbacks.last_checkpoint.every_n_train_steps=3", "callbacks.sample_grid.every_n_validations=0",
    ]
    # the uninterrupted run in this process (one thread too): a subprocess less
    reference = compose_experiment("quickstart_ldm", tmp_path / "reference" / "run", common[2:])
    tasks.train(reference)

    run = tmp_path / "interrupted" / "run"
    killed = run_script(*common, f"hydra.run.dir={run}", "+callbacks.kill._target_=resume_probe.KillAt",
                        "+callbacks.kill.step=5", env=ONE_THREAD)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert _load(run / "checkpoints" / "last.ckpt")["global_step"] == 3

    # resumed in this process (imports cost more than the run): the same run dir, so "last" is its last.ckpt
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        tasks.train(compose_experiment("quickstart_ldm", run, [*common[2:], "ckpt_path=last"]))
    assert not [w for w in caught if "not resumable" in str(w.message)]
    assert "other settings" not in caplog.text
    done = _load(tmp_path / "reference" / "run" / "checkpoints" / "last.ckpt")
    again = _load(run / "checkpoints" / "last.ckpt")
    assert again["global_step"] == 6
    _assert_same_training_state(done, again)
    assert _load(run / "checkpoints" / "last-prev.ckpt")["global_step"] == 6  # the in-loop write at step 6


def _faces(folder: Path) -> None:
    from fitdiff.data import DatasetWriter, random_sample, random_spec

    spec = random_spec(image_resolution=32, uv_resolution=16, specular_channels=1)
    with DatasetWriter(folder, spec, samples_per_shard=8) as writer:
        for i in range(20):
            writer.write("train" if i < 16 else "val", random_sample(f"s{i}_0", spec, i))


@pytest.mark.slow  # a whole crashed and resumed run (make test and CI run it)
def test_crashed_autoencoder_run_resumes_bit_exactly(tmp_path):
    """Manual optimisation, two optimisers and two schedules, the discriminator on from step 1: a run that
    crashes at step 3 resumes from its step-2 checkpoint (mid-epoch) and ends where an uninterrupted one does."""
    _faces(tmp_path / "synthetic")
    common = [f"paths.data_dir={tmp_path}", "logger=none", "extras.print_config=false", "data.batch_size=4",
              "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.num_sanity_val_steps=0",
              "callbacks.last_checkpoint.every_n_train_steps=2", "model.loss.disc_start=1", "model.net.ch=8"]
    tasks.train(compose_experiment("quickstart_ae", tmp_path / "reference", common))
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="stopped at step 3"):
        tasks.train(compose_experiment("quickstart_ae", run, [*common, "+callbacks.crash._target_=resume_probe.RaiseAt",
                                                              "+callbacks.crash.step=3"]))
    assert _load(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    tasks.train(compose_experiment("quickstart_ae", run, [*common, "ckpt_path=last"]))
    done, again = _load(tmp_path / "reference" / "checkpoints" / "last.ckpt"), _load(run / "checkpoints" / "last.ckpt")
    assert again["global_step"] == 4 and len(again["optimizer_states"]) == 2
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        _assert_equal(done[key], again[key], key)


# ----------------------------------------------------------------------------------------- data position

def _latent_dm(latent_dataset, workers: int) -> LatentDataModule:
    dm = LatentDataModule(str(latent_dataset.latents), batch_size=2, num_workers=workers, shuffle_buffer=8, seed=3,
                          pin_memory=False)
    dm.setup("fit")
    return dm


def _take(iterator, n: int) -> list:
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_position_yields_the_batches_an_uninterrupted_loader_yields(latent_dataset, workers):
    """8 batches per pass; stopped after 3 (an odd count: with 2 workers the next batch is worker 1's) and
    restored into a new DataModule, the rest of pass 0 and all of pass 1 are the same batches."""
    dm = _latent_dm(latent_dataset, workers)
    assert dm.steps_per_epoch == 8
    loader = dm.train_dataloader()
    uninterrupted = list(loader) + list(loader)
    assert len(uninterrupted) == 16
    assert [b.keys for b in uninterrupted[:8]] != [b.keys for b in uninterrupted[8:]]  # passes differ

    stopped = _latent_dm(latent_dataset, workers)
    it = iter(stopped.train_dataloader())
    _take(it, 3)
    state = stopped.state_dict()
    del it
    assert {k: state[k] for k in ("pass", "batches", "num_workers")} == {"pass": 0, "batches": 3, "num_workers": workers}

    restored = _latent_dm(latent_dataset, workers)
    restored.load_state_dict(state)
    loader = restored.train_dataloader()
    rest = list(loader)
    assert len(rest) == 5
    rest += list(loader)
    assert restored.state_dict()["pass"] == 2 and restored.state_dict()["batches"] == 0  # pass 1 complete
    for i, (a, b) in enumerate(zip(uninterrupted[3:], rest, strict=True)):
        assert a.keys == b.keys, i
        assert torch.equal(a.latent, b.latent) and torch.equal(a.identity, b.identity), i


def test_changed_data_settings_are_reported_on_restore(latent_dataset, caplog):
    state = {**_latent_dm(latent_dataset, 0).state_dict(), "batches": 3, "batch_size": 4}
    dm = _latent_dm(latent_dataset, 0)
    with caplog.at_level(logging.WARNING, logger="fitdiff.data.datamodule"):
        dm.load_state_dict(state)
    assert "batch_size 4 -> 2" in caplog.text
    assert (dm.position.next_pass, dm.position.skip) == (0, 3)


# ----------------------------------------------------------------------------------------- which checkpoint

def _checkpoint(path: Path, step: int, wandb_id: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(256)}, "global_step": step,
                RESUME_KEY: {"rng": {}, "wandb_run_id": wandb_id}}, path)
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_last_checkpoint_is_refused_and_the_previous_one_used(tmp_path, caplog):
    run = tmp_path / "runs" / "a"
    last = _checkpoint(run / "checkpoints" / "last.ckpt", 20)
    _checkpoint(run / "checkpoints" / "last-prev.ckpt", 10)
    _truncate(last)
    with caplog.at_level(logging.WARNING, logger="fitdiff.callbacks.resume"):
        resolved = resolve_checkpoint("last", run)
    assert resolved.path == run / "checkpoints" / "last-prev.ckpt" and resolved.global_step == 10
    assert str(last) in caplog.text and "previous checkpoint" in caplog.text
    # named explicitly: a one-line configuration error naming the file and the intact previous one
    with pytest.raises(ConfigError, match="last-prev.ckpt is intact") as error:
        resolve_checkpoint(str(last), run)
    assert str(last) in str(error.value) and "truncated" in str(error.value) and "\n" not in str(error.value)
    _truncate(run / "checkpoints" / "last-prev.ckpt")
    with pytest.raises(ConfigError, match="no readable checkpoint"):
        resolve_checkpoint("last", run)


def test_truncated_checkpoint_fails_the_run_before_any_work(compose_train, tmp_path):
    bad = _checkpoint(tmp_path / "elsewhere" / "model.ckpt", 5)
    _truncate(bad)
    with pytest.raises(ConfigError, match=f"{bad} is not a readable checkpoint"):
        tasks.train(compose_train("smoke", "logger=none", f"ckpt_path={bad}"))


def test_last_is_this_run_dirs_checkpoint_else_the_newest_run_beside_it(tmp_path):
    import os

    runs = tmp_path / "runs"
    old = _checkpoint(runs / "2026-01-01_10-00-00" / "checkpoints" / "last.ckpt", 1)
    new = _checkpoint(runs / "2026-01-01_09-00-00" / "checkpoints" / "last.ckpt", 2)
    os.utime(old, (1_000_000, 1_000_000))  # written last: newest by time, whatever the names say
    fresh = runs / "2026-01-02_08-00-00"
    assert resolve_checkpoint("last", fresh).path == new
    own = _checkpoint(fresh / "checkpoints" / "last.ckpt", 3)
    os.utime(own, (1_000, 1_000))
    assert resolve_checkpoint("last", fresh).path == own  # a reused run dir wins
    with pytest.raises(ConfigError, match="no last.ckpt"):
        resolve_checkpoint("last", tmp_path / "other" / "run")
    with pytest.raises(ConfigError, match="no last.ckpt"):
        resolve_checkpoint("last", runs / "x", search_siblings=False)
    assert resolve_checkpoint(None, fresh) is None


def test_model_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = _checkpoint(tmp_path / "best.ckpt", 1)
    before = path.read_bytes()

    def fail_midway(obj, f, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]


def test_last_checkpoint_keeps_the_one_it_replaces(tmp_path):
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    callback = LastCheckpoint(str(tmp_path / "ckpt"), every_n_train_steps=2)
    L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_steps=5, limit_val_batches=0, logger=False,
              callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(BoringModel())
    assert _load(tmp_path / "ckpt" / "last.ckpt")["global_step"] == 5
    assert _load(tmp_path / "ckpt" / "last-prev.ckpt")["global_step"] == 4


# ----------------------------------------------------------------------------------------- W&B run id

@pytest.fixture
def fresh_wandb():
    """Disabled-mode runs leave wandb's process-wide settings behind: reset them for the next test."""
    import wandb

    before = dict(os.environ)
    yield
    wandb.teardown()
    os.environ.clear()
    os.environ.update(before)


@pytest.mark.slow  # two training runs
def test_wandb_run_id_is_saved_and_the_resumed_logger_continues_that_run(compose_train, tmp_path, fresh_wandb):
    cfg = compose_train("smoke", "logger=wandb", "logger.wandb.mode=disabled", "trainer.max_steps=2")
    tasks.train(cfg)
    first = _load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")[RESUME_KEY]["wandb_run_id"]
    assert first
    # the kwargs a resumed run gives its W&B logger
    _, _, trainer = tasks._build(cfg, Resolved(Path("x.ckpt"), 2, first))
    init = trainer.loggers[0]._wandb_init
    assert (init["id"], init["resume"]) == (first, "allow")
    tasks._finish_loggers(trainer.loggers)  # no run left open for the next logger to reuse
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # every checkpoint write is atomic
    # end to end: a fresh run dir beside the first, ckpt_path=last, and the same id saved again
    resumed = compose_train("smoke", "logger=wandb", "logger.wandb.mode=disabled", "trainer.max_steps=4",
                            "ckpt_path=last")
    resumed.paths.output_dir = str(tmp_path / "second")
    tasks.train(resumed)
    again = _load(tmp_path / "second" / "checkpoints" / "last.ckpt")
    assert again["global_step"] == 4 and again[RESUME_KEY]["wandb_run_id"] == first
