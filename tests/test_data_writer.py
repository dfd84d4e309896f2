"""Shard writing (deterministic, atomic), manifest contents and the manifest checks readers run."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from fitdiff.data import (
    MANIFEST_NAME,
    DatasetWriter,
    ManifestError,
    SampleError,
    ShardWriter,
    load_manifest,
    random_sample,
    random_spec,
)
from fitdiff.data.writer import PARTIAL_SUFFIX
from fitdiff.io import sha256_file

SPEC = random_spec()


def _samples(n: int, seed: int = 0):
    return [random_sample(f"s{i // 2}_{i % 2}", SPEC, seed * 1000 + i) for i in range(n)]


def _write(out, samples, per_shard=3, val_from=None):
    with DatasetWriter(out, SPEC, samples_per_shard=per_shard) as writer:
        for i, sample in enumerate(samples):
            writer.write("val" if val_from is not None and i >= val_from else "train", sample)
    return writer.manifest


def _digests(folder):
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def test_identical_input_gives_identical_files(tmp_path):
    _write(tmp_path / "a", _samples(7), val_from=5)
    _write(tmp_path / "b", _samples(7), val_from=5)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert set(a) == {"train-00000.tar", "train-00001.tar", "val-00000.tar", MANIFEST_NAME}
    assert a == b
    _write(tmp_path / "c", _samples(7, seed=1), val_from=5)
    assert _digests(tmp_path / "c")["train-00000.tar"] != a["train-00000.tar"]


def test_tar_headers_are_fixed(tmp_path):
    _write(tmp_path, _samples(2))
    with tarfile.open(tmp_path / "train-00000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == ["s0_0.diffuse.png", "s0_0.id.npy", "s0_0.image.png"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "fitdiff", 0o444)}


def test_manifest_counts_checksums_and_statistics(tmp_path):
    samples = _samples(7)
    manifest = _write(tmp_path, samples, val_from=5)
    assert manifest.counts == {"train": 5, "val": 2, "test": 0}
    loaded = load_manifest(tmp_path)
    assert loaded.spec == SPEC and loaded.recognizer == SPEC.recognizer and loaded.shape_model == SPEC.shape_model
    for entry in loaded.shards:
        assert sha256_file(tmp_path / entry.name) == entry.sha256
        assert (tmp_path / entry.name).stat().st_size == entry.bytes
    stats = loaded.statistics
    assert stats["split"] == "train" and stats["samples"] == 5
    train = samples[:5]
    diffuse = np.stack([s.diffuse for s in train]).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(stats["diffuse"]["mean"], diffuse.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats["diffuse"]["std"], diffuse.std(0), rtol=1e-9)
    normals = np.stack([s.normals for s in train]).astype(np.float64).reshape(-1, 3)
    np.testing.assert_allclose(stats["normals"]["std"], normals.std(0), rtol=1e-9)
    shape = np.stack([s.shape for s in train]).astype(np.float64)
    np.testing.assert_allclose(stats["shape"]["mean"], shape.mean(0), rtol=1e-9)
    assert len(stats["specular"]["mean"]) == 1


def test_failure_inside_a_shard_leaves_no_partial_or_final_file(tmp_path):
    samples = _samples(5)
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "train", samples_per_shard=3) as writer:
            for i, sample in enumerate(samples):
                if i == 4:
                    raise RuntimeError("killed")
                writer.write(sample)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-00000.tar"]  # the complete first shard only


def test_partial_file_is_used_while_writing(tmp_path):
    writer = ShardWriter(tmp_path, "test", samples_per_shard=10, start_index=7)
    writer.write(_samples(1)[0])
    assert (tmp_path / ("test-00007.tar" + PARTIAL_SUFFIX)).exists()
    assert not (tmp_path / "test-00007.tar").exists()
    infos = writer.close()
    assert [i.name for i in infos] == ["test-00007.tar"] and infos[0].keys == ["s0_0"]
    assert not (tmp_path / ("test-00007.tar" + PARTIAL_SUFFIX)).exists()


def test_writer_validates_and_rejects_duplicates(tmp_path):
    bad = _samples(1)[0]
    bad.normals[0, 0, 0] = np.nan
    with pytest.raises(SampleError, match=r"shard train-00000.tar, sample 's0_0', field 'normals.npy'"):
        with DatasetWriter(tmp_path, SPEC) as writer:
            writer.write("train", bad)
    assert not (tmp_path / MANIFEST_NAME).exists()
    with pytest.raises(SampleError, match="duplicate key"):
        with DatasetWriter(tmp_path / "dup", SPEC) as writer:
            sample = _samples(1)[0]
            writer.write("train", sample)
            writer.write("val", sample)


def test_existing_dataset_needs_overwrite_and_stale_shards_go(tmp_path):
    _write(tmp_path, _samples(7))
    with pytest.raises(FileExistsError):
        DatasetWriter(tmp_path, SPEC)
    with DatasetWriter(tmp_path, SPEC, samples_per_shard=10, overwrite=True) as writer:
        for sample in _samples(4):
            writer.write("train", sample)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["train-00000.tar"]


def _edit_manifest(folder, edit):
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path)
    _write(tmp_path, _samples(7))
    load_manifest(tmp_path).check(tmp_path, verify_checksums=True)

    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
    _write(tmp_path / "v", _samples(2))
    _edit_manifest(tmp_path / "v", lambda d: d.update(schema_version=99))
    with pytest.raises(ManifestError, match="schema_version 99"):
        load_manifest(tmp_path / "v")
    _write(tmp_path / "c", _samples(2))
    _edit_manifest(tmp_path / "c", lambda d: d["counts"].update(train=5))
    with pytest.raises(ManifestError, match="counts"):
        load_manifest(tmp_path / "c")
    _write(tmp_path / "m", _samples(2))
    _edit_manifest(tmp_path / "m", lambda d: d["shards"][0].pop("sha256"))
    with pytest.raises(ManifestError, match="malformed"):
        load_manifest(tmp_path / "m")


def test_manifest_check_names_missing_and_corrupt_shards(tmp_path):
    _write(tmp_path, _samples(7))
    manifest = load_manifest(tmp_path)
    shard = tmp_path / "train-00001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # same size, different content
    shard.write_bytes(bytes(data))
    manifest.check(tmp_path)  # sizes match: only the checksum can tell
    with pytest.raises(ManifestError, match="train-00001.tar: sha256"):
        manifest.check(tmp_path, verify_checksums=True)
    shard.write_bytes(bytes(data[:1024]))
    with pytest.raises(ManifestError, match="train-00001.tar: 1024 bytes on disk"):
        manifest.check(tmp_path)
    shard.unlink()
    with pytest.raises(ManifestError, match="train-00001.tar is listed .* but does not exist"):
        manifest.check(tmp_path)
    manifest.check(tmp_path, splits=["val"])  # other splits are not looked at
