"""Bad data and what the user sees: every fault of a shard dataset, read by the DataModule or the tools.

Each case is one test; in each, nothing is lost: the inputs keep their bytes, no partial file is left.
Photos, configs and checkpoints: ``tests/test_faults_inputs.py``.

====================================  ================================================================  =====================================
bad input                             what the user sees                                                test
====================================  ================================================================  =====================================
garbage bytes in a shard              ShardError: "shard <path>: cannot read the tar archive after       test_corrupt_shard_names_path_and_last_good_key
                                      sample 's4_0' (in sample 's5_0', after its member
                                      's5_0.image.png'): bad tar header checksum at byte N" (also with
                                      on_bad_sample=skip: a damaged shard is not a bad sample)
shard cut mid-member                  at setup, ManifestError "shard <path>: N bytes on disk, manifest   test_truncated_shard_names_path_and_last_good_key
                                      says M"; read_shard: ShardError "... after sample 's4_0' (in
                                      sample 's5_0', after its member 's5_0.meta.json'): unexpected
                                      end of data in member 's5_0.normals.npy' ..."
a sample without diffuse.png          SampleError "shard <path>, sample 's5_0', field 'diffuse.png':     test_missing_member_names_shard_key_and_field,
                                      missing (the sample has: ...)"; skip: dropped, counted, logged      test_missing_member_is_counted_and_skipped
NaN in normals.npy                    SampleError "..., field 'normals.npy': 3 non-finite value(s)      test_nan_map_is_refused_even_unvalidated
                                      (NaN or inf)", also with data.validate_samples=false; skip: counted
diffuse.png of another size           SampleError "..., field 'diffuse.png': shape must be (8, 8, 3),   test_wrong_resolution_names_field_got_and_expected
                                      got (4, 4, 3)"
object (pickled) .npy member          SampleError "..., field 'normals.npy': cannot decode: Object      test_pickled_npy_is_refused_and_never_executed
                                      arrays cannot be loaded when allow_pickle=False"; --index lists it;
                                      the payload never runs
a .pickle member                      ignored, never unpickled (the sample reads as usual)              test_pickle_member_is_never_unpickled
shards of another tool, no manifest   ManifestError on one line "... `python data_prep/build_shards.py  test_foreign_shards_need_the_index_command_then_train
                                      --index DIR`"; after that command the DataModule reads them
disk full while writing shards        DiskFullError "cannot write <dir>/val-00000.tar: the disk is      test_disk_full_while_writing_shards_leaves_no_partial_file
                                      full ...", finished shards stay, no .partial / .tmp, no manifest
disk full at fsync (manifest, any     DiskFullError "cannot write <dir>/manifest.json: the disk is     test_disk_full_at_fsync_keeps_the_old_file
atomic write)                         full ..."; the old file is intact, no temporary file
disk full while rebuilding shards     build_shards.py exits 1: "error: cannot write <shard>: the disk    test_disk_full_in_build_shards_removes_the_stale_manifest
                                      is full ..."; the old manifest (it lists the changed shard) is
                                      removed, other shards untouched; the rerun completes
====================================  ================================================================  =====================================
"""

from __future__ import annotations

import builtins
import errno
import importlib.util
import io
import logging
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

import fitdiff.io
from fitdiff.data import (
    DatasetWriter,
    FaceDataModule,
    InvalidShardsError,
    ManifestError,
    SampleError,
    ShardError,
    load_manifest,
    random_sample,
    random_spec,
)
from fitdiff.data.index import index_shards
from fitdiff.data.stream import read_shard
from fitdiff.data.writer import ShardWriter
from fitdiff.io import DiskFullError, sha256_file
from helpers import REPO_ROOT, full_disk, leftovers

SPEC = random_spec(image_resolution=16, uv_resolution=8)
VAL_KEYS = [f"s{i}_0" for i in range(4, 8)]  # the val split of _dataset: one shard, val-00000.tar


def _dataset(folder: Path, mutate=None) -> Path:
    """4 train + 4 val samples ``s<i>_0``, 4 per shard, written unvalidated; ``mutate(i, sample)`` spoils some."""
    with DatasetWriter(folder, SPEC, samples_per_shard=4, validate=False) as writer:
        for i in range(8):
            sample = random_sample(f"s{i}_0", SPEC, i)
            if mutate is not None:
                mutate(i, sample)
            writer.write("train" if i < 4 else "val", sample)
    return folder


def _val_keys(folder: Path, **kwargs) -> tuple[list[str], FaceDataModule]:
    dm = FaceDataModule(str(folder), batch_size=2, seed=0, shuffle_buffer=0, **kwargs)
    dm.setup("fit")
    return [k for batch in dm.val_dataloader() for k in batch.keys], dm


def _fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()


# ------------------------------------------------------------------------------------------- damaged shards

def test_corrupt_shard_names_path_and_last_good_key(tmp_path):
    """Garbage over a member header in the middle of the second sample: the read stops there, naming the
    last complete sample and the last member read."""
    shard = _dataset(tmp_path) / "val-00000.tar"
    victim = next(m for m in _members(shard) if m.name == "s5_0.landmarks.npy")
    data = bytearray(shard.read_bytes())
    data[victim.offset:victim.offset + 512] = b"\xde\xad\xbe\xef" * 128  # same size: the manifest check passes
    shard.write_bytes(bytes(data))
    before = _fingerprint(tmp_path)
    for policy in ("raise", "skip"):
        with pytest.raises(ShardError) as info:
            _val_keys(tmp_path, on_bad_sample=policy)
        message = str(info.value)
        assert message.startswith(f"shard {shard}: cannot read the tar archive after sample 's4_0' (in sample "
                                  "'s5_0', after its member 's5_0.image.png'): bad tar header checksum at byte "
                                  f"{victim.offset}"), message
    with pytest.raises(ShardError, match=r"after sample 's4_0'"):
        list(read_shard(str(shard)))
    assert _fingerprint(tmp_path) == before


def test_truncated_shard_names_path_and_last_good_key(tmp_path):
    """A shard cut in the middle of a member: the manifest check at setup, or the reader, names it."""
    shard = _dataset(tmp_path) / "val-00000.tar"
    victim = next(m for m in _members(shard) if m.name == "s5_0.normals.npy")
    full = shard.stat().st_size
    with open(shard, "r+b") as handle:
        handle.truncate(victim.offset_data + victim.size // 2)
    before = _fingerprint(tmp_path)
    dm = FaceDataModule(str(tmp_path), batch_size=2, seed=0)
    with pytest.raises(ManifestError, match=rf"shard {shard}: {victim.offset_data + victim.size // 2} bytes on disk, "
                                            rf"manifest says {full}"):
        dm.setup("fit")
    with pytest.raises(ShardError) as info:
        list(read_shard(str(shard), expected=4))
    message = str(info.value)
    assert message.startswith(f"shard {shard}: cannot read the tar archive after sample 's4_0' (in sample 's5_0', "
                              "after its member 's5_0.meta.json'): unexpected end of data in member "
                              "'s5_0.normals.npy'"), message
    assert _fingerprint(tmp_path) == before


# ------------------------------------------------------------------------------------------- bad samples

def _drop_diffuse(i: int, sample) -> None:
    if i == 5:
        sample.diffuse = None


def test_missing_member_names_shard_key_and_field(tmp_path):
    """A sample without its diffuse map: shard path, key, member and what the sample does hold."""
    _dataset(tmp_path, _drop_diffuse)
    with pytest.raises(SampleError) as info:
        _val_keys(tmp_path)
    error = info.value
    assert (error.shard, error.key, error.field) == (str(tmp_path / "val-00000.tar"), "s5_0", "diffuse.png")
    assert "missing (the sample has: id.npy, image.png, landmarks.npy" in str(error)


def test_missing_member_is_counted_and_skipped(tmp_path, caplog):
    """``data.on_bad_sample=skip``: the sample is dropped, counted and logged with shard and key."""
    _dataset(tmp_path, _drop_diffuse)
    with caplog.at_level(logging.WARNING, logger="fitdiff.data.bad_samples"):
        keys, dm = _val_keys(tmp_path, on_bad_sample="skip", max_bad_fraction=0.5, bad_fraction_min_samples=1)
    assert keys == [k for k in VAL_KEYS if k != "s5_0"]
    counter = dm.streams["val"].bad_samples
    assert (counter.read, counter.skipped) == (4, 1)
    assert "skipped bad sample (1 of 2 read so far)" in caplog.text and "'s5_0'" in caplog.text


def test_nan_map_is_refused_even_unvalidated(tmp_path):
    """NaN normals are caught when decoding, so also with ``data.validate_samples=false``; skip counts them."""

    def nan_normals(i, sample):
        if i == 6:
            sample.normals[1, 2, :] = np.nan

    _dataset(tmp_path, nan_normals)
    for validate in (True, False):
        with pytest.raises(SampleError, match=r"3 non-finite value\(s\) \(NaN or inf\)") as info:
            _val_keys(tmp_path, validate_samples=validate)
        assert (info.value.key, info.value.field) == ("s6_0", "normals.npy")
        assert str(tmp_path / "val-00000.tar") in str(info.value)
    keys, dm = _val_keys(tmp_path, validate_samples=False, on_bad_sample="skip", max_bad_fraction=0.5,
                         bad_fraction_min_samples=1)
    assert "s6_0" not in keys and dm.streams["val"].bad_samples.skipped == 1


def test_wrong_resolution_names_field_got_and_expected(tmp_path):
    """A 4x4 diffuse map in an 8x8 dataset: the message says the expected and the found shape."""

    def small_diffuse(i, sample):
        if i == 7:
            sample.diffuse = sample.diffuse[:4, :4].copy()

    _dataset(tmp_path, small_diffuse)
    with pytest.raises(SampleError, match=r"shape must be \(8, 8, 3\), got \(4, 4, 3\)") as info:
        _val_keys(tmp_path)
    assert (info.value.shard, info.value.key, info.value.field) == (str(tmp_path / "val-00000.tar"), "s7_0",
                                                                     "diffuse.png")


# ------------------------------------------------------------------------------------------- pickle payloads

class _Payload:
    """Unpickling this creates ``marker``: the proof that a decoder ran pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _pickled_npy(marker: Path) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def _check_armed(tmp_path: Path) -> None:
    """The payloads are real: loading one with pickle allowed runs it (on a control marker)."""
    control = tmp_path / "control-marker"
    np.load(io.BytesIO(_pickled_npy(control)), allow_pickle=True)
    assert control.exists()
    control.unlink()


def _val_shard_with(folder: Path, extra: dict[str, dict[str, bytes]]) -> Path:
    """Train shard of 4 good samples; val shard whose samples get the ``extra`` members of their key."""
    from fitdiff.data.manifest import Manifest
    from fitdiff.data.writer import dataset_statistics

    shards = []
    for split, indices in (("train", range(4)), ("val", range(4, 8))):
        with ShardWriter(folder, split, samples_per_shard=4) as writer:
            for i in indices:
                sample = random_sample(f"s{i}_0", SPEC, i)
                writer.write_encoded({**sample.encode(), **extra.get(sample.key, {})})
        shards += writer.shards
    Manifest(SPEC, [s.entry for s in shards], dataset_statistics(shards)).write(folder)
    return folder / "val-00000.tar"


def test_pickled_npy_is_refused_and_never_executed(tmp_path):
    """``normals.npy`` holding a pickled object array: refused by the DataModule and by ``--index``."""
    marker = tmp_path / "marker"
    payload = _pickled_npy(marker)
    _check_armed(tmp_path)
    data = tmp_path / "data"
    shard = _val_shard_with(data, {"s5_0": {"normals.npy": payload}})
    with pytest.raises(SampleError, match="Object arrays cannot be loaded when allow_pickle=False") as info:
        _val_keys(data)
    assert (info.value.shard, info.value.key, info.value.field) == (str(shard), "s5_0", "normals.npy")
    keys, _ = _val_keys(data, on_bad_sample="skip", max_bad_fraction=0.5, bad_fraction_min_samples=1)
    assert keys == [k for k in VAL_KEYS if k != "s5_0"]
    (data / "manifest.json").unlink()
    with pytest.raises(InvalidShardsError, match=r"1 invalid sample.*sample 's5_0', field 'normals.npy'"):
        index_shards(data, progress=False)
    assert not (data / "manifest.json").exists()
    assert not marker.exists()


def test_pickle_member_is_never_unpickled(tmp_path):
    """A ``.pickle`` member (webdataset's own decoders would unpickle it) is left as bytes, never run."""
    marker = tmp_path / "marker"
    payload = pickle.dumps(_Payload(marker))
    _check_armed(tmp_path)
    data = tmp_path / "data"
    shard = _val_shard_with(data, {"s5_0": {"pickle": payload, "pyd": payload}})
    keys, _ = _val_keys(data)
    assert keys == VAL_KEYS
    raw = next(s for s in read_shard(str(shard)) if s["__key__"] == "s5_0")
    assert raw["pickle"] == payload and raw["pyd"] == payload
    (data / "manifest.json").unlink()
    assert index_shards(data, progress=False).manifest.counts["val"] == 4
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- foreign shards

def _build_shards_main():
    spec = importlib.util.spec_from_file_location("build_shards_cli", REPO_ROOT / "data_prep" / "build_shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_foreign_shards_need_the_index_command_then_train(tmp_path, capsys):
    """``wds.TarWriter`` shards without a manifest: one line naming the command; after it, they load."""
    folder = tmp_path / "shards"
    folder.mkdir()
    for name, indices in (("train-0.tar", range(4)), ("val-0.tar", range(4, 8))):
        with wds.TarWriter(str(folder / name)) as tar:  # webdataset's encoders, default headers
            for i in indices:
                s = random_sample(f"s{i}_0", SPEC, i)
                tar.write({"__key__": s.key, "image.png": s.image, "diffuse.png": s.diffuse,
                           "specular.png": s.specular[..., 0], "normals.npy": s.normals, "shape.npy": s.shape, "id.npy": s.identity,
                           "landmarks.npy": s.landmarks, "meta.json": s.meta})
    before = _fingerprint(folder)
    with pytest.raises(ManifestError) as info:
        FaceDataModule(str(folder), batch_size=2).setup("fit")
    message = str(info.value)
    assert "\n" not in message and f"`python data_prep/build_shards.py --index {folder}`" in message
    assert _build_shards_main()(["--index", str(folder), "--no-progress"]) == 0
    assert "samples train 4, val 4, test 0" in capsys.readouterr().out
    keys, dm = _val_keys(folder)
    assert keys == VAL_KEYS and len(next(iter(dm.train_dataloader())).keys) == 2
    assert {k: v for k, v in _fingerprint(folder).items() if k != "manifest.json"} == before


# ------------------------------------------------------------------------------------------- full disk

def test_disk_full_while_writing_shards_leaves_no_partial_file(tmp_path, monkeypatch):
    """The disk fills up in the second shard: it names that shard; the first, complete shard stays."""
    reference = _dataset(tmp_path / "reference")
    first = (reference / "train-00000.tar").stat().st_size
    full_disk(monkeypatch, first + 2048)
    with pytest.raises(DiskFullError) as info:
        _dataset(tmp_path / "data")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "data" / "val-00000.tar")
    assert f"cannot write {tmp_path / 'data' / 'val-00000.tar'}: the disk is full" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["train-00000.tar"]  # no manifest, no partial
    assert sha256_file(tmp_path / "data" / "train-00000.tar") == sha256_file(reference / "train-00000.tar")


def test_disk_full_in_build_shards_removes_the_stale_manifest(tmp_path, monkeypatch, capsys):
    """Rebuilding a changed chunk on a full disk: exit 1 naming the shard; no manifest lists it any more."""
    from fitdiff.data.folder import write_sample_folder

    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(12):
        write_sample_folder(src, random_sample(f"p{i}_0", SPEC, i))
    main = _build_shards_main()
    args = ["--src", str(src), "--out", str(out), "--samples-per-shard", "4", "--val-fraction", "0",
            "--test-fraction", "0", "--no-progress"]
    assert main(args) == 0
    shards = _fingerprint(out)
    write_sample_folder(src, random_sample("p5_0", SPEC, 99))  # changes the chunk of train-00001.tar
    disk = full_disk(monkeypatch, 4096)
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"error: cannot write {out / 'train-00001.tar'}: the disk is full" in err, err
    assert not (out / "manifest.json").exists() and not (out / "train-00001.tar").exists()
    assert leftovers(tmp_path) == []
    for name in ("train-00000.tar", "train-00002.tar"):
        assert sha256_file(out / name) == shards[name]
    disk.free = 1 << 40  # space again: the rerun writes what is missing
    assert main(args) == 0
    load_manifest(out).check(out, verify_checksums=True)
    assert load_manifest(out).counts["train"] == 12


def test_disk_full_at_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    """The data fitted the page cache but not the disk (``fsync`` fails with ENOSPC): the old file stays."""
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fitdiff.io.os, "fsync", no_space)
    with pytest.raises(DiskFullError, match=rf"^cannot write {target}: the disk is full"):
        fitdiff.io.atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
