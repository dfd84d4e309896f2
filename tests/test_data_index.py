"""Indexing shards written by another tool: manifest.json for existing shards, which stay untouched."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import webdataset as wds

from fitdiff.data import (
    DatasetStats,
    FaceDataModule,
    InvalidShardsError,
    ManifestError,
    load_manifest,
    random_sample,
    random_spec,
)
from fitdiff.data.index import index_shards, split_from_name
from fitdiff.io import sha256_file
from helpers import REPO_ROOT

SPEC = random_spec(image_resolution=32, uv_resolution=8, specular_channels=3)


def _other_tool_shard(path, samples):
    """A shard as another program writes it: webdataset's own encoders, default headers (mtime = now)."""
    with wds.TarWriter(str(path)) as tar:
        for s in samples:
            tar.write({"__key__": s.key, "image.png": s.image, "diffuse.png": s.diffuse, "specular.png": s.specular,
                       "normals.npy": s.normals, "shape.npy": s.shape, "id.npy": s.identity,
                       "landmarks.npy": s.landmarks, "meta.json": s.meta})


def _samples(first, n):
    return [random_sample(f"p{i}_{i % 2}", SPEC, i) for i in range(first, first + n)]


def _fingerprint(folder):
    return {p.name: (sha256_file(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.tar"))}


@pytest.fixture
def shard_folder(tmp_path):
    """train-a.tar (4), train-b.tar (3), val-0.tar (3) written with webdataset.TarWriter; no manifest."""
    folder = tmp_path / "shards"
    folder.mkdir()
    groups = {"train-a.tar": _samples(0, 4), "train-b.tar": _samples(4, 3), "val-0.tar": _samples(7, 3)}
    for name, samples in groups.items():
        _other_tool_shard(folder / name, samples)
    return folder, groups


def test_index_then_the_datamodule_reads_the_shards(shard_folder):
    folder, groups = shard_folder
    before = _fingerprint(folder)
    report = index_shards(folder, progress=False)
    assert _fingerprint(folder) == before  # the shards are only read: same bytes, same mtimes
    manifest = load_manifest(folder)
    assert manifest.counts == {"train": 7, "val": 3, "test": 0}
    assert report.splits == {"train-a.tar": "train", "train-b.tar": "train", "val-0.tar": "val"}
    assert manifest.spec.uv_resolution == 8 and manifest.spec.specular_channels == 3
    assert manifest.recognizer == SPEC.recognizer and manifest.shape_model == SPEC.shape_model
    manifest.check(folder, verify_checksums=True)
    expected = DatasetStats()
    for sample in groups["train-a.tar"] + groups["train-b.tar"]:
        expected.add(sample)
    assert manifest.statistics["split"] == "train" and manifest.statistics["samples"] == 7
    np.testing.assert_allclose(manifest.statistics["shape"]["mean"], expected.summary()["shape"]["mean"])
    np.testing.assert_allclose(manifest.statistics["normals"]["std"], expected.summary()["normals"]["std"])

    dm = FaceDataModule(str(folder), batch_size=2, seed=0)
    dm.setup("fit")
    originals = {s.key: s for s in groups["val-0.tar"]}
    seen = []
    for batch in dm.val_dataloader():
        for i, key in enumerate(batch.keys):
            assert np.array_equal(batch.shape[i].numpy(), originals[key].shape)
            assert np.array_equal(batch.normals[i].permute(1, 2, 0).numpy().astype(np.float16), originals[key].normals)
            seen.append(key)
    assert sorted(seen) == sorted(originals)
    assert len(next(iter(dm.train_dataloader())).keys) == 2
    assert _fingerprint(folder) == before


@pytest.mark.parametrize(("name", "split"), [
    ("train-00000.tar", "train"), ("faces_val_3.tar", "val"), ("shard.TEST.0001.tar", "test"),
    ("validation-2.tar", "val"), ("part-0001.tar", None), ("contest-1.tar", None), ("eval-1.tar", None),
])
def test_split_from_the_file_name(name, split):
    assert split_from_name(name) == split


def test_a_name_with_two_splits_is_refused():
    with pytest.raises(ValueError, match="names two splits"):
        split_from_name("train-val-0.tar")


def test_shards_without_a_split_in_their_name_need_the_option(tmp_path):
    _other_tool_shard(tmp_path / "part-0.tar", _samples(0, 3))
    _other_tool_shard(tmp_path / "part-1.tar", _samples(3, 2))
    _other_tool_shard(tmp_path / "holdout_val.tar", _samples(5, 2))
    with pytest.raises(ValueError, match=r"2 shard\(s\) .*part-0.tar, part-1.tar.*--split"):
        index_shards(tmp_path, progress=False)
    assert not (tmp_path / "manifest.json").exists()
    report = index_shards(tmp_path, split="train", progress=False)
    assert report.manifest.counts == {"train": 5, "val": 2, "test": 0}
    assert report.by_name == ["holdout_val.tar"]


def test_an_invalid_sample_fails_the_index_and_writes_nothing(shard_folder):
    folder, groups = shard_folder
    bad = groups["train-b.tar"]
    bad[1].normals[2, 2] = np.array([0.0, 0.0, 3.0], np.float16)  # not a unit vector
    _other_tool_shard(folder / "train-b.tar", bad)
    with pytest.raises(InvalidShardsError, match="1 invalid sample") as info:
        index_shards(folder, progress=False)
    (problem,) = info.value.problems
    assert (problem.shard, problem.key, problem.field) == (str(folder / "train-b.tar"), bad[1].key, "normals.npy")
    assert not (folder / "manifest.json").exists()


def test_a_key_in_two_shards_is_refused(shard_folder):
    folder, groups = shard_folder
    _other_tool_shard(folder / "test-0.tar", groups["train-a.tar"][:1])
    with pytest.raises(InvalidShardsError, match="duplicate key: also in shard") as info:
        index_shards(folder, progress=False)
    assert info.value.problems[0].shard == str(folder / "train-a.tar")  # shards are read in name order


def test_an_existing_manifest_is_kept_unless_overwrite(shard_folder):
    folder, _ = shard_folder
    index_shards(folder, progress=False)
    text = (folder / "manifest.json").read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        index_shards(folder, progress=False)
    assert index_shards(folder, overwrite=True, progress=False).manifest.counts["train"] == 7
    assert (folder / "manifest.json").read_text() == text  # deterministic


def _build_shards_script():
    sys.path.insert(0, str(REPO_ROOT / "data_prep"))
    try:
        import build_shards
    finally:
        sys.path.pop(0)
    return build_shards


def test_cli_index(shard_folder, capsys):
    folder, _ = shard_folder
    script = _build_shards_script()
    assert script.main(["--index", str(folder), "--no-progress"]) == 0
    assert "samples train 7, val 3, test 0" in capsys.readouterr().out
    assert json.loads((folder / "manifest.json").read_text())["counts"]["val"] == 3
    with pytest.raises(SystemExit):
        script.main(["--help"])
    assert "--index SHARDS_DIR" in capsys.readouterr().out


def test_cli_index_lists_every_invalid_sample(shard_folder, capsys):
    folder, groups = shard_folder
    bad = groups["val-0.tar"]
    for sample in bad[:2]:
        sample.identity = sample.identity * 2.0
    _other_tool_shard(folder / "val-0.tar", bad)
    assert _build_shards_script().main(["--index", str(folder), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "2 invalid sample(s)" in err and f"shard {folder / 'val-0.tar'}, sample '{bad[1].key}', field 'id.npy'" in err


def test_missing_manifest_names_the_index_command(shard_folder):
    folder, _ = shard_folder
    with pytest.raises(ManifestError, match=r"holds 3 \.tar shard\(s\) but no manifest.*build_shards.py --index"):
        load_manifest(folder)


def test_train_without_a_manifest_exits_2_with_one_line(tmp_path, compose_train, caplog):
    from fitdiff import tasks

    shards = tmp_path / "data" / "synthetic"  # where quickstart_ae reads: ${paths.data_dir}/synthetic
    shards.mkdir(parents=True)
    _other_tool_shard(shards / "train-0.tar", _samples(0, 2))
    cfg = compose_train("quickstart_ae", f"paths.data_dir={tmp_path / 'data'}", "logger=none",
                        "extras.print_config=false")
    with caplog.at_level(logging.ERROR, logger="fitdiff.tasks"), pytest.raises(SystemExit) as info:
        tasks.run_cli(tasks.train, cfg)
    assert info.value.code == 2
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = record.getMessage()
    assert "\n" not in message
    assert f"{shards / 'manifest.json'} does not exist" in message
    assert f"python data_prep/build_shards.py --index {shards}" in message
