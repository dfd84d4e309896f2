"""build_shards: subject split, rejects, strict mode, resume without rewriting, determinism, the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fitdiff.data import (
    FaceDataModule,
    SampleError,
    load_manifest,
    random_sample,
    random_spec,
    read_shard,
    subject_of,
    write_sample_folder,
)
from fitdiff.data.build import PROGRESS_NAME, REJECTS_NAME, build_shards
from fitdiff.io import sha256_file
from helpers import run_script

SPEC = random_spec()


def _source(root, subjects=10, images=3, broken=()):
    """``subjects`` x ``images`` sample folders; ``broken`` = keys to damage (NaN normals / wrong image size)."""
    for s in range(subjects):
        for i in range(images):
            sample = random_sample(f"subj{s:02d}_{i}", SPEC, s * 100 + i)
            if sample.key in broken:
                if i % 2:
                    sample.normals[3, 4, 1] = np.nan
                else:
                    sample.image = sample.image[:, :20].copy()
            write_sample_folder(root, sample)
    return root


def _keys_by_split(out):
    manifest = load_manifest(out)
    return {split: [s["__key__"] for e in manifest.shards_for(split) for s in read_shard(str(out / e.name))]
            for split in ("train", "val", "test")}


def test_split_by_subject_and_rejects(tmp_path):
    src = _source(tmp_path / "src", broken={"subj01_1", "subj04_0"})
    report = build_shards(src, tmp_path / "out", samples_per_shard=4, val_fraction=0.2, test_fraction=0.2,
                          progress=False)
    keys = _keys_by_split(tmp_path / "out")
    subjects = {split: {subject_of(k) for k in ks} for split, ks in keys.items()}
    assert not subjects["train"] & subjects["val"] and not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]
    assert [len(subjects[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert sum(len(k) for k in keys.values()) == 28 == sum(report.manifest.counts.values())
    rejects = [json.loads(line) for line in (tmp_path / "out" / REJECTS_NAME).read_text().splitlines()]
    assert {(r["key"], r["field"]) for r in rejects} == {("subj01_1", "normals.npy"), ("subj04_0", "image.png")}
    assert all(r["reason"] for r in rejects) and len(report.rejects) == 2
    manifest = load_manifest(tmp_path / "out")
    manifest.check(tmp_path / "out", verify_checksums=True)
    assert manifest.statistics["split"] == "train" and manifest.statistics["samples"] == len(keys["train"])


def test_strict_mode_names_the_sample(tmp_path):
    src = _source(tmp_path / "src", subjects=3, broken={"subj01_1"})
    with pytest.raises(SampleError, match=r"sample 'subj01_1', field 'normals.npy'"):
        build_shards(src, tmp_path / "out", strict=True, progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_resume_keeps_complete_shards(tmp_path):
    src = _source(tmp_path / "src")
    out = tmp_path / "out"
    build_shards(src, out, samples_per_shard=4, seed=3, progress=False)
    before = {p.name: (p.stat().st_mtime_ns, sha256_file(p)) for p in out.glob("*.tar")}
    manifest_before = (out / "manifest.json").read_bytes()

    again = build_shards(src, out, samples_per_shard=4, seed=3, progress=False)
    assert again.written == [] and sorted(again.kept) == sorted(before)
    assert {p.name: (p.stat().st_mtime_ns, sha256_file(p)) for p in out.glob("*.tar")} == before
    assert (out / "manifest.json").read_bytes() == manifest_before

    # a damaged shard and a changed input are redone; nothing else is touched
    victim = sorted(before)[0]
    (out / victim).write_bytes(b"garbage")
    sample = random_sample("subj09_2", SPEC, 12345)
    write_sample_folder(src, sample)
    third = build_shards(src, out, samples_per_shard=4, seed=3, progress=False)
    changed = [k for k in third.written]
    owner = next(e.name for e in load_manifest(out).shards
                 if "subj09_2" in {s["__key__"] for s in read_shard(str(out / e.name))})
    assert sorted(changed) == sorted({victim, owner})
    for name, (mtime, digest) in before.items():
        if name not in changed:
            assert (out / name).stat().st_mtime_ns == mtime and sha256_file(out / name) == digest
    assert sha256_file(out / victim) == before[victim][1]  # rebuilt identically


def test_interrupted_build_resumes(tmp_path):
    src = _source(tmp_path / "src", subjects=6)
    out = tmp_path / "out"
    build_shards(src, out, samples_per_shard=2, progress=False)
    expected = {p.name: sha256_file(p) for p in out.glob("*.tar")}
    progress = json.loads((out / PROGRESS_NAME).read_text())
    # as if killed after a few shards: the later shards were never recorded nor renamed into place
    dropped = sorted(progress["chunks"])[3:]
    for name in dropped:
        del progress["chunks"][name]
        (out / name).unlink()
    (out / PROGRESS_NAME).write_text(json.dumps(progress))
    (out / "manifest.json").unlink()
    report = build_shards(src, out, samples_per_shard=2, progress=False)
    assert sorted(report.written) == dropped
    assert {p.name: sha256_file(p) for p in out.glob("*.tar")} == expected


def test_identical_input_gives_identical_shards(tmp_path):
    src = _source(tmp_path / "src", subjects=5)
    build_shards(src, tmp_path / "a", samples_per_shard=4, progress=False)
    build_shards(src, tmp_path / "b", samples_per_shard=4, progress=False)
    digests = [{p.name: sha256_file(p) for p in (tmp_path / d).iterdir() if not p.name.startswith(".")}
               for d in ("a", "b")]
    assert digests[0] == digests[1]


def test_changed_settings_rebuild_everything(tmp_path):
    src = _source(tmp_path / "src", subjects=5)
    out = tmp_path / "out"
    build_shards(src, out, samples_per_shard=4, progress=False)
    report = build_shards(src, out, samples_per_shard=3, progress=False)
    assert report.kept == []
    listed = {e.name for e in report.manifest.shards}
    assert {p.name for p in out.glob("*.tar")} == listed  # no shard of the old plan left behind


@pytest.mark.slow
def test_cli_builds_shards_the_datamodule_reads(tmp_path):
    src = _source(tmp_path / "src", subjects=6, images=2, broken={"subj02_1"})
    out = tmp_path / "out"
    result = run_script("data_prep/build_shards.py", "--src", str(src), "--out", str(out), "--samples-per-shard",
                        "3", "--val-fraction", "0.2", "--test-fraction", "0.2", "--seed", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "rejected 1" in result.stdout
    dm = FaceDataModule(str(out), batch_size=2, seed=0)
    dm.setup("fit")
    assert len(list(dm.train_dataloader())) == dm.steps_per_epoch
    strict = run_script("data_prep/build_shards.py", "--src", str(src), "--out", str(tmp_path / "strict"), "--strict",
                        "--no-progress")
    assert strict.returncode == 1 and "subj02_1" in strict.stderr and "normals.npy" in strict.stderr
    assert os.path.isdir(out)
