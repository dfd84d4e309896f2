"""``python evaluate.py table=reconstruction`` end to end on a tiny synthetic dataset and a tiny checkpoint."""

from __future__ import annotations

import csv

import pytest
from test_evaluation_conditioning import _checkpoint, _compose, _synthetic

from fitdiff.config.errors import ConfigError
from helpers import train_detector

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_STEPS = "'sampler.num_inference_steps=3'"
FAST = ["table.n_photos=3", "table.batch_size=2", "table.lpips=false", "table.progress=false",
        f"table.preset_overrides={{unguided:[{_STEPS}],guided_x0:[{_STEPS}],guided_eps:[{_STEPS}],"
        "optimize:['optimize.steps=3']}"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recon")
    _synthetic(folder / "synthetic")
    return folder, _checkpoint(folder, "spade.ckpt")


@pytest.mark.slow
def test_reconstruction_table_end_to_end(assets, tmp_path, capsys):
    from fitdiff import tasks

    folder, ckpt = assets
    assert (folder / "synthetic" / "eval_recognizer.safetensors").is_file()  # the build trains the judge
    cfg = _compose(tmp_path, f"ckpts=[{ckpt}]", f"paths.data_dir={folder}", *FAST, table="reconstruction")
    metrics = tasks.evaluate(cfg)
    rows = list(csv.DictReader(open(tmp_path / "run" / "reconstruction.csv")))
    assert [r["method"] for r in rows] == ["mean face", "unguided (conditional)", "guided eps", "guided x0",
                                           "optimisation fitter"]
    for key in ("identity_eval", "identity_guide", "photo_l1", "landmark_px", "shape_rmse_mm", "diffuse_psnr",
                "seconds"):
        assert f"{key}_mean" in rows[0] and f"{key}_std" in rows[0]
    assert all(int(r["n_photos"]) == 3 for r in rows)
    markdown = (tmp_path / "run" / "reconstruction.md").read_text()
    assert "eval_recognizer.safetensors (sha256 " in markdown and "rule x0 scale" in markdown
    assert "3 steps" in markdown and "never used to condition or guide" in markdown
    assert "reconstruction/guided x0/identity_eval_mean" in metrics
    assert "| guided eps |" in capsys.readouterr().out


def test_reconstruction_table_needs_one_checkpoint_and_the_judge(assets, tmp_path):
    from hydra.utils import instantiate

    folder, ckpt = assets
    cfg = _compose(tmp_path, f"ckpts=[{ckpt},{ckpt}]", f"paths.data_dir={folder}", table="reconstruction")
    with pytest.raises(Exception, match="one checkpoint"):
        instantiate(cfg.table, _convert_="all")
    cfg = _compose(tmp_path, f"ckpts=[{ckpt}]", f"paths.data_dir={folder}",
                   f"table.eval_recognizer_weights={tmp_path / 'missing.safetensors'}", table="reconstruction")
    table = instantiate(cfg.table, _convert_="all")
    with pytest.raises(ConfigError, match="missing.safetensors"):
        table.run(tmp_path / "out")


@pytest.mark.slow
def test_robustness_table_end_to_end_with_detected_landmarks(assets, tmp_path):
    from fitdiff import tasks

    folder, ckpt = assets
    train_detector(folder / "synthetic", epochs=5)
    fast = ["table.n_photos=2", "table.batch_size=2", "table.lpips=false", "table.progress=false",
            f"table.preset_overrides={{guided_eps:[{_STEPS},'polish.steps=1'],optimize:['optimize.steps=2']}}"]
    cfg = _compose(tmp_path, f"ckpts=[{ckpt}]", f"paths.data_dir={folder}", *fast, "table.landmarks=detected",
                   table="robustness")
    tasks.evaluate(cfg)
    rows = list(csv.DictReader(open(tmp_path / "run" / "robustness.csv")))
    conditions = ["clean", "occluder 20%", "side light", "noise 0.1", "JPEG q20"]
    assert [r["method"] for r in rows] == [f"{m} / {c}" for m in ("guided eps", "optimisation fitter")
                                           for c in conditions]
    assert all(0 <= int(r["faces_found"]) <= int(r["n_photos"]) == 2 for r in rows)
    assert "face_found_mean" not in rows[0]  # a count, not a metric
    markdown = (tmp_path / "run" / "robustness.md").read_text()
    assert "### Degradation" in markdown and "guided eps degrades less than optimisation fitter" in markdown
    assert "with landmarks detected on it" in markdown and "5 detected on the photo each fit sees" in markdown
    assert "detector.safetensors (sha256 " in markdown


def test_detected_landmarks_come_from_the_photo_the_fit_sees(assets, tmp_path):
    import torch

    from fitdiff.evaluation.corruptions import occluder
    from fitdiff.evaluation.faces import load_faces
    from fitdiff.evaluation.landmark_source import landmark_source

    folder, _ = assets
    data = folder / "synthetic"
    with pytest.raises(ConfigError, match=r"no face detector at .*missing\.safetensors.*train_detector\.py"):
        landmark_source("detected", data, tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match="not one of dataset, detected"):
        landmark_source("guessed", data)
    not_a_detector = data / "recognizer.safetensors"
    with pytest.raises(ConfigError, match="not a synthetic face detector"):
        landmark_source("detected", data, not_a_detector)

    train_detector(data, epochs=2)
    photos = load_faces(data, ["val"], with_photos=True)
    clean = photos.image[:2]
    given = photos.landmarks[:2]
    dataset = landmark_source("dataset", data)
    points, found = dataset(clean, given)
    assert points is given and found is None and dataset.key == "dataset"

    detected = landmark_source("detected", data)
    points, found = detected(clean, given)
    assert points.shape == (2, 5, 2) and found.shape == (2,) and set(found.tolist()) <= {0.0, 1.0}
    prob, expected = detected.detector.predict(clean)
    assert torch.equal(points, expected) and torch.equal(found, (prob > detected.detector.score_threshold).float())
    occluded, _ = detected(occluder(clean, given, [0, 1], seed=0), given)
    assert not torch.equal(occluded, points)  # the detector reads the corrupted photo
    assert detected.key.startswith("detected:") and detected.key != dataset.key


def test_corruptions_change_the_photo_where_they_should():
    import torch

    from fitdiff.evaluation.corruptions import gaussian_noise, jpeg, occluder

    photos = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    landmarks = torch.tensor([[16.0, 16.0], [48.0, 16.0], [32.0, 48.0]]).expand(2, 3, 2)
    occluded = occluder(photos, landmarks, [0, 1], seed=0)
    changed = (occluded != photos).any(1)
    area = changed.float().sum((1, 2))
    assert torch.all((area > 0.15 * 32 * 32) & (area < 0.25 * 32 * 32))  # 20% of the 32 x 32 landmark box
    rows, cols = changed[0].nonzero().unbind(1)
    assert rows.min() >= 16 and rows.max() < 48 and cols.min() >= 16 and cols.max() < 48
    assert torch.equal(occluder(photos, landmarks, [0, 1], seed=0), occluded)  # deterministic
    assert not torch.equal(occluder(photos, landmarks, [0, 1], seed=1), occluded)
    noisy = gaussian_noise(photos, [0, 1], seed=0)
    assert 0.05 < float((noisy - photos).std()) < 0.1 and torch.equal(noisy, gaussian_noise(photos, [0, 1], seed=0))
    compressed = jpeg(photos)
    assert compressed.shape == photos.shape and 0.01 < float((compressed - photos).abs().mean()) < 0.3
