"""``experiment=ae_branched`` is real: one CPU training step of the full-scale autoencoder (every layer as
configured: 187 M generator parameters, 16384-code codebooks, LPIPS) on tiny data, 32x32 maps instead
of 512x512. (The full-scale diffusion config's step: tests/test_ldm_module.py; costs: docs/SCALING.md.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fitdiff import tasks
from fitdiff.data import DatasetWriter, random_sample, random_spec

#: a one-device CPU step whatever the experiment's trainer, data loader and logger settings
ONE_CPU_STEP = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto", "trainer.max_steps=1",
                "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "data.batch_size=1",
                "data.num_workers=0", "data.pin_memory=false", "logger=csv", "extras.print_config=false"]


@pytest.mark.slow  # about 20 s and 6 GiB on one thread
@pytest.mark.timeout(300)
def test_ae_branched_trains_one_step_at_full_width(compose_train, tmp_path, one_torch_thread):
    spec = random_spec(image_resolution=32, uv_resolution=32, specular_channels=1)
    with DatasetWriter(tmp_path / "shards", spec, samples_per_shard=8) as writer:
        for i in range(6):
            writer.write("train" if i < 4 else "val", random_sample(f"s{i}_0", spec, i))
    cfg = compose_train("ae_branched", f"data.data_dir={tmp_path / 'shards'}", *ONE_CPU_STEP)
    metrics = tasks.train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=True)
    assert state["global_step"] == 1
    generator = sum(v.numel() for k, v in state["state_dict"].items()
                    if k.startswith("net.") and v.is_floating_point() and "usage" not in k)
    assert 187.0e6 < generator < 187.8e6  # 187.4 M (experiments/model/ae_branched.yaml)
    assert state["state_dict"]["net.quantizers.diffuse.codebook.weight"].shape == (16384, 4)
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and "val/rec_loss" in metrics
