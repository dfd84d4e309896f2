"""The diffusion stage under DDP (two CPU processes, plain ``ddp``: every parameter gets a gradient every
step): identical raw and EMA weights on both ranks."""

from __future__ import annotations

import pytest
import torch

from helpers import REPO_ROOT, run_script


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_ranks_end_with_identical_denoiser_and_ema(latent_dataset, tmp_path):
    run, ranks = tmp_path / "run", tmp_path / "ranks"
    result = run_script(
        "train.py", "experiment=quickstart_ldm", "trainer=ddp_cpu", "trainer.devices=2", "logger=csv",
        "extras.print_config=false", *latent_dataset.overrides, f"hydra.run.dir={run}",
        "model.net.model_channels=32", "model.net.channel_mult=[1,2]", "model.net.attention_resolutions=[2]",
        "model.net.spade_map_channels=8", "model.p_uncond=0.5",
        "data.batch_size=2", "trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.log_every_n_steps=1",
        "callbacks.sample_grid.every_n_validations=0",
        "+callbacks.rank_state._target_=ddp_probe.SaveRankState", f"+callbacks.rank_state.out_dir={ranks}",
        timeout=360, env={"PYTHONPATH": str(REPO_ROOT / "tests")},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "MEMBER: 2/2" in output
    first = torch.load(ranks / "rank0.pt", weights_only=True)
    second = torch.load(ranks / "rank1.pt", weights_only=True)
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, different
    assert any(k.startswith("ema.average.module.") for k in first)
    assert int(first["ema.average.n_averaged"]) == 3
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 3
