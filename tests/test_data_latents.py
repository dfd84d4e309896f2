"""Latent shards: sample codec, latents.json, the autoencoder check and the LatentDataModule (2 ranks)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from fitdiff.data import (
    LATENT_MANIFEST_NAME,
    AutoencoderMismatchError,
    LatentBatch,
    LatentDataModule,
    LatentManifest,
    LatentSample,
    ManifestError,
    SampleError,
    ShardWriter,
    decode_latent_sample,
    encode_latent_sample,
    load_latent_manifest,
    read_shard,
    shard_name,
)

LATENT_SHAPE, K = (6, 4, 4), 5


def _sample(key: str, seed: int, dtype=np.float32) -> LatentSample:
    rng = np.random.default_rng(seed)
    identity = rng.normal(size=512)
    return LatentSample(key, rng.normal(size=LATENT_SHAPE).astype(dtype), rng.normal(size=K).astype(np.float32),
                        (identity / np.linalg.norm(identity)).astype(np.float32), {"subject": key.rsplit("_", 1)[0]})


def _write(folder, counts=None, per_shard=4, ae_sha="a" * 64, dtype=np.float32):
    """A latent dataset without an autoencoder: counts per split, ``per_shard`` samples a shard."""
    counts = counts or {"train": 10, "val": 6}
    samples, entries, seed = {}, [], 0
    for split, n in counts.items():
        with ShardWriter(folder, split, per_shard) as writer:
            for i in range(n):
                sample = _sample(f"{split}{i // 2}_{i % 2}", seed, dtype)
                seed += 1
                writer.write_encoded(encode_latent_sample(sample))
                samples[sample.key] = sample
        entries += [info.entry for info in writer.shards]
    layout = {"version": 1, "branches": [{"name": "diffuse", "channels": 2}, {"name": "specular", "channels": 2},
                                         {"name": "normals", "channels": 2}], "shape_dim": K, "height": 4,
              "width": 4, "packing": "repeat", "tile": [2, 2], "channels": 7, "shape_channels": 1}
    manifest = LatentManifest(
        entries, {"latent_dtype": np.dtype(dtype).name, "latent_shape": list(LATENT_SHAPE), "shape_dim": K,
                  "identity_dim": 512},
        {"path": "ae.safetensors", "sha256": ae_sha, "config": {}}, {"path": "faces"}, layout,
        {"split": "train", "mean": [0.0] * 7, "std": [1.0] * 7})
    manifest.write(folder)
    return samples


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_latent_sample_round_trip_is_bit_exact(dtype):
    sample = _sample("s1_0", 0, dtype)
    members = encode_latent_sample(sample)
    assert set(members) == {"__key__", "latent.npy", "shape.npy", "id.npy", "meta.json"}
    back = decode_latent_sample(members, fields=["latent", "shape", "identity", "meta"],
                                expected={"latent_dtype": np.dtype(dtype).name, "latent_shape": LATENT_SHAPE})
    assert back.latent.dtype == dtype and np.array_equal(back.latent, sample.latent)
    assert np.array_equal(back.shape, sample.shape) and np.array_equal(back.identity, sample.identity)
    assert back.meta == sample.meta
    assert encode_latent_sample(back) == members  # deterministic bytes


def test_decode_errors_name_shard_key_and_member():
    members = encode_latent_sample(_sample("s1_0", 0))
    with pytest.raises(SampleError, match=r"shard train-00003.tar, sample 's1_0', field 'id.npy': missing"):
        decode_latent_sample({k: v for k, v in members.items() if k != "id.npy"}, shard="train-00003.tar")
    with pytest.raises(SampleError, match=r"latent.npy.*shape must be \(6, 4, 8\)"):
        decode_latent_sample(members, shard="x.tar", expected={"latent_shape": [6, 4, 8]})
    with pytest.raises(SampleError, match=r"latent.npy.*dtype must be float16"):
        decode_latent_sample(members, expected={"latent_dtype": "float16"})
    stream = io.BytesIO()
    np.save(stream, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SampleError, match=r"'s1_0'.*'latent.npy': cannot decode"):  # never unpickled
        decode_latent_sample({**members, "latent.npy": stream.getvalue()})
    nan = _sample("s1_0", 0)
    nan.latent[0, 0, 0] = np.nan
    with pytest.raises(SampleError, match="non-finite"):
        encode_latent_sample(nan)


def test_manifest_round_trip_and_checks(tmp_path):
    _write(tmp_path)
    manifest = load_latent_manifest(tmp_path)
    assert manifest.counts == {"train": 10, "val": 6, "test": 0}
    assert [e.name for e in manifest.shards_for("train")] == [shard_name("train", i) for i in range(3)]
    assert LatentManifest.from_dict(json.loads(json.dumps(manifest.to_dict()))).to_dict() == manifest.to_dict()
    manifest.check(tmp_path, verify_checksums=True)
    (tmp_path / "val-00001.tar").write_bytes(b"x")
    with pytest.raises(ManifestError, match="val-00001.tar: 1 bytes on disk"):
        manifest.check(tmp_path)
    data = json.loads((tmp_path / LATENT_MANIFEST_NAME).read_text())
    with pytest.raises(ManifestError, match="counts"):
        LatentManifest.from_dict({**data, "counts": {"train": 3}})
    with pytest.raises(ManifestError, match="format"):
        LatentManifest.from_dict({**data, "format": "fitdiff-face-shards"})
    with pytest.raises(ManifestError, match="layout"):
        LatentManifest.from_dict({k: v for k, v in data.items() if k != "layout"})


def test_face_shard_folder_is_not_a_latent_folder(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ManifestError, match="encode_latents.py"):
        load_latent_manifest(tmp_path)


def test_mismatched_autoencoder_is_refused_naming_both_hashes_and_files(tmp_path):
    configured = tmp_path / "other.safetensors"
    configured.write_bytes(b"not the encoder")
    from fitdiff.io import sha256_file

    _write(tmp_path / "lat", ae_sha="b" * 64)
    dm = LatentDataModule(str(tmp_path / "lat"), autoencoder=str(configured), batch_size=4, seed=0)
    with pytest.raises(AutoencoderMismatchError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "b" * 64 in message and sha256_file(configured) in message
    assert "ae.safetensors" in message and str(configured) in message
    _write(tmp_path / "ok", ae_sha=sha256_file(configured))
    ok = LatentDataModule(str(tmp_path / "ok"), autoencoder=str(configured), batch_size=4, seed=0)
    ok.setup("fit")
    assert ok.autoencoder_sha256 == sha256_file(configured)
    assert ok.layout["channels"] == 7 and ok.stats["std"] == [1.0] * 7


def test_datamodule_yields_every_eval_sample_once_bit_exact(tmp_path):
    samples = _write(tmp_path, dtype=np.float16)
    dm = LatentDataModule(str(tmp_path), batch_size=4, val_batch_size=4, seed=0, fields=["latent", "shape",
                          "identity", "meta"])
    dm.setup("fit")
    seen = []
    for batch in dm.val_dataloader():
        assert isinstance(batch, LatentBatch) and batch.latent.dtype == torch.float32
        for i, key in enumerate(batch.keys):
            ref = samples[key]
            assert torch.equal(batch.latent[i], torch.from_numpy(ref.latent.astype(np.float32)))
            assert torch.equal(batch.shape[i], torch.from_numpy(ref.shape))
            assert torch.equal(batch.identity[i], torch.from_numpy(ref.identity))
            assert batch.meta[i] == ref.meta
            seen.append(key)
    assert sorted(seen) == sorted(k for k in samples if k.startswith("val"))
    batch = next(iter(dm.train_dataloader()))
    assert batch.latent.shape == (4, *LATENT_SHAPE) and batch.shape.shape == (4, K)
    assert batch.identity.shape == (4, 512) and len(batch.keys) == 4


def test_datamodule_splits_two_ranks(tmp_path):
    samples = _write(tmp_path, counts={"train": 16, "val": 6}, per_shard=4)  # 4 train shards, 2 val shards
    keys, steps, shards = {}, set(), {}
    for rank in (0, 1):
        dm = LatentDataModule(str(tmp_path), batch_size=2, seed=0, rank=rank, world_size=2)
        dm.setup("fit")
        train = list(dm.train_dataloader())
        steps.add(len(train))
        assert all(b.latent.shape == (2, *LATENT_SHAPE) and b.shape.shape == (2, K) for b in train)
        assert {k for b in train for k in b.keys} <= {k for k in samples if k.startswith("train")}
        keys[rank] = [k for b in dm.val_dataloader() for k in b.keys]
        shards[rank] = {path for path, _ in dm.streams["train"].rank_shards()}
    assert steps == {4}  # ceil(16 / (2 * 2)) on both ranks
    assert len(shards[0]) == len(shards[1]) == 2 and not shards[0] & shards[1]
    assert not set(keys[0]) & set(keys[1])
    assert sorted(keys[0] + keys[1]) == sorted(k for k in samples if k.startswith("val"))


def test_truncated_latent_shard_names_the_shard(tmp_path):
    _write(tmp_path)
    path = tmp_path / "val-00000.tar"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match="val-00000.tar"):
        list(read_shard(str(path), expected=4, members=["latent.npy"]))
