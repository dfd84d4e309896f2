"""encode_latents: end to end on a tiny dataset and autoencoder, statistics, determinism, resume, refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fitdiff.autoencoder import BranchedVQAutoencoder, export_safetensors, load_autoencoder
from fitdiff.data import (
    DIFFUSION_FIELDS,
    AutoencoderMismatchError,
    DatasetWriter,
    FaceCollate,
    LatentDataModule,
    decode_sample,
    load_latent_manifest,
    load_manifest,
    random_sample,
    random_spec,
    read_shard,
)
from fitdiff.io import sha256_file
from fitdiff.ldm import encode as encode_module
from fitdiff.ldm.encode import PROGRESS_NAME, encode_latents, latent_statistics
from fitdiff.ldm.latent_stats import LatentStats
from fitdiff.ldm.layout import LatentLayout
from helpers import run_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = random_spec(uv_resolution=16, shape_dim=6)
TINY = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=2, quantizer=dict(n_codes=16))


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """14 train (4 shards), 4 val (2 shards), 2 test samples."""
    folder = tmp_path_factory.mktemp("faces")
    with DatasetWriter(folder, SPEC, samples_per_shard=4) as writer:
        for i in range(20):
            split = "train" if i < 14 else "val" if i < 18 else "test"
            writer.write(split, random_sample(f"s{i // 2}_{i % 2}", SPEC, i))
    return folder


def _autoencoder(folder, seed: int):
    torch.manual_seed(seed)
    return export_safetensors(BranchedVQAutoencoder(**TINY), folder / f"ae{seed}.safetensors")


@pytest.fixture(scope="module")
def ae(tmp_path_factory):
    return _autoencoder(tmp_path_factory.mktemp("ae"), 0)


def _encode(ae, faces, out, **kwargs):
    kwargs.setdefault("batch_size", 3)
    return encode_latents(ae, faces, out, device="cpu", progress=False, **kwargs)


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".tar", ".json")}


def test_end_to_end_latents_manifest_and_statistics(tmp_path, faces, ae):
    report = _encode(ae, faces, tmp_path / "lat")
    manifest = load_latent_manifest(tmp_path / "lat")
    assert manifest.counts == {"train": 14, "val": 4, "test": 2} == load_manifest(faces).counts
    assert [e.name for e in manifest.shards] == [e.name for e in load_manifest(faces).shards]
    assert sorted(report.written) == sorted(e.name for e in manifest.shards) and not report.kept
    assert manifest.autoencoder_sha256 == sha256_file(ae) and manifest.autoencoder["config"]["embed_dim"] == 2
    assert manifest.source["manifest_sha256"] == sha256_file(faces / "manifest.json")
    assert manifest.source["shape_model"] == SPEC.shape_model and manifest.source["recognizer"] == SPEC.recognizer
    assert manifest.sample["latent_shape"] == [6, 8, 8] and manifest.sample["latent_dtype"] == "float32"
    layout = LatentLayout.from_dict(manifest.layout)
    assert layout.map_shape == (6, 8, 8) and layout.shape_dim == 6 and layout.packing == "repeat"
    manifest.check(tmp_path / "lat", verify_checksums=True)

    # the stored latents are the autoencoder's pre-quantisation latents of the face maps
    net = load_autoencoder(ae)
    face_shard = load_manifest(faces).shards_for("val")[0]
    samples = [decode_sample(raw, fields=DIFFUSION_FIELDS) for raw in read_shard(str(faces / face_shard.name))]
    with torch.no_grad():
        expected = net.encode(FaceCollate(DIFFUSION_FIELDS)(samples))
    dm = LatentDataModule(str(tmp_path / "lat"), autoencoder=str(ae), batch_size=4, seed=0)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch.keys == [s.key for s in samples]
    assert torch.allclose(batch.latent, expected, atol=1e-5)
    assert torch.equal(batch.shape, torch.from_numpy(np.stack([s.shape for s in samples])))

    # statistics: numpy mean / std over the valid elements of every packed training latent
    dm.setup("test")
    train = LatentDataModule(str(tmp_path / "lat"), batch_size=4, seed=0)
    train.setup("fit")
    stream = train.eval_stream([str(tmp_path / "lat" / e.name) for e in manifest.shards_for("train")],
                               sample=manifest.sample)
    packed = [layout.pack(torch.from_numpy(s.latent[None]).double(), torch.from_numpy(s.shape[None]).double())
              for s in stream]
    everything = torch.cat(packed).numpy()
    mask = layout.loss_mask()[0].numpy() > 0
    stats = LatentStats.from_dict(manifest.statistics)
    assert stats.samples == 14 and len(packed) == 14
    for c in range(layout.channels):
        values = everything[:, c][:, mask[c]]
        assert stats.mean[c] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
        assert stats.std[c] == pytest.approx(values.std(), rel=1e-9)


def test_on_the_fly_statistics_equal_the_manifest(tmp_path, faces, ae):
    _encode(ae, faces, tmp_path / "lat")
    stats = latent_statistics(load_autoencoder(ae), faces, batch_size=3, progress=False)
    assert stats == LatentStats.from_dict(load_latent_manifest(tmp_path / "lat").statistics)


def test_output_is_deterministic_and_resumes_after_an_interruption(tmp_path, faces, ae, monkeypatch):
    _encode(ae, faces, tmp_path / "clean")
    clean = _files(tmp_path / "clean")

    calls = {"n": 0}
    original = encode_module.load_autoencoder

    def interrupted(*args, **kwargs):  # the 6th encoder batch fails: inside the third train shard
        net = original(*args, **kwargs)
        encode = net.encode

        def failing(*a, **k):
            calls["n"] += 1
            if calls["n"] == 6:
                raise KeyboardInterrupt
            return encode(*a, **k)

        net.encode = failing
        return net

    monkeypatch.setattr(encode_module, "load_autoencoder", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _encode(ae, faces, out)
    monkeypatch.setattr(encode_module, "load_autoencoder", original)
    assert not (out / "latents.json").exists()
    progress = json.loads((out / PROGRESS_NAME).read_text())
    assert sorted(progress["shards"]) == ["train-00000.tar", "train-00001.tar"]
    assert not list(out.glob("*.partial"))
    (out / "train-00002.tar.partial").write_bytes(b"left by a killed run")
    (out / "train-00001.tar").write_bytes(b"damaged")  # recorded but no longer intact: redone

    report = _encode(ae, faces, out)
    assert report.kept == ["train-00000.tar"]
    assert "train-00001.tar" in report.written and "train-00002.tar" in report.written
    assert _files(out) == clean  # bit-identical to the uninterrupted run, manifest included
    assert not list(out.glob("*.partial"))
    again = _encode(ae, faces, out)
    assert not again.written and len(again.kept) == len(list(out.glob("*.tar"))) == 6
    assert _files(out) == clean


def test_other_autoencoder_is_refused_unless_overwrite(tmp_path, faces, ae):
    _encode(ae, faces, tmp_path / "lat")
    other = _autoencoder(tmp_path, 1)
    with pytest.raises(FileExistsError) as info:
        _encode(other, faces, tmp_path / "lat")
    assert sha256_file(ae) in str(info.value) and sha256_file(other) in str(info.value)
    report = _encode(other, faces, tmp_path / "lat", overwrite=True)
    assert not report.kept and load_latent_manifest(tmp_path / "lat").autoencoder_sha256 == sha256_file(other)
    dm = LatentDataModule(str(tmp_path / "lat"), autoencoder=str(ae), batch_size=4, seed=0)
    with pytest.raises(AutoencoderMismatchError, match=sha256_file(ae)):
        dm.setup("fit")


def test_output_folder_must_not_be_the_face_folder_and_old_shards_go(tmp_path, faces, ae):
    with pytest.raises(ValueError, match="face-shard folder"):
        _encode(ae, faces, faces)
    (tmp_path / "lat").mkdir()
    stale = tmp_path / "lat" / "train-00009.tar"
    stale.write_bytes(b"old")
    _encode(ae, faces, tmp_path / "lat")
    data = json.loads((tmp_path / "lat" / "latents.json").read_text())
    data["shards"].append({**data["shards"][0], "name": "train-00009.tar"})  # as if an earlier dataset had it
    (tmp_path / "lat" / "latents.json").write_text(json.dumps(data))
    _encode(ae, faces, tmp_path / "lat")
    assert not stale.exists() and load_latent_manifest(tmp_path / "lat").counts["train"] == 14


def test_float16_storage_and_flat_packing(tmp_path, faces, ae):
    _encode(ae, faces, tmp_path / "lat", latent_dtype="float16", packing="flat", batch_size=8)
    manifest = load_latent_manifest(tmp_path / "lat")
    assert manifest.sample["latent_dtype"] == "float16" and manifest.layout["packing"] == "flat"
    dm = LatentDataModule(str(tmp_path / "lat"), autoencoder=str(ae), batch_size=4, seed=0)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader())).latent.dtype == torch.float32


@pytest.mark.slow
def test_command_line(tmp_path, faces, ae):
    args = ("data_prep/encode_latents.py", "--autoencoder", str(ae), "--data", str(faces), "--out",
            str(tmp_path / "lat"), "--batch-size", "4", "--device", "cpu", "--no-progress")
    result = run_script(*args)
    assert result.returncode == 0, result.stderr
    assert "train 14, val 4, test 2" in result.stdout and sha256_file(ae) in result.stdout
    result = run_script(*args[:2], str(tmp_path / "missing.safetensors"), *args[3:])
    assert result.returncode == 1 and "missing.safetensors" in result.stderr
