"""The autoencoder under DDP (two CPU processes): identical weights and codebooks on every rank, and
evaluation splits with fewer shards than ranks."""

from __future__ import annotations

import pytest
import torch

from fitdiff.data import DatasetWriter, FaceDataModule, random_sample, random_spec
from helpers import REPO_ROOT, run_script

SPEC = random_spec(image_resolution=32, uv_resolution=16, specular_channels=1)


def _shards(folder, n_train: int = 16, n_val: int = 5, per_shard: int = 8) -> None:
    """``n_train`` training samples in shards of ``per_shard``; all val samples in one shard."""
    with DatasetWriter(folder, SPEC, samples_per_shard=per_shard) as writer:
        for i in range(n_train + n_val):
            writer.write("train" if i < n_train else "val", random_sample(f"s{i}_0", SPEC, i))


def _val_keys(folder, rank: int, world_size: int) -> list[str]:
    dm = FaceDataModule(str(folder), batch_size=2, fields=["diffuse"], rank=rank, world_size=world_size, seed=0)
    dm.setup("validate")
    return [key for batch in dm.val_dataloader() for key in batch.keys]


def test_one_val_shard_is_split_by_sample_over_two_ranks(tmp_path):
    _shards(tmp_path, n_val=5)
    first, second = _val_keys(tmp_path, 0, 2), _val_keys(tmp_path, 1, 2)
    assert len(first) == 3 and len(second) == 2  # both ranks get data
    assert sorted(first + second) == sorted(_val_keys(tmp_path, 0, 1))  # disjoint and complete
    assert len(set(first + second)) == 5


def test_fewer_val_samples_than_ranks_still_gives_every_rank_one(tmp_path):
    _shards(tmp_path, n_val=2)
    keys = [_val_keys(tmp_path, rank, 3) for rank in range(3)]
    assert [len(k) for k in keys] == [1, 1, 1]
    assert {k[0] for k in keys} == set(_val_keys(tmp_path, 0, 1))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_ranks_end_with_identical_weights_and_codebooks(tmp_path):
    _shards(tmp_path / "synthetic", n_val=4)  # one val shard for two ranks
    run, ranks = tmp_path / "run", tmp_path / "ranks"
    result = run_script(
        "train.py", "experiment=quickstart_ae", "trainer=ddp_cpu", "trainer.devices=2",
        "trainer.strategy=ddp_find_unused_parameters_true", "logger=csv", "extras.print_config=false",
        f"paths.data_dir={tmp_path}", f"hydra.run.dir={run}",
        "data.batch_size=2", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
        "model.loss.disc_start=0",  # the discriminator trains from the first step
        # a small codebook forgotten fast: dead codes are restarted at every step
        "model.net.quantizer.n_codes=64", "model.net.quantizer.usage_decay=0.5", "model.net.quantizer.dead_threshold=0.5",
        "+callbacks.rank_state._target_=ddp_probe.SaveRankState", f"+callbacks.rank_state.out_dir={ranks}",
        timeout=360, env={"PYTHONPATH": str(REPO_ROOT / "tests")},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "MEMBER: 2/2" in output
    first = torch.load(ranks / "rank0.pt", weights_only=True)
    second = torch.load(ranks / "rank1.pt", weights_only=True)
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, different
    assert any(k.startswith("loss.discriminators.") for k in first)
    restarted = [int(v) for k, v in first.items() if k.endswith("restarted")]
    assert len(restarted) == 3 and min(restarted) > 0  # every codebook restarted codes during training
    assert not torch.equal(first["net.quantizers.diffuse.codebook.weight"],
                           first["net.quantizers.normals.codebook.weight"])
    metrics = (run / "csv" / "metrics.csv").read_text()
    assert "val/rec_loss" in metrics and "train/d_loss" in metrics
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
