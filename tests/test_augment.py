"""Dataset augmentation: sampled avatars rendered into new face shards that the DataModule reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fitdiff.sample import main
from helpers import run_main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_render_dataset_writes_validated_shards(tiny_ldm_checkpoint, latent_dataset, tmp_path, capsys):
    from fitdiff.data import FaceDataModule
    from fitdiff.data.manifest import load_manifest

    out = tmp_path / "augmented"
    rc, err = run_main(main, "--ckpt", str(tiny_ldm_checkpoint), "--n", "3", "--render-dataset", str(out), "--views",
                       "2", "--image-res", "64", "--steps", "3", "--recognizer", "synthetic_recognizer",
                       "--recognizer-weights", str(latent_dataset.recognizer), capsys=capsys)
    assert rc == 0, err
    manifest = load_manifest(out)
    assert manifest.counts["train"] == 6 and manifest.spec.recognizer.startswith("synthetic_recognizer@sha256:")
    dm = FaceDataModule(str(out), batch_size=3, seed=0, shuffle_buffer=0, validate_samples=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))  # every sample passes the schema check on the way
    assert batch.image.shape[-2:] == (64, 64)
    assert torch.allclose(batch.identity.norm(dim=1), torch.ones(3), atol=1e-3)
    subjects = {k.split("_")[0] for k in batch.keys}
    assert subjects <= {"aug00000", "aug00001", "aug00002"}

    # the same seed writes the same bytes; identities given are used (one avatar per row)
    again = tmp_path / "again"
    emb = tmp_path / "ids.npy"
    np.save(emb, np.random.default_rng(0).normal(size=(2, 512)).astype(np.float32))
    rc, err = run_main(main, "--ckpt", str(tiny_ldm_checkpoint), "--render-dataset", str(again), "--views", "1",
                       "--image-res", "64", "--steps", "3", "--identities", str(emb), "--recognizer",
                       "synthetic_recognizer", "--recognizer-weights", str(latent_dataset.recognizer), capsys=capsys)
    assert rc == 0, err
    assert load_manifest(again).counts["train"] == 2
    first = json.loads((out / "manifest.json").read_text())
    rc, _ = run_main(main, "--ckpt", str(tiny_ldm_checkpoint), "--n", "3", "--render-dataset", str(tmp_path / "b"),
                     "--views", "2", "--image-res", "64", "--steps", "3", "--recognizer", "synthetic_recognizer",
                     "--recognizer-weights", str(latent_dataset.recognizer), capsys=capsys)
    assert rc == 0
    second = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in second["shards"]]
    rc, err = run_main(main, "--ckpt", str(tiny_ldm_checkpoint), "--render-dataset", str(tmp_path / "c"),
                       "--identities", str(tmp_path / "ids_missing.npy"), capsys=capsys)
    assert rc == 1 and "ids_missing.npy" in err
