"""embed_identities: new id.npy from a recognizer; everything else in the shards stays bit-identical."""

from __future__ import annotations

import json
import sys
import tarfile

import numpy as np
import pytest
import torch

from fitdiff.data import (
    DatasetWriter,
    FaceDataModule,
    SampleError,
    ShardError,
    find_sample_folders,
    five_point_landmarks,
    load_manifest,
    random_sample,
    random_spec,
    read_shard,
    write_sample_folder,
)
from fitdiff.data.embed import IdentityEmbedder, embed_folder, embed_shards
from fitdiff.face.identity import IdentityEncoder
from fitdiff.io import sha256_file
from helpers import REPO_ROOT

SPEC = random_spec(image_resolution=48, uv_resolution=8)


class _MeanColourEncoder(IdentityEncoder):
    """A tiny deterministic recognizer: aligned-crop colour statistics projected to 512-d."""

    name = "mean-colour"

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(12, 512)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.proj.bias)
        self.freeze()

    def _embed(self, aligned: torch.Tensor) -> torch.Tensor:
        quads = torch.nn.functional.adaptive_avg_pool2d(aligned, 2).flatten(1)
        return self.proj(quads)


def _members(path):
    with tarfile.open(path) as tar:
        return {m.name: (tar.extractfile(m).read(), m.get_info()) for m in tar.getmembers()}


def _shards(folder, n=6):
    with DatasetWriter(folder, SPEC, samples_per_shard=4) as writer:
        for i in range(n):
            writer.write("train" if i < 4 else "val", random_sample(f"p{i}_0", SPEC, i))


def _embedder():
    return IdentityEmbedder(_MeanColourEncoder(), name="mean-colour")


def test_shards_rewritten_with_new_embeddings_only(tmp_path):
    _shards(tmp_path / "a")
    manifest = embed_shards(tmp_path / "a", tmp_path / "b", _embedder(), batch_size=4, progress=False)
    assert manifest.recognizer == "mean-colour" and manifest.counts == load_manifest(tmp_path / "a").counts
    old_manifest = load_manifest(tmp_path / "a")
    assert manifest.statistics == old_manifest.statistics
    manifest.check(tmp_path / "b", verify_checksums=True)
    for entry in manifest.shards:
        old, new = _members(tmp_path / "a" / entry.name), _members(tmp_path / "b" / entry.name)
        assert list(old) == list(new)  # same members in the same order
        for name in old:
            if name.endswith((".id.npy", ".meta.json")):
                continue
            assert old[name] == new[name], name  # bytes and tar header identical
        for name in (n for n in new if n.endswith(".meta.json")):
            old_meta, new_meta = json.loads(old[name][0]), json.loads(new[name][0])
            assert new_meta.pop("recognizer") == "mean-colour"
            old_meta.pop("recognizer")
            assert old_meta == new_meta
    dm = FaceDataModule(str(tmp_path / "b"), batch_size=3, seed=0)
    dm.setup("validate")  # the rewritten dataset validates against the new recognizer
    batch = next(iter(dm.val_dataloader()))
    np.testing.assert_allclose(batch.identity.norm(dim=1).numpy(), 1.0, atol=1e-5)
    # the embedding matches the encoder applied directly
    expected = _MeanColourEncoder()(batch.image, torch.from_numpy(five_point_landmarks(batch.landmarks.numpy())))
    torch.testing.assert_close(batch.identity, expected, atol=1e-5, rtol=1e-5)


def test_in_place_rewrite_is_deterministic(tmp_path):
    _shards(tmp_path / "a")
    _shards(tmp_path / "c")
    embed_shards(tmp_path / "a", tmp_path / "b", _embedder(), progress=False)
    embed_shards(tmp_path / "c", tmp_path / "c", _embedder(), progress=False)
    for entry in load_manifest(tmp_path / "c").shards:
        assert sha256_file(tmp_path / "c" / entry.name) == sha256_file(tmp_path / "b" / entry.name)
    assert not list((tmp_path / "c").glob("*.partial"))


def test_folder_mode(tmp_path):
    for i in range(3):
        write_sample_folder(tmp_path, random_sample(f"q{i}_0", SPEC, i))
    before = {f.key: (f.path / "image.png").read_bytes() for f in find_sample_folders(tmp_path)}
    assert embed_folder(tmp_path, _embedder(), batch_size=2, progress=False) == 3
    for folder in find_sample_folders(tmp_path):
        identity = np.load(folder.path / "id.npy", allow_pickle=False)
        assert identity.dtype == np.float32 and abs(np.linalg.norm(identity) - 1) < 1e-5
        assert json.loads((folder.path / "meta.json").read_text())["recognizer"] == "mean-colour"
        assert (folder.path / "image.png").read_bytes() == before[folder.key]


@pytest.mark.slow
def test_cli_with_arcface_random_weights(tmp_path):
    _shards(tmp_path / "a", n=4)
    sys.path.insert(0, str(REPO_ROOT / "data_prep"))
    try:
        import embed_identities
    finally:
        sys.path.pop(0)
    code = embed_identities.main(["--shards", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--recognizer",
                                  "arcface_ir_se50", "--weights", "random", "--batch-size", "4", "--no-progress"])
    assert code == 0
    assert load_manifest(tmp_path / "b").recognizer == "arcface_ir_se50"


class _FailingEncoder(_MeanColourEncoder):
    """Fails on its second batch, after the first shard has been written."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _embed(self, aligned: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("recognizer failed")
        return super()._embed(aligned)


def _fingerprint(folder):
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def test_a_failed_embed_leaves_no_output_folder(tmp_path):
    _shards(tmp_path / "a")
    with pytest.raises(RuntimeError, match="recognizer failed"):
        embed_shards(tmp_path / "a", tmp_path / "b", IdentityEmbedder(_FailingEncoder(), "x"), batch_size=4,
                     progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no "b", no temporary sibling


def test_a_failed_in_place_embed_changes_nothing(tmp_path):
    _shards(tmp_path / "a")
    before = _fingerprint(tmp_path / "a")
    with pytest.raises(RuntimeError, match="recognizer failed"):
        embed_shards(tmp_path / "a", tmp_path / "a", IdentityEmbedder(_FailingEncoder(), "x"), batch_size=4,
                     progress=False)
    assert _fingerprint(tmp_path / "a") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def _insert_members(folder, shard, position, members):
    """Put extra (name, bytes) members into a shard at ``position``; refresh the manifest's size and sha256."""
    import io

    path = folder / shard
    with tarfile.open(path) as tar:
        old = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    extra = []
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        extra.append((info, data))
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in old[:position] + extra + old[position:]:
            tar.addfile(info, io.BytesIO(data))
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["shards"]:
        if entry["name"] == shard:
            entry["bytes"], entry["sha256"] = path.stat().st_size, sha256_file(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("position", "member", "error", "pattern"), [
    (0, "aaa_0.txt", SampleError, r"unexpected member aaa_0\.txt: the only member\(s\) of sample 'aaa_0'"),
    (8, "p0_0.extra.txt", SampleError, r"unexpected member p0_0\.extra\.txt: not a sample member"),
    (32, "zz_9.txt", ShardError, r"more samples than the 4 the manifest lists; sample 5 is 'zz_9' \(members zz_9\.txt\)"),
])
def test_a_stray_member_is_named(tmp_path, position, member, error, pattern):
    _shards(tmp_path / "a")  # train-00000.tar: 4 samples of 8 members
    _insert_members(tmp_path / "a", "train-00000.tar", position, [(member, b"stray")])
    with pytest.raises(error, match=pattern) as info:
        embed_shards(tmp_path / "a", tmp_path / "b", _embedder(), batch_size=32, progress=False)
    assert str(tmp_path / "a" / "train-00000.tar") in str(info.value)
    assert not (tmp_path / "b").exists()


def test_read_shard_names_the_first_sample_past_the_manifest_count(tmp_path):
    _shards(tmp_path / "a")
    extra = random_sample("zz_9", SPEC, 99).encode()
    _insert_members(tmp_path / "a", "train-00000.tar", 32,
                    [(f"zz_9.{m}", data) for m, data in sorted(extra.items()) if m != "__key__"])
    with pytest.raises(ShardError, match=r"sample 5 is 'zz_9' \(members zz_9\.diffuse\.png, zz_9\.id\.npy"):
        list(read_shard(str(tmp_path / "a" / "train-00000.tar"), expected=4))
