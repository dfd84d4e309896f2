"""The DataModule: bit-exact round trip, epoch length per rank, rank/worker splits, order, errors."""

from __future__ import annotations

import gc
import math

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fitdiff.data import (
    AUTOENCODER_FIELDS,
    DatasetWriter,
    FaceBatch,
    FaceCollate,
    FaceDataModule,
    ManifestError,
    SampleError,
    ShardError,
    load_manifest,
    random_sample,
    random_spec,
    read_shard,
)

SPEC = random_spec(image_resolution=32, uv_resolution=16, specular_channels=3)


def _samples(n: int, offset: int = 0):
    return [random_sample(f"s{(i + offset) // 2}_{(i + offset) % 2}", SPEC, i + offset) for i in range(n)]


def _dataset(folder, n_train=20, n_val=10, per_shard=4, validate=True, mutate=None):
    """Write n_train + n_val random samples; ``mutate(index, sample)`` may break some (validate=False)."""
    samples = _samples(n_train + n_val)
    with DatasetWriter(folder, SPEC, samples_per_shard=per_shard, validate=validate) as writer:
        for i, sample in enumerate(samples):
            if mutate is not None:
                mutate(i, sample)
            writer.write("train" if i < n_train else "val", sample)
    return {s.key: s for s in samples}


def _dm(folder, **kwargs) -> FaceDataModule:
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("seed", 0)
    dm = FaceDataModule(str(folder), **kwargs)
    dm.setup("fit")
    return dm


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch.keys]


def test_round_trip_is_bit_exact(tmp_path):
    originals = _dataset(tmp_path)
    dm = _dm(tmp_path, batch_size=3)
    seen = 0
    for batch in dm.val_dataloader():
        assert isinstance(batch, FaceBatch)
        assert batch.image.dtype == torch.float32 and batch.image.shape[1:] == (3, 32, 32)
        assert batch.specular.shape[1:] == (3, 16, 16) and batch.landmarks.shape[1:] == (68, 2)
        for i, key in enumerate(batch.keys):
            ref = originals[key]
            to_uint8 = lambda t: (t * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()  # noqa: E731
            assert np.array_equal(to_uint8(batch.image[i]), ref.image)
            assert np.array_equal(to_uint8(batch.diffuse[i]), ref.diffuse)
            assert np.array_equal(to_uint8(batch.specular[i]), ref.specular)
            assert np.array_equal(batch.normals[i].permute(1, 2, 0).numpy().astype(np.float16), ref.normals)
            assert np.array_equal(batch.shape[i].numpy(), ref.shape)
            assert np.array_equal(batch.identity[i].numpy(), ref.identity)
            assert np.array_equal(batch.landmarks[i].numpy(), ref.landmarks)
            assert batch.meta[i] == ref.meta
            seen += 1
    assert seen == 10


@pytest.mark.parametrize("workers", [0, 2])
def test_train_epoch_has_the_planned_number_of_steps(tmp_path, workers):
    _dataset(tmp_path, n_train=22, per_shard=4)
    dm = _dm(tmp_path, batch_size=4, num_workers=workers)
    expected = math.ceil(math.ceil(22 / 4) / max(1, workers)) * max(1, workers)
    assert dm.steps_per_epoch == expected
    loader = dm.train_dataloader()
    assert len(loader) == expected
    for _ in range(2):  # two epochs
        batches = list(loader)
        assert len(batches) == expected and all(len(b) == 4 for b in batches)


def test_two_ranks_read_disjoint_shards_with_equal_steps(tmp_path, monkeypatch):
    _dataset(tmp_path, n_train=22, n_val=10, per_shard=3)  # 8 uneven train shards
    manifest = load_manifest(tmp_path)
    monkeypatch.setenv("RANK", "1")  # rank/world_size arguments win over the environment
    monkeypatch.setenv("WORLD_SIZE", "4")
    ranks = [_dm(tmp_path, batch_size=2, rank=r, world_size=2, steps_per_epoch=5) for r in (0, 1)]
    train = [{p for p, _ in dm.streams["train"].rank_shards()} for dm in ranks]
    val = [{p for p, _ in dm.streams["val"].rank_shards()} for dm in ranks]
    assert not train[0] & train[1] and not val[0] & val[1]
    assert len(train[0] | train[1]) == len(manifest.shards_for("train"))
    steps = [len(list(dm.train_dataloader())) for dm in ranks]
    assert steps == [5, 5]
    shard_keys = {}
    for entry in manifest.shards:
        shard_keys[str(tmp_path / entry.name)] = {s["__key__"] for s in read_shard(str(tmp_path / entry.name))}
    for dm, shards in zip(ranks, train):
        allowed = set().union(*(shard_keys[p] for p in shards))
        assert set(_keys(dm.train_dataloader())) <= allowed
    val_keys = [_keys(dm.val_dataloader()) for dm in ranks]
    assert not set(val_keys[0]) & set(val_keys[1]) and len(val_keys[0]) + len(val_keys[1]) == 10


def test_rank_from_environment(tmp_path, monkeypatch):
    _dataset(tmp_path, n_train=8, n_val=4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    dm = _dm(tmp_path)
    assert (dm.rank, dm.world_size) == (1, 2)


def test_validation_order_is_deterministic_and_complete(tmp_path):
    _dataset(tmp_path, n_train=4, n_val=14, per_shard=3)
    val = set(load_keys(tmp_path, "val"))
    first = _keys(_dm(tmp_path, num_workers=0).val_dataloader())
    assert first == _keys(_dm(tmp_path, num_workers=0).val_dataloader())
    assert len(first) == len(set(first)) == 14 and set(first) == val
    dm = _dm(tmp_path, num_workers=2)
    two = _keys(dm.val_dataloader())
    assert two == _keys(dm.val_dataloader())  # same order on every pass
    assert sorted(two) == sorted(first)  # workers 0 and 2: the same samples, each once


def test_fewer_shards_than_workers(tmp_path):
    _dataset(tmp_path, n_train=3, n_val=2, per_shard=8)  # one shard per split
    dm = _dm(tmp_path, batch_size=2, num_workers=2)
    assert len(list(dm.train_dataloader())) == dm.steps_per_epoch == 2
    loader = DataLoader(dm.streams["val"], batch_size=2, num_workers=2, collate_fn=FaceCollate())  # 1 idle worker
    assert sorted(_keys(loader)) == sorted(_keys(dm.val_dataloader()))


def test_autoencoder_fields_only(tmp_path):
    _dataset(tmp_path, n_train=4, n_val=2)
    dm = _dm(tmp_path, fields=list(AUTOENCODER_FIELDS))
    batch = next(iter(dm.train_dataloader()))
    assert batch.diffuse is not None and batch.normals is not None and batch.specular is not None
    assert batch.image is None and batch.identity is None and batch.meta is None


def test_photo_jitter_only_in_training(tmp_path):
    originals = _dataset(tmp_path, n_train=4, n_val=4)
    dm = _dm(tmp_path, jitter_brightness=0.5, jitter_hue=0.1)
    batch = next(iter(dm.train_dataloader()))
    assert 0.0 <= batch.image.min() and batch.image.max() <= 1.0
    stored = torch.stack([torch.from_numpy(originals[k].image).permute(2, 0, 1) / 255.0 for k in batch.keys])
    assert not torch.allclose(batch.image, stored, atol=1e-3)
    stored_diffuse = torch.stack([torch.from_numpy(originals[k].diffuse).permute(2, 0, 1) / 255.0 for k in batch.keys])
    assert torch.equal(batch.diffuse, stored_diffuse)  # maps are never jittered
    val = next(iter(dm.val_dataloader()))
    stored = torch.stack([torch.from_numpy(originals[k].image).permute(2, 0, 1) / 255.0 for k in val.keys])
    assert torch.equal(val.image, stored)


# --------------------------------------------------------------------------------------------- errors


def _bad_val(folder, index, mutate):
    return _dataset(folder, n_train=4, n_val=6, per_shard=3, validate=False,
                    mutate=lambda i, s: mutate(s) if i == 4 + index else None)


@pytest.mark.parametrize(
    ("mutate", "field", "pattern"),
    [
        (lambda s: s.normals.__setitem__((1, 1, 2), np.nan), "normals.npy", "non-finite"),
        (lambda s: setattr(s, "diffuse", s.diffuse[:8, :8].copy()), "diffuse.png", r"shape must be \(16, 16, 3\)"),
        (lambda s: setattr(s, "identity", None), "id.npy", "missing"),
    ],
)
def test_bad_sample_names_shard_key_and_field(tmp_path, mutate, field, pattern):
    _bad_val(tmp_path, 4, mutate)  # val sample 4 -> val-00001.tar, key s4_0
    dm = _dm(tmp_path)
    with pytest.raises(SampleError, match=pattern) as info:
        _keys(dm.val_dataloader())
    assert (info.value.shard, info.value.key, info.value.field) == (str(tmp_path / "val-00001.tar"), "s4_0", field)


def test_bad_sample_in_a_worker_names_shard_key_and_field(tmp_path):
    # (torch then needs ~5 s to shut the failed worker down: an iterable-dataset DataLoader behaviour)
    _bad_val(tmp_path, 4, lambda s: s.normals.__setitem__((1, 1, 2), np.nan))
    dm = _dm(tmp_path, num_workers=2, persistent_workers=False)
    with pytest.raises(SampleError, match="non-finite") as info:
        _keys(dm.val_dataloader())
    gc.collect()  # shut the workers down here rather than in a later test
    message = str(info.value)  # re-raised in the main process from the worker's message
    assert "val-00001.tar" in message and "'s4_0'" in message and "normals.npy" in message


def test_corrupt_shard_names_the_shard(tmp_path):
    _dataset(tmp_path, n_train=4, n_val=6, per_shard=3)
    shard = tmp_path / "val-00001.tar"
    size = shard.stat().st_size
    shard.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())  # same size
    dm = _dm(tmp_path)
    with pytest.raises(ShardError, match="val-00001.tar"):
        _keys(dm.val_dataloader())
    with pytest.raises(ManifestError, match="val-00001.tar: sha256"):
        _dm(tmp_path, verify_checksums=True)


def test_truncated_shard_is_caught(tmp_path):
    _dataset(tmp_path, n_train=4, n_val=6, per_shard=3)
    shard = tmp_path / "val-00000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(ManifestError, match="val-00000.tar"):
        _dm(tmp_path)  # the size check at setup
    with pytest.raises(ShardError, match=r"val-00000.tar: cannot read the tar archive after sample"):
        list(read_shard(str(shard)))
    # cut cleanly after the first sample's members: the tar reads, the count check does not pass
    import tarfile

    with tarfile.open(fileobj=__import__("io").BytesIO(data)) as tar:
        ninth = tar.getmembers()[8].offset  # first member of the second sample
    shard.write_bytes(data[:ninth])
    with pytest.raises(ShardError, match="holds 1 samples but the manifest lists 3"):
        list(read_shard(str(shard), expected=3))


# --------------------------------------------------------------------------------------------- Lightning


class _Probe(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.train_keys: list[str] = []
        self.val_keys: list[str] = []

    def training_step(self, batch: FaceBatch, batch_idx: int):
        self.train_keys += batch.keys
        return self.layer(batch.diffuse.mean(dim=(2, 3))).mean()

    def validation_step(self, batch: FaceBatch, batch_idx: int):
        self.val_keys += batch.keys

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lightning_trainer_runs_an_epoch(tmp_path):
    _dataset(tmp_path / "data", n_train=10, n_val=5, per_shard=4)
    dm = FaceDataModule(str(tmp_path / "data"), batch_size=2, seed=0, fields=["diffuse", "meta"])
    model = _Probe()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    assert len(model.train_keys) == dm.steps_per_epoch * 2 == 10
    assert sorted(model.val_keys) == sorted(k for k in load_keys(tmp_path / "data", "val"))


def load_keys(folder, split):
    manifest = load_manifest(folder)
    return [s["__key__"] for e in manifest.shards_for(split) for s in read_shard(str(folder / e.name))]


def test_hydra_config_builds_the_datamodule(tmp_path, compose_train):
    from hydra.utils import instantiate

    from fitdiff.config import validate_config

    _dataset(tmp_path / "data", n_train=6, n_val=2)
    cfg = compose_train("smoke", "data=shards", f"data.data_dir={tmp_path / 'data'}", "data.num_workers=0",
                        "data.fields=[diffuse,specular,normals]")
    validate_config(cfg)
    dm = instantiate(cfg.data)
    assert isinstance(dm, FaceDataModule) and dm.fields == AUTOENCODER_FIELDS and dm.seed == cfg.seed
    dm.setup("fit")
    assert next(iter(dm.train_dataloader())).image is None
