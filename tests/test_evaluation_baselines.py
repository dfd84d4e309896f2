"""Baselines, per-photo metrics, diversity distances and held-out data of the tables, on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fitdiff.config.errors import ConfigError
from fitdiff.data import DatasetWriter, random_sample, random_spec
from fitdiff.evaluation.baselines import LinearProbe, mean_face, nearest_identity
from fitdiff.evaluation.checkpoints import inspect_checkpoints
from fitdiff.evaluation.diversity import diversity_row, nearest_rms, pairwise_rms
from fitdiff.evaluation.face_metrics import FaceMetrics, FacePrediction, mean_prediction
from fitdiff.evaluation.faces import FaceSet, load_faces, select_photos
from fitdiff.evaluation.sampling import derive_seed, sample_generators
from fitdiff.face.template import make_procedural_shape_model

K, R = 6, 8


@pytest.fixture(scope="module")
def model():
    return make_procedural_shape_model(300, K, 0)


def _faces(n: int, seed: int, subjects: int | None = None) -> FaceSet:
    g = torch.Generator().manual_seed(seed)
    subjects = subjects or n
    return FaceSet(
        keys=[f"s{seed}x{i % subjects}_{i // subjects}" for i in range(n)],
        subjects=[f"s{seed}x{i % subjects}" for i in range(n)],
        splits=["train"] * n,
        shape=torch.randn(n, K, generator=g),
        identity=F.normalize(torch.randn(n, 512, generator=g), dim=1),
        diffuse=torch.rand(n, 3, R, R, generator=g),
        specular=torch.rand(n, 1, R, R, generator=g),
        normals=F.normalize(
            torch.randn(n, 3, R, R, generator=g) + torch.tensor([0, 0, 2.0]).view(1, 3, 1, 1), dim=1
        ),
    )


def _truth(faces: FaceSet) -> FacePrediction:
    return FacePrediction(faces.shape, faces.diffuse, faces.specular, faces.normals)


def test_perfect_and_offset_predictions(model):
    faces = _faces(3, 1)
    metrics = FaceMetrics(model)
    assert "identity_cos" not in metrics.names
    exact = metrics(_truth(faces), faces)
    assert torch.all(exact["shape_rmse_mm"] < 1e-4) and torch.all(exact["shape_coef_rms"] == 0)
    assert torch.all(torch.isinf(exact["diffuse_psnr"])) and torch.all(exact["normals_angle_deg"] < 0.05)
    faces.diffuse = faces.diffuse.clamp(0.2, 0.8)
    shifted = FacePrediction(faces.shape + 1.0, faces.diffuse + 0.1, faces.specular, faces.normals)
    out = metrics(shifted, faces)
    assert torch.allclose(out["diffuse_rmse"], torch.full((3,), 0.1, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(out["diffuse_psnr"], torch.full((3,), 20.0, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(out["shape_coef_rms"], torch.ones(3, dtype=torch.float64))
    expected_mm = float(model.std.pow(2).sum().div(model.n_vertices).sqrt())  # orthonormal components
    assert torch.allclose(out["shape_rmse_mm"], torch.full((3,), expected_mm, dtype=torch.float64), rtol=1e-4)


def test_normals_error_ignores_invalid_texels(model):
    faces = _faces(1, 2)
    pred = _truth(faces)
    pred.normals = pred.normals.clone()
    pred.normals[:, :, :, : R // 2] = -pred.normals[:, :, :, : R // 2]  # 180 deg on half the texels
    faces.normals = faces.normals.clone()
    faces.normals[:, :, :, : R // 2] = 0  # ... which are not valid in the ground truth
    assert float(FaceMetrics(model)(pred, faces)["normals_angle_deg"][0]) < 0.05


def test_mean_face_error_is_the_rms_about_the_mean_mesh(model):
    train, held = _faces(10, 3), _faces(4, 4)
    pred = mean_face(train, len(held))
    assert torch.equal(pred.shape, torch.zeros(4, K))
    assert torch.allclose(pred.diffuse[0], train.diffuse.mean(0), atol=1e-6)
    assert torch.allclose(pred.normals.norm(dim=1), torch.ones(4, R, R), atol=1e-5)
    got = FaceMetrics(model)(pred, held)["shape_rmse_mm"]
    gt = model(held.shape)
    expected = (gt - model.mean).pow(2).sum(-1).mean(-1).sqrt()
    assert torch.allclose(got, expected.double(), rtol=1e-5)


def test_nearest_identity_is_exact_for_a_training_embedding(model):
    train, held = _faces(12, 5, subjects=6), _faces(3, 6)
    held.identity = train.identity[[7, 2, 11]].clone()
    held.shape, held.diffuse = train.shape[[7, 2, 11]].clone(), train.diffuse[[7, 2, 11]].clone()
    held.specular, held.normals = train.specular[[7, 2, 11]].clone(), train.normals[[7, 2, 11]].clone()
    pred, index = nearest_identity(train, held.identity)
    assert index.tolist() == [7, 2, 11]
    out = FaceMetrics(model)(pred, held)
    assert torch.all(out["shape_rmse_mm"] < 1e-4) and torch.all(torch.isinf(out["diffuse_psnr"]))


def test_linear_probe_recovers_a_linear_map(model):
    train = _faces(40, 7, subjects=10)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, K, generator=g) * 0.5
    train.shape = train.identity @ a
    train.diffuse = (0.5 + 0.3 * (train.identity @ torch.randn(512, 3 * R * R, generator=g) / 4)).clamp(0, 1)
    train.diffuse = train.diffuse.reshape(-1, 3, R, R)
    probe = LinearProbe(train, model.std, alphas=[1e-9], folds=3)
    pred = probe.predict(train.identity[:5])
    assert torch.allclose(pred.shape, train.shape[:5], atol=1e-4)
    assert torch.allclose(pred.diffuse, train.diffuse[:5], atol=1e-4)
    assert torch.allclose(pred.normals.norm(dim=1), torch.ones(5, R, R), atol=1e-5)
    assert set(probe.alphas) == {"shape", "diffuse", "specular", "normals"}
    cv = LinearProbe(train, model.std, folds=3)  # the default alpha grid, chosen by CV over subjects
    assert all(a > 0 for a in cv.alphas.values())


def test_mean_prediction_averages_each_group():
    faces = _faces(4, 8)
    mean = mean_prediction(_truth(faces), 2)
    assert torch.allclose(mean.shape, faces.shape.reshape(2, 2, K).mean(1))
    assert torch.allclose(mean.normals.norm(dim=1), torch.ones(2, R, R), atol=1e-5)


def test_pairwise_and_nearest_distances():
    base = torch.randn(1, 50, 3, dtype=torch.float64)
    meshes = torch.cat([base, base + torch.tensor([3.0, 4.0, 0.0]), base + torch.tensor([0.0, 0.0, 1.0])])
    pairs = pairwise_rms(meshes, 50)
    assert torch.allclose(pairs, torch.tensor([5.0, 1.0, math.sqrt(9 + 16 + 1)], dtype=torch.float64))
    assert torch.allclose(
        nearest_rms(meshes[1:], meshes[:1], 50), torch.tensor([5.0, 1.0], dtype=torch.float64)
    )
    maps = torch.zeros(2, 3, 4, 4)
    maps[1] += 0.25
    row = diversity_row("x", meshes, torch.cat([maps, maps[:1]]), meshes[:1], maps[:1])
    assert np.allclose(row.values["pairwise_diffuse_rmse"], [0.25, 0.0, 0.25])
    assert np.allclose(row.values["nearest_train_shape_mm"], [0.0, 5.0, 1.0])
    assert row.counts == {"n": 3, "n_train": 1}


def test_generators_are_per_photo_and_sample():
    assert derive_seed(0, 0, 3, 1) == derive_seed(0, 0, 3, 1)
    seeds = {derive_seed(s, 0, i, j) for s in (0, 1) for i in range(4) for j in range(3)}
    assert len(seeds) == 24 and derive_seed(0, 1, 0, 0) != derive_seed(0, 0, 0, 0)
    a = [torch.randn(2, generator=g) for g in sample_generators(0, [5, 9], 2)]
    b = [torch.randn(2, generator=g) for g in sample_generators(0, [9], 2)]
    assert torch.equal(a[2], b[0]) and torch.equal(a[3], b[1]) and not torch.equal(a[0], a[1])


def _shards(folder, splits: dict[str, int]) -> None:
    spec = random_spec(image_resolution=32, uv_resolution=8, shape_dim=K)
    i = 0
    with DatasetWriter(folder, spec, samples_per_shard=4) as writer:
        for split, n in splits.items():
            for _ in range(n):
                writer.write(split, random_sample(f"p{split}{i // 2}_{i % 2}", spec, i))
                i += 1


def test_load_faces_and_photo_selection(tmp_path):
    _shards(tmp_path, {"train": 6, "val": 6})
    held = load_faces(tmp_path, ["val"])
    assert len(held) == 6 and held.image.shape == (6, 3, 32, 32) and len(held.meta) == 6
    assert held.splits == ["val"] * 6 and held.subjects[0] == held.subjects[1]
    assert select_photos(held, 4) == [0, 2, 4, 1]  # first photo of every subject first
    assert select_photos(held, None) == [0, 2, 4, 1, 3, 5]
    train = load_faces(tmp_path, ["train"], with_photos=False)
    assert train.image is None and train.diffuse.shape == (6, 3, 8, 8)
    assert len(held.first_per_subject()) == 3
    with pytest.raises(
        ConfigError, match=r"has no 'test' samples \(manifest counts: train 6, val 6, test 0\)"
    ):
        load_faces(tmp_path, ["val", "test"])


def test_checkpoint_checks(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint file at .*missing.ckpt"):
        inspect_checkpoints([tmp_path / "missing.ckpt"])
    hp = {"layout": {"shape_dim": K}, "net": {"conditioning": "spade"}, "guidance_scale": 2.0}
    torch.save(
        {"hyper_parameters": {**hp, "autoencoder_sha256": "aaa"}, "state_dict": {}}, tmp_path / "a.ckpt"
    )
    torch.save(
        {
            "hyper_parameters": {**hp, "autoencoder_sha256": "bbb", "net": {"conditioning": "none"}},
            "state_dict": {},
        },
        tmp_path / "b.ckpt",
    )
    torch.save(
        {
            "hyper_parameters": {**hp, "autoencoder_sha256": "aaa", "aux_losses": {"shape": {}}},
            "state_dict": {},
        },
        tmp_path / "c.ckpt",
    )
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(
        ConfigError, match=r"different autoencoders: .*a.ckpt \(autoencoder sha256 aaa\) and .*b.ckpt"
    ):
        inspect_checkpoints([tmp_path / "a.ckpt", tmp_path / "b.ckpt"])
    with pytest.raises(ConfigError, match="not a diffusion"):
        inspect_checkpoints([tmp_path / "other.ckpt"])
    infos = inspect_checkpoints([tmp_path / "a.ckpt", tmp_path / "c.ckpt", tmp_path / "a.ckpt"])
    assert [i.label for i in infos] == ["spade", "spade+aux", "spade (2)"]
    assert infos[0].guidance_scale == 2.0 and infos[0].shape_dim == K and len(infos[0].sha256) == 64
