"""``evaluate.py table=all`` and the reflectance, shape and ablation tables on a tiny synthetic dataset:
files, layout, numbers recomputed independently from the predictions, seeds, multirun folders."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
from test_evaluation_conditioning import _checkpoint, _compose, _synthetic

from fitdiff.config.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_STEPS = "'sampler.num_inference_steps=2'"
_OVERRIDES = {"unguided": f"[{_STEPS}]", "guided_eps": f"[{_STEPS},'polish.steps=1']",
              "guided_x0": f"[{_STEPS},'polish.steps=1']", "optimize": "['optimize.steps=2']"}


def _presets(*names: str) -> str:
    """``preset_overrides`` that make the fits of ``names`` (default: all) a few steps long."""
    return "{" + ",".join(f"{n}:{o}" for n, o in _OVERRIDES.items() if not names or n in names) + "}"


PRESETS = _presets()
FAST = ["table.lpips=false", "table.progress=false", "table.n_photos=3", "table.batch_size=2", "table.images=2"]
_USED = {"shape": ("unguided", "guided_eps", "optimize"), "reflectance": ("unguided", "guided_eps", "optimize"),
         "ablation": ("unguided", "guided_eps"), "robustness": ("guided_eps", "optimize")}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tables")
    _synthetic(folder / "synthetic")
    return folder, _checkpoint(folder, "spade.ckpt"), _checkpoint(folder, "none.ckpt", "none")


def _records(path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["method"]: row for row in csv.DictReader(handle)}


def _table(assets, tmp_path, name: str, *overrides: str):
    from hydra.utils import instantiate

    folder, spade, _ = assets
    cfg = _compose(tmp_path, f"ckpts=[{spade}]", f"paths.data_dir={folder}", *FAST,
                   f"table.preset_overrides={_presets(*_USED[name])}", *overrides, table=name)
    return instantiate(cfg.table, _convert_="all")


def _check_summary(row: dict[str, str], key: str, values: np.ndarray) -> None:
    """The CSV's mean and sample std of ``key`` are those of the per-photo ``values``."""
    assert float(row[f"{key}_mean"]) == pytest.approx(float(np.mean(values)), rel=1e-5, abs=1e-9), key
    assert float(row[f"{key}_std"]) == pytest.approx(float(np.std(values, ddof=1)), rel=1e-4, abs=1e-7), key


@pytest.mark.slow
def test_all_tables_end_to_end(assets, tmp_path, capsys):
    from fitdiff import tasks

    folder, spade, none = assets
    cfg = _compose(tmp_path, f"ckpts=[{spade},{none}]", f"paths.data_dir={folder}", "table.n_photos=3",
                   f"table.preset_overrides={PRESETS}", "table.tables.conditioning.n_samples=2",
                   "table.tables.conditioning.diversity_samples=4", "table.tables.robustness.n_photos=2",
                   "table.tables.robustness.corruptions=[occluder,noise]",
                   *(f"table.tables.{t}.{k}" for t in ("reconstruction", "robustness", "reflectance", "shape",
                                                       "ablation") for k in ("lpips=false", "progress=false",
                                                                             "batch_size=2")),
                   "table.tables.conditioning.progress=false", table="all")
    metrics = tasks.evaluate(cfg)
    run = tmp_path / "run"
    names = ["conditioning", "reconstruction", "robustness", "reflectance", "shape", "ablation"]
    for name in names:
        for suffix in ("csv", "md", "png"):
            assert (run / f"{name}.{suffix}").is_file(), f"{name}.{suffix}"
    index = json.loads((run / "tables.json").read_text())
    assert [t["name"] for t in index["tables"]] == names
    assert index["images"] and all((run / i["path"]).is_file() for i in index["images"])
    report = (run / "report.html").read_text()
    for title in ("Conditioning", "Reconstruction", "Robustness", "Reflectance", "Shape", "Ablation"):
        assert title in report
    assert "http://" not in report and "https://" not in report
    # the conditioning table compares both checkpoints, the fitting tables fit with the first
    assert "conditional none s=1" in _records(run / "conditioning.csv")
    ablation = _records(run / "ablation.csv")
    assert list(ablation) == [f"{v} / {arm} / s={s}" for v in ("spade", "none") for s in (1, 2)
                              for arm in ("unguided", "guided")]
    # shared fits: the ablation's first checkpoint at the presets' scale is the reconstruction table's fit
    recon = _records(run / "reconstruction.csv")
    robust = _records(run / "robustness.csv")
    for key in ("shape_rmse_mm", "identity_eval", "diffuse_psnr"):
        assert ablation["spade / guided / s=1"][f"{key}_mean"] == recon["guided eps"][f"{key}_mean"]
        assert ablation["spade / unguided / s=1"][f"{key}_mean"] == recon["unguided (conditional)"][f"{key}_mean"]
    # the robustness table's 2 photos are the first batch of the 3: its clean fits are the same
    assert int(robust["guided eps / clean"]["n_photos"]) == 2
    shape = _records(run / "shape.csv")
    assert list(shape) == ["mean face", "nearest training identity", "unconditional", "unguided (conditional)",
                           "guided eps", "optimisation fitter"]
    # the same fits (the shape table measures in float64, the reconstruction table in float32)
    assert float(shape["guided eps"]["shape_mm_mean"]) == pytest.approx(float(recon["guided eps"]["shape_rmse_mm_mean"]),
                                                                         rel=1e-6)
    # the conditioning table's baselines are the reflectance and shape tables' (recomputed below from the
    # predictions): the same faces, the same numbers
    conditioning, maps = _records(run / "conditioning.csv"), _records(run / "reflectance.csv")
    for method in ("mean face", "nearest training identity"):
        assert float(conditioning[method]["shape_rmse_mm_mean"]) == pytest.approx(float(shape[method]["shape_mm_mean"]),
                                                                                  rel=1e-5)
        for key in ("diffuse_psnr_mean", "specular_psnr_mean", "normals_angle_deg_mean"):
            assert float(conditioning[method][key]) == pytest.approx(float(maps[method][key]), rel=1e-5), (method, key)
    assert "reflectance/mean face/diffuse_psnr_mean" in metrics and "ablation/none / guided / s=2/seconds_mean" in metrics
    assert "| spade / guided / s=2 |" in capsys.readouterr().out


@pytest.mark.slow
def test_shape_and_reflectance_numbers_recomputed_from_the_predictions(assets, tmp_path):
    from fitdiff.evaluation.prediction_rows import method_predictions

    shape_table = _table(assets, tmp_path, "shape")
    setup = shape_table.setup()
    shape_table.run(tmp_path / "out", setup=setup)
    reflectance = _table(assets, tmp_path, "reflectance")
    reflectance.run(tmp_path / "out", setup=setup)  # the same fits, from the shared cache
    predictions = method_predictions(setup, shape_table.data_dir, shape_table._rows(), shape_table.seed,
                                     shape_table.batch_size)
    shape_rows = _records(tmp_path / "out" / "shape.csv")
    maps_rows = _records(tmp_path / "out" / "reflectance.csv")
    assert list(shape_rows) == list(predictions) == list(maps_rows)
    model = setup.scene.model
    basis = model.components.double().numpy()  # (K, V, 3) unit directions; std in mm
    mean, std = model.mean.double().numpy(), model.std.double().numpy()
    truth_v = mean + np.einsum("nk,kvc->nvc", setup.photos.shape.double().numpy() * std, basis)
    regions = setup.cache["regions"]
    for method, pred in predictions.items():
        pred_v = mean + np.einsum("nk,kvc->nvc", pred.shape.double().numpy() * std, basis)
        raw = np.sqrt(((pred_v - truth_v) ** 2).sum(-1).mean(-1))
        _check_summary(shape_rows[method], "shape_mm", raw)
        # Procrustes can only lower the error; regions are subsets of the aligned mesh
        assert float(shape_rows[method]["procrustes_mm_mean"]) <= float(shape_rows[method]["shape_mm_mean"]) + 1e-6
        assert all(int(m.sum()) > 0 for m in regions.values())
        for name in ("diffuse", "specular"):
            p = pred.__dict__[name].clamp(0, 1).double().numpy()
            t = setup.photos.__dict__[name].double().numpy()
            if p.shape[1] != t.shape[1]:
                p = np.broadcast_to(p.mean(1, keepdims=True), t.shape)
            mse = ((p - t) ** 2).mean((1, 2, 3))
            _check_summary(maps_rows[method], f"{name}_psnr", 10 * np.log10(1.0 / mse))
            _check_summary(maps_rows[method], f"{name}_mae", np.abs(p - t).mean((1, 2, 3)))
        pn = pred.normals.double().numpy()
        pn = pn / np.linalg.norm(pn, axis=1, keepdims=True)
        tn = setup.photos.normals.double().numpy()
        valid = np.linalg.norm(tn, axis=1) > 0.5
        cos = (pn * tn).sum(1) / np.linalg.norm(tn, axis=1).clip(1e-12)
        angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        per_photo = (angle * valid).sum((1, 2)) / valid.sum((1, 2))
        assert float(maps_rows[method]["normals_angle_deg_mean"]) == pytest.approx(per_photo.mean(), abs=0.05)
    # the baselines: mean face has zero coefficients, the nearest identity is a training face
    assert torch.count_nonzero(predictions["mean face"].shape) == 0
    # the robustness table: its rows recomputed from the fits of the corrupted photos (same setup, cached)
    from fitdiff.evaluation.fit_runs import fit_photos

    robustness = _table(assets, tmp_path, "robustness", "table.corruptions=[occluder]")
    robustness.run(tmp_path / "out", setup=setup)
    rows = _records(tmp_path / "out" / "robustness.csv")
    for label, cfg in robustness._rows():
        for condition, name in (("clean", "clean"), ("occluder", "occluder 20%")):
            outcome = fit_photos(setup, cfg, robustness.seed, robustness.batch_size,
                                 corrupt=robustness._corrupt(condition, setup.scene), condition=condition)
            pred_v = mean + np.einsum("nk,kvc->nvc", outcome.prediction.shape.double().numpy() * std, basis)
            _check_summary(rows[f"{label} / {name}"], "shape_rmse_mm",
                           np.sqrt(((pred_v - truth_v) ** 2).sum(-1).mean(-1)))


@pytest.mark.slow
def test_reconstruction_numbers_recomputed_and_the_seed_changes_samples_not_layout(assets, tmp_path):
    from fitdiff.evaluation.fit_runs import fit_photos

    runs = {}
    for seed in (1, 1, 2):
        table = _table(assets, tmp_path, "shape", f"table.seed={seed}", "table.images=0")
        out = tmp_path / f"seed{seed}_{len(runs)}"
        setup = table.setup()
        table.run(out, setup=setup)
        runs[len(runs)] = (seed, _records(out / "shape.csv"), (out / "shape.csv").read_text().splitlines()[0])
        if len(runs) == 1:  # recompute the reconstruction columns of the guided fits from their predictions
            cfg = dict(table._rows())["guided eps"]
            outcome = fit_photos(setup, cfg, table.seed, table.batch_size)
            pred = outcome.prediction.diffuse.clamp(0, 1).double().numpy()
            mse = ((pred - setup.photos.diffuse.double().numpy()) ** 2).mean((1, 2, 3))
            assert np.allclose(outcome.metrics["diffuse_psnr"], 10 * np.log10(1 / mse), rtol=1e-5)
            assert outcome.metrics["seconds"].shape == (3,) and (outcome.metrics["seconds"] > 0).all()
    (_, first, header1), (_, again, header2), (_, other, header3) = runs.values()
    assert header1 == header2 == header3  # same layout
    assert list(first) == list(other)
    for method in first:
        same_seed = first[method]["shape_mm_mean"] == again[method]["shape_mm_mean"]
        assert same_seed, f"{method}: not reproducible for a seed"
    sampled = ["unconditional", "unguided (conditional)", "guided eps"]
    assert all(first[m]["shape_mm_mean"] != other[m]["shape_mm_mean"] for m in sampled)
    for fixed in ("mean face", "nearest training identity"):  # no noise in the baselines
        assert first[fixed]["shape_mm_mean"] == other[fixed]["shape_mm_mean"]


@pytest.mark.slow
def test_ablation_table_collects_a_multirun_folder(assets, tmp_path):
    from fitdiff.evaluation.ablation import multirun_checkpoints

    folder, spade, none = assets
    runs = tmp_path / "multirun"
    for job, (ckpt, experiment) in enumerate(((spade, "ablation_spade"), (none, "ablation_none"))):
        (runs / str(job) / "checkpoints").mkdir(parents=True)
        (runs / str(job) / ".hydra").mkdir()
        shutil.copy(ckpt, runs / str(job) / "checkpoints" / "last.ckpt")
        (runs / str(job) / ".hydra" / "overrides.yaml").write_text(f"- experiment={experiment}\n")
    found = multirun_checkpoints(runs)
    assert [job for _, job in found] == ["experiment=ablation_spade", "experiment=ablation_none"]
    table = _table(assets, tmp_path, "ablation", f"table.runs={runs}", "table.n_photos=2", "table.guidance_scales=[1]")
    assert [i.label for i in table.infos] == ["spade", "none"]
    result = table.run(tmp_path / "out")
    assert [r["method"] for r in result.table.records()] == ["spade / unguided / s=1", "spade / guided / s=1",
                                                             "none / unguided / s=1", "none / guided / s=1"]
    markdown = (tmp_path / "out" / "ablation.md").read_text()
    assert "job: experiment=ablation_none" in markdown and "sha256" in markdown
    with pytest.raises(ConfigError, match="no checkpoints/last.ckpt"):
        multirun_checkpoints(tmp_path / "out")


def test_face_regions_are_disjoint_and_hold_their_landmarks():
    from fitdiff.face import make_procedural_shape_model
    from fitdiff.face.regions import REGIONS, face_regions

    model = make_procedural_shape_model(n_vertices=600, n_components=6, seed=0)
    masks = face_regions(model)
    assert list(masks) == list(REGIONS)
    stacked = torch.stack(list(masks.values()))
    assert int(stacked.sum(0).max()) == 1  # disjoint
    lmk = model.landmarks_68
    assert bool(masks["nose"][lmk[30]]) and bool(masks["mouth"][lmk[62]]) and bool(masks["eyes"][lmk[36]])
    assert int(stacked.sum()) < model.n_vertices  # forehead, chin and sides are in no region
    with pytest.raises(ValueError, match="no vertex"):
        face_regions(model, radius=1e-6)


def test_plot_and_index_of_a_table(tmp_path):
    from PIL import Image

    from fitdiff.evaluation.plots import plot_table
    from fitdiff.evaluation.publish import update_index
    from fitdiff.evaluation.reconstruction import ReconstructionResult
    from fitdiff.evaluation.table import Column, ResultTable, TableRow

    table = ResultTable([TableRow("a", {"x": [1.0, 2.0]}), TableRow("b", {"x": [math.inf, 3.0]})], [Column("x")])
    path = plot_table(table, [("x", False), ("missing", True)], tmp_path / "t.png", title="T")
    assert Image.open(path).size[0] > 100
    with pytest.raises(ValueError, match="none of"):
        plot_table(table, [("missing", True)], tmp_path / "u.png")
    table.write(tmp_path, "t")
    part = ReconstructionResult(table, "", [], name="t", title="T", images=[("images/a.png", "grid a")])
    update_index(tmp_path, [part])
    update_index(tmp_path, [part])  # built again: replaced, not repeated
    index = json.loads((tmp_path / "tables.json").read_text())
    assert index["tables"] == [{"name": "t", "title": "T", "csv": "t.csv", "markdown": "t.md", "plot": "t.png"}]
    assert index["images"] == [{"path": "images/a.png", "caption": "grid a"}]
