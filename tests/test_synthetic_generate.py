"""The synthetic dataset build end to end on a tiny configuration: shards, manifest, splits, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fitdiff.data import load_manifest, validate_sample
from fitdiff.data.embed import IdentityEmbedder
from fitdiff.data.sample import decode_sample, subject_of
from fitdiff.data.stream import read_shard
from fitdiff.face.identity import build_identity_encoder
from fitdiff.io import sha256_file
from fitdiff.synthetic.generate import (
    RECOGNIZER_FILE,
    REPORT_FILE,
    SyntheticConfig,
    generate_dataset,
    load_shape_model,
    recognizer_id,
)
from fitdiff.synthetic.recognizer_training import RecognizerTrainingConfig
from helpers import run_script


def _config(out, **overrides) -> SyntheticConfig:
    values = dict(
        out=out,
        subjects=6,
        images_per_subject=2,
        uv_res=16,
        image_res=48,
        seed=0,
        workers=1,
        n_vertices=2000,
        n_components=10,
        recognizer_images=2,
        recognizer_shared_images=0,
        samples_per_shard=4,
        threads=1,
        progress=False,
        training=RecognizerTrainingConfig(epochs=2, batch_size=8),
    )
    values.update(overrides)
    return SyntheticConfig(**values)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "a"
    report = generate_dataset(_config(out))
    return out, report


def _samples(out):
    manifest = load_manifest(out)
    for entry in manifest.shards:
        for raw in read_shard(str(out / entry.name), expected=entry.samples):
            yield entry.split, decode_sample(raw, shard=entry.name)


def test_manifest_counts_and_files(built):
    out, report = built
    manifest = load_manifest(out)
    manifest.check(out, verify_checksums=True)
    assert manifest.counts == {"train": 8, "val": 2, "test": 2} == report.manifest.counts
    assert [e.samples for e in manifest.shards_for("train")] == [4, 4]
    sha = sha256_file(out / RECOGNIZER_FILE)
    assert manifest.recognizer == recognizer_id(sha) == report.recognizer
    assert manifest.shape_model == "procedural-observable-v1-1998v-10k-s0"
    assert manifest.spec.image_resolution == 48 and manifest.spec.uv_resolution == 16
    record = json.loads((out / REPORT_FILE).read_text())
    assert record["recognizer"]["sha256"] == sha and record["counts"] == manifest.counts
    assert len(record["recognizer"]["loss_per_epoch"]) == 2


def test_samples_validate_and_splits_are_by_subject(built):
    out, _ = built
    manifest = load_manifest(out)
    record = json.loads((out / REPORT_FILE).read_text())
    split_of: dict[str, str] = {}
    keys = set()
    for split, sample in _samples(out):
        validate_sample(sample, manifest.spec)
        assert sample.key not in keys
        keys.add(sample.key)
        subject = subject_of(sample.key)
        assert split_of.setdefault(subject, split) == split  # a subject never spans two splits
        assert subject in record["subjects"][split]
        assert sample.meta["source"] == "synthetic" and sample.meta["recognizer"] == manifest.recognizer
    assert len(split_of) == 6 and sorted(set(split_of.values())) == ["test", "train", "val"]


def test_samples_hold_consistent_ground_truth(built):
    out, _ = built
    model = load_shape_model(None, 2000, 10, 0)
    by_subject: dict[str, list] = {}
    for _, sample in _samples(out):
        by_subject.setdefault(sample.subject, []).append(sample)
        assert np.isfinite(sample.normals.astype(np.float32)).all()
        assert np.allclose(np.linalg.norm(sample.normals.astype(np.float32), axis=-1), 1.0, atol=2e-3)
        # framing keeps the face in the photo; a long chin may reach a pixel or two past the edge
        assert sample.landmarks.min() > -0.05 * 48 and sample.landmarks.max() < 1.05 * 48
        # landmarks = projection of the landmark vertices of the stored shape through the stored camera
        vertices = model(torch.from_numpy(sample.shape)[None])[0].double().numpy()[model.landmarks_68.numpy()]
        cam = sample.meta["camera"]
        view = vertices @ np.asarray(cam["R"]).T + np.asarray(cam["t"])
        px = cam["cx"] + cam["fx"] * view[:, 0] / -view[:, 2]
        py = cam["cy"] - cam["fy"] * view[:, 1] / -view[:, 2]
        assert np.allclose(np.stack([px, py], 1), sample.landmarks, atol=1e-2)
    for samples in by_subject.values():
        first, second = samples
        # same subject: same ground truth, different photo
        assert np.array_equal(first.diffuse, second.diffuse) and np.array_equal(first.shape, second.shape)
        assert not np.array_equal(first.image, second.image)
    subjects = list(by_subject.values())
    assert not np.array_equal(subjects[0][0].diffuse, subjects[1][0].diffuse)


def test_stored_embeddings_come_from_the_saved_recognizer(built):
    out, _ = built
    manifest = load_manifest(out)
    encoder = build_identity_encoder("synthetic_recognizer", weights=str(out / RECOGNIZER_FILE))
    embedder = IdentityEmbedder(encoder, manifest.recognizer)
    for entry in manifest.shards[:2]:
        raws = list(read_shard(str(out / entry.name)))
        fresh = embedder(raws)
        for raw, embedding in zip(raws, fresh):
            stored = decode_sample(raw, fields=("identity",)).identity
            assert np.allclose(stored, embedding, atol=1e-5)


def test_same_seed_same_bytes_other_seed_other_bytes(built, tmp_path):
    out, report = built
    again = generate_dataset(_config(tmp_path / "b"))
    assert [e.sha256 for e in again.manifest.shards] == [e.sha256 for e in report.manifest.shards]
    assert sha256_file(tmp_path / "b" / RECOGNIZER_FILE) == sha256_file(out / RECOGNIZER_FILE)
    assert (tmp_path / "b" / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    other = generate_dataset(_config(tmp_path / "c", seed=1))
    assert not {e.sha256 for e in other.manifest.shards} & {e.sha256 for e in report.manifest.shards}


def test_existing_dataset_needs_overwrite(built):
    out, _ = built
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_dataset(_config(out))


@pytest.mark.slow
def test_cli_scripts_build_and_verify(tmp_path):
    out = tmp_path / "cli"
    args = [
        "data_prep/make_synthetic.py",
        "--out",
        str(out),
        "--subjects",
        "6",
        "--images-per-subject",
        "2",
        "--uv-res",
        "16",
        "--image-res",
        "48",
        "--workers",
        "1",
        "--threads",
        "1",
        "--n-vertices",
        "2000",
        "--n-components",
        "10",
        "--recognizer-images",
        "2",
        "--recognizer-shared-images",
        "2",
        "--recognizer-epochs",
        "1",
        "--no-progress",
    ]
    result = run_script(*args)
    assert result.returncode == 0, result.stderr
    assert "train 8, val 2, test 2" in result.stdout
    verify = run_script("data_prep/verify_identity.py", "--data", str(out))
    assert verify.returncode == 0, verify.stderr
    assert "ROC-AUC" in verify.stdout and "4 images of 2 subjects" in verify.stdout


@pytest.mark.slow
def test_worker_pool_gives_the_same_bytes(built, tmp_path):
    _, report = built
    pooled = generate_dataset(_config(tmp_path / "pool", workers=2))
    assert [e.sha256 for e in pooled.manifest.shards] == [e.sha256 for e in report.manifest.shards]


@pytest.mark.slow
def test_random_arcface_recognizer_option(tmp_path):
    report = generate_dataset(_config(tmp_path / "arc", subjects=4, recognizer="arcface_random"))
    assert report.recognizer == "arcface_ir_se50-random-s0"
    assert not (tmp_path / "arc" / RECOGNIZER_FILE).exists()
    for _split, sample in _samples(tmp_path / "arc"):
        assert abs(np.linalg.norm(sample.identity) - 1) < 1e-3


def test_the_build_trains_an_evaluation_recognizer_of_another_architecture(built):
    from fitdiff.face.synthetic_recognizer import load_recognizer_weights
    from fitdiff.synthetic.config import EVAL_RECOGNIZER_FILE

    out, _ = built
    judge = load_recognizer_weights(out / EVAL_RECOGNIZER_FILE)
    guide = load_recognizer_weights(out / RECOGNIZER_FILE)
    assert judge.arch == "plain" and guide.arch == "residual"
    record = json.loads((out / "synthetic.json").read_text())
    assert record["eval_recognizer"]["sha256"] == sha256_file(out / EVAL_RECOGNIZER_FILE)
    assert record["eval_recognizer"]["training"]["seed"] != record["recognizer"]["training"]["seed"]
    assert record["eval_recognizer"]["train_subjects"] == record["recognizer"]["train_subjects"]
    # it judges, never embeds: the stored embeddings are the guiding recognizer's
    assert load_manifest(out).recognizer == recognizer_id(sha256_file(out / RECOGNIZER_FILE))
    # the default architecture is not written into records, so earlier builds' records stay the same
    assert "arch" not in record["recognizer"]["training"] and record["eval_recognizer"]["training"]["arch"] == "plain"
