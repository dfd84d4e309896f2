"""experiment=quickstart_ae end to end through fitdiff.tasks.train, on tiny random shards."""

from __future__ import annotations

import pytest
import torch

from fitdiff.autoencoder import load_autoencoder
from fitdiff.data import DatasetWriter, random_sample, random_spec
from helpers import run_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _shards(folder) -> None:
    spec = random_spec(image_resolution=32, uv_resolution=16, specular_channels=1)
    with DatasetWriter(folder, spec, samples_per_shard=8) as writer:
        for i in range(24):
            split = "train" if i < 16 else ("val" if i < 20 else "test")
            writer.write(split, random_sample(f"s{i}_0", spec, i))


@pytest.mark.slow
def test_quickstart_ae_trains_validates_tests_and_checkpoints(tmp_path, compose_train):
    from fitdiff.tasks import train

    _shards(tmp_path / "synthetic")
    cfg = compose_train(
        "quickstart_ae",
        f"paths.data_dir={tmp_path}",
        "logger=csv",
        "test=true",
        "data.batch_size=4",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        "model.loss.disc_start=1",
    )
    metrics = train(cfg)
    for stage in ("val", "test"):
        for key in ("diffuse_psnr", "specular_psnr", "normals_psnr", "normals_ssim", "normals_angular_error"):
            assert f"{stage}/{key}" in metrics, f"{stage}/{key}"
    assert metrics["train/d_loss"] > 0  # the discriminator ran after disc_start
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "last.ckpt").is_file()
    net = load_autoencoder(ckpts / "last.ckpt")
    assert net.encode({"diffuse": torch.rand(1, 3, 16, 16), "specular": torch.rand(1, 1, 16, 16),
                       "normals": torch.nn.functional.normalize(torch.randn(1, 3, 16, 16), dim=1)}).shape == (1, 9, 4, 4)
    # the export command the README documents: no runpy warning, weights equal the checkpoint's
    done = run_script("-m", "fitdiff.autoencoder", str(ckpts / "last.ckpt"), str(tmp_path / "ae.safetensors"))
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr and "3 branches" in done.stderr
    exported = load_autoencoder(tmp_path / "ae.safetensors")
    for (name, a), (_, b) in zip(net.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), name


def test_run_stopped_by_max_steps_before_validation_returns_the_metric(tmp_path, compose_train):
    from fitdiff import tasks

    _shards(tmp_path / "synthetic")
    cfg = compose_train("quickstart_ae", f"paths.data_dir={tmp_path}", "logger=csv", "data.batch_size=4",
                        "trainer.max_steps=2", "extras.print_config=false")
    value = tasks.run_cli(tasks.train, cfg)  # optimized_metric: val/rec_loss, from the final validation
    assert isinstance(value, float) and value > 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2


@pytest.mark.slow
def test_command_line_run_stopped_by_max_steps_before_validation_finishes_cleanly(tmp_path):
    _shards(tmp_path / "synthetic")
    run = tmp_path / "run"
    result = run_script(
        "train.py", "experiment=quickstart_ae", "logger=csv", "trainer.max_steps=2", "data.batch_size=4",
        f"paths.data_dir={tmp_path}", f"hydra.run.dir={run}", "extras.print_config=false",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "before its first validation" in output
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    assert "val/rec_loss" in (run / "csv" / "metrics.csv").read_text()  # the final validation was logged
