"""The conditioning-ablation sweep: the W&B sweep file names real experiments and Hydra overrides, and a
Hydra multirun of two variants is collected by ``evaluate.py table=ablation table.runs=DIR``."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from test_evaluation_conditioning import _checkpoint, _synthetic

from helpers import REPO_ROOT, run_script

SWEEP = REPO_ROOT / "experiments" / "sweeps" / "conditioning_ablation.yaml"


def test_the_wandb_sweep_file_runs_train_py_with_hydra_overrides(compose_train):
    sweep = yaml.safe_load(SWEEP.read_text())
    assert sweep["program"] == "train.py" and sweep["method"] == "grid"
    assert "${args_no_hyphens}" in sweep["command"]  # key=value, as Hydra reads them
    values = sweep["parameters"]["experiment"]["values"]
    assert {"ablation_spade", "ablation_none"} <= set(values)
    conditionings = set()
    for experiment in values:
        cfg = compose_train(experiment, "logger=wandb")
        conditionings.add(cfg.model.net.conditioning)
        assert cfg.model.net.conditioning in experiment
    assert len(conditionings) == len(values)  # one run per variant
    assert sweep["metric"]["name"] == compose_train(values[0]).optimized_metric


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_multirun_is_collected_into_the_ablation_table(tmp_path):
    from fitdiff.ldm.encode import encode_latents

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _synthetic(tmp_path / "synthetic")
        _checkpoint(tmp_path, "unused.ckpt")  # writes the tiny autoencoder ae.safetensors
        encode_latents(tmp_path / "ae.safetensors", tmp_path / "synthetic", tmp_path / "synthetic_latents",
                       device="cpu", progress=False, batch_size=8)
    finally:
        torch.set_num_threads(threads)
    sweep = tmp_path / "multirun"
    result = run_script(
        # the variants as a sweep over the conditioning of one experiment (a sweep over experiment=... cannot
        # take model overrides: Hydra checks them against the config without the swept experiment)
        "train.py", "-m", "experiment=quickstart_ldm", "model.net.conditioning=spade,none", "logger=csv",
        "extras.print_config=false",
        f"paths.data_dir={tmp_path}", f"model.autoencoder={tmp_path / 'ae.safetensors'}", f"hydra.sweep.dir={sweep}",
        "model.net.model_channels=16", "model.net.channel_mult=[1]", "model.net.attention_resolutions=[]",
        "model.net.norm_groups=8", "model.net.head_channels=16", "model.net.spade_map_channels=8",
        "data.batch_size=2", "trainer.max_steps=2", "trainer.val_check_interval=2",
        "callbacks.sample_grid.every_n_validations=0", timeout=400,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert sorted(p.parent.parent.name for p in sweep.glob("*/checkpoints/last.ckpt")) == ["0", "1"]
    # the collection in this process (evaluate.py's own entry point has its tests): composed as evaluate.py does
    from fitdiff.config.compose import compose_experiment
    from fitdiff.tasks import evaluate

    steps = "['sampler.num_inference_steps=2','polish.steps=0']"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        evaluate(compose_experiment(None, tmp_path / "eval", [
            "table=ablation", f"table.runs={sweep}", f"paths.data_dir={tmp_path}", "table.n_photos=2",
            "table.lpips=false", "table.progress=false", "table.guidance_scales=[1]", "report=false",
            f"table.preset_overrides={{unguided:{steps},guided_eps:{steps}}}", "extras.print_config=false",
            "logger=none"], config_name="evaluate"))
    finally:
        torch.set_num_threads(threads)
    rows = list(csv.DictReader(open(tmp_path / "eval" / "ablation.csv")))
    assert [r["method"] for r in rows] == ["spade / unguided / s=1", "spade / guided / s=1",
                                           "none / unguided / s=1", "none / guided / s=1"]
    markdown = (tmp_path / "eval" / "ablation.md").read_text()
    assert "model.net.conditioning=spade" in markdown and "model.net.conditioning=none" in markdown
