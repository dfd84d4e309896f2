"""``python evaluate.py table=conditioning`` end to end on a tiny synthetic dataset and tiny diffusion checkpoints."""

from __future__ import annotations

import csv
import logging

import pytest
import torch

from fitdiff.config.errors import ConfigError
from fitdiff.data import DatasetWriter, random_sample, random_spec
from helpers import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE_DIM, UV = 10, 16


def _synthetic(out) -> None:
    from fitdiff.synthetic.generate import SyntheticConfig, generate_dataset
    from fitdiff.synthetic.recognizer_training import RecognizerTrainingConfig

    generate_dataset(
        SyntheticConfig(
            out=out,
            subjects=8,
            images_per_subject=2,
            uv_res=UV,
            image_res=48,
            seed=0,
            workers=1,
            n_vertices=2000,
            n_components=SHAPE_DIM,
            recognizer_images=2,
            recognizer_shared_images=0,
            samples_per_shard=4,
            threads=1,
            progress=False,
            training=RecognizerTrainingConfig(epochs=2, batch_size=8),
            val_subjects=2,
            test_subjects=2,
        )
    )


def _checkpoint(folder, name: str, conditioning: str = "spade", ae_name: str = "ae.safetensors") -> str:
    """A LatentDiffusionModule checkpoint as Lightning writes one (state dict + plain hyperparameters),
    of the tiny autoencoder ``folder/ae_name`` (made when missing)."""
    from fitdiff.autoencoder.branched import BranchedVQAutoencoder
    from fitdiff.autoencoder.weights import export_safetensors, load_autoencoder
    from fitdiff.ldm.latent_stats import LatentStats
    from fitdiff.ldm.layout import LatentLayout
    from fitdiff.ldm.module import LatentDiffusionModule

    ae_path = folder / ae_name
    if ae_path.is_file():
        ae = load_autoencoder(ae_path)
    else:
        ae = BranchedVQAutoencoder(
            ch=8, ch_mult=(1, 2), num_res_blocks=1, embed_dim=2, quantizer={"n_codes": 16}
        )
        export_safetensors(ae, ae_path)
    layout = LatentLayout.from_autoencoder(ae, UV, SHAPE_DIM)
    stats = LatentStats(layout, [0.0] * layout.channels, [1.0] * layout.channels)
    net = dict(
        model_channels=16,
        channel_mult=[1],
        num_res_blocks=1,
        attention_resolutions=[],
        norm_groups=8,
        spade_map_res=2,
        spade_map_channels=8,
        num_heads=1,
        conditioning=conditioning,
    )
    sampler = {
        "_target_": "fitdiff.diffusion.Sampler",
        "num_inference_steps": 2,
        "scheduler": {"_target_": "fitdiff.diffusion.ddim_scheduler"},
    }
    module = LatentDiffusionModule(
        autoencoder=str(ae_path),
        layout=layout.to_dict(),
        stats=stats.to_dict(),
        net=net,
        sampler=sampler,
        guidance_scale=2.0,
    )
    path = folder / name
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "global_step": 7}, path
    )
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    return _checkpoint(folder, "spade.ckpt"), _checkpoint(folder, "none.ckpt", "none")


@pytest.fixture(scope="module")
def assets(tmp_path_factory, checkpoints):
    folder = tmp_path_factory.mktemp("cond")
    _synthetic(folder / "synthetic")
    return folder, *checkpoints


def _compose(tmp_path, *overrides: str, table: str = "conditioning"):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fitdiff.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    paths = [
        f"paths.root_dir={REPO_ROOT}",
        f"paths.work_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
        "extras.print_config=false",
    ]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "experiments"), version_base="1.3"):
        return compose("evaluate", overrides=[f"table={table}", *paths, *overrides])


def _records(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_conditioning_table_end_to_end(assets, tmp_path, capsys):
    from fitdiff import tasks

    folder, spade, none = assets
    cfg = _compose(
        tmp_path,
        f"ckpts=[{spade},{none}]",
        f"table.data_dir={folder / 'synthetic'}",
        "table.n_photos=3",
        "table.n_samples=2",
        "table.diversity_samples=5",
        "table.batch_size=2",
        "table.progress=false",
        "table.device=cpu",
        "seed=3",
    )
    metrics = tasks.evaluate(cfg)
    run = tmp_path / "run"
    for name in (
        "conditioning.csv",
        "conditioning.md",
        "diversity.csv",
        "diversity.md",
        "config_resolved.yaml",
    ):
        assert (run / name).is_file(), name
    records = _records(run / "conditioning.csv")
    sampled = [
        "unconditional",
        "conditional spade s=1",
        "conditional spade s=2",
        "conditional none s=1",
        "conditional none s=2",
    ]
    expected = ["mean face", "nearest training identity", "linear probe"]
    for method in sampled:
        expected += [method, f"{method} (mean of 2)"]
        if method == "unconditional" or method.endswith("s=1"):  # the conditional-mean-shape twin
            expected.append(f"{method}, shape temperature 0")
    assert [r["method"] for r in records] == expected
    metric_names = [
        "shape_rmse_mm",
        "shape_coef_rms",
        "diffuse_rmse",
        "diffuse_psnr",
        "specular_psnr",
        "normals_angle_deg",
        "identity_cos",
    ]
    assert list(records[0]) == [
        "method",
        *[f"{m}_{s}" for m in metric_names for s in ("mean", "std")],
        "n_photos",
        "n_samples",
    ]
    assert all(r["n_photos"] == "3" for r in records)
    assert [r["n_samples"] for r in records[:4]] == ["1", "1", "1", "2"]
    by = {r["method"]: r for r in records}
    # untrained nets ignore the condition (SPADE and every conditioning start at zero): with the same noise
    # per (photo, sample) the conditional rows equal the unconditional one
    for method in sampled[1:3]:
        for key in ("shape_rmse_mm_mean", "diffuse_psnr_mean", "identity_cos_mean"):
            assert float(by[method][key]) == pytest.approx(float(by["unconditional"][key]), rel=1e-5), (
                method,
                key,
            )
    # the mean of the samples is nearer the mean face than a single sample
    assert float(by["unconditional (mean of 2)"]["shape_coef_rms_mean"]) < float(
        by["unconditional"]["shape_coef_rms_mean"]
    )
    # shape temperature 0 changes the shape only: the same maps, another shape
    zero = by["unconditional, shape temperature 0"]
    assert float(zero["diffuse_psnr_mean"]) == pytest.approx(float(by["unconditional"]["diffuse_psnr_mean"]), abs=0.05)
    assert float(zero["shape_coef_rms_mean"]) != float(by["unconditional"]["shape_coef_rms_mean"])
    markdown = (run / "conditioning.md").read_text()
    assert "3 photos of 3 held-out subjects (val+test" in markdown and "seed 3" in markdown
    assert "DDIMScheduler, 2 steps, eta 0" in markdown and "step 7" in markdown
    assert "autoencoder sha256: " in markdown and "dataset manifest sha256: " in markdown
    assert "### Diversity of unconditional samples" in markdown and "### Acceptance checks" in markdown
    assert "| conditional none s=2 (mean of 2) |" in markdown
    assert markdown in capsys.readouterr().out  # printed at the end
    diversity = _records(run / "diversity.csv")
    assert [r["method"] for r in diversity] == ["unconditional samples", "held-out subjects"]
    assert diversity[0]["n"] == "5" and diversity[1]["n"] == "4" and diversity[0]["n_train"] == "4"
    assert metrics["conditioning/mean face/shape_rmse_mm_mean"] == pytest.approx(
        float(by["mean face"]["shape_rmse_mm_mean"])
    )
    assert "diversity/held-out subjects/pairwise_shape_mm_mean" in metrics


@pytest.mark.slow
def test_samples_do_not_depend_on_batch_size_or_photo_count(assets, tmp_path):
    from fitdiff.evaluation.conditioning import ConditioningTable

    folder, spade, _ = assets
    common = dict(
        ckpts=[spade],
        data_dir=str(folder / "synthetic"),
        n_samples=2,
        diversity_samples=0,
        progress=False,
        device="cpu",
        identity=False,
        seed=5,
    )
    a = ConditioningTable(n_photos=3, batch_size=3, **common).run(tmp_path / "a")
    b = ConditioningTable(n_photos=3, batch_size=1, **common).run(tmp_path / "b")
    for ra, rb in zip(a.table.records(), b.table.records()):
        for key, value in ra.items():
            if key != "method":
                assert float(value) == pytest.approx(float(rb[key]), rel=1e-5, abs=1e-9), (ra["method"], key)
    assert "identity_cos_mean" not in a.table.records()[0]
    assert a.diversity is None and not (tmp_path / "a" / "diversity.csv").exists()


def test_clear_errors(tmp_path, checkpoints, caplog):
    from fitdiff import tasks

    spade, _ = checkpoints
    cfg = _compose(tmp_path, f"ckpts=[{tmp_path / 'nope.ckpt'}]")
    with pytest.raises(ConfigError, match="no checkpoint file at .*nope.ckpt"):
        tasks.evaluate(cfg)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        tasks.run_cli(tasks.evaluate, cfg)
    assert exit_info.value.code == 2 and "nope.ckpt" in caplog.text

    other = _checkpoint(tmp_path, "other.ckpt", ae_name="other_ae.safetensors")
    cfg = _compose(tmp_path, f"ckpts=[{spade},{other}]")
    with pytest.raises(ConfigError, match="different autoencoders: .*spade.ckpt .* and .*other.ckpt"):
        tasks.evaluate(cfg)

    spec = random_spec(image_resolution=32, uv_resolution=UV, shape_dim=SHAPE_DIM)
    with DatasetWriter(tmp_path / "shards", spec, samples_per_shard=4) as writer:
        for i in range(4):
            writer.write("train" if i < 2 else "val", random_sample(f"q{i}_0", spec, i))
    cfg = _compose(tmp_path, f"ckpts=[{spade}]", f"table.data_dir={tmp_path / 'shards'}")
    with pytest.raises(
        ConfigError, match=r"has no 'test' samples \(manifest counts: train 2, val 2, test 0\)"
    ):
        tasks.evaluate(cfg)
    cfg = _compose(tmp_path, f"ckpts=[{spade}]", f"table.data_dir={tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="table.data_dir: .*missing/manifest.json does not exist"):
        tasks.evaluate(cfg)


def test_checkpoint_test_path_still_needs_ckpt_path(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fitdiff import tasks
    from fitdiff.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "experiments"), version_base="1.3"):
        cfg = compose(
            "evaluate",
            overrides=[
                "experiment=smoke",
                f"paths.root_dir={REPO_ROOT}",
                f"paths.work_dir={tmp_path}",
                f"paths.output_dir={tmp_path / 'run'}",
                "extras.print_config=false",
            ],
        )
    assert cfg.table is None and list(cfg.ckpts) == []
    with pytest.raises(ConfigError, match="evaluate needs a checkpoint: ckpt_path="):
        tasks.evaluate(cfg)


def test_unknown_scheduler_is_refused(checkpoints, tmp_path):
    from fitdiff.evaluation.conditioning import ConditioningTable

    with pytest.raises(ConfigError, match="table.scheduler='euler'"):
        ConditioningTable([checkpoints[0]], str(tmp_path), scheduler="euler")
