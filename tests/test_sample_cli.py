"""python -m fitdiff.sample: avatars (OBJ + GLB) and a grid from a checkpoint; identity inputs and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import run_main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def checkpoint(tiny_ldm_checkpoint):
    return tiny_ldm_checkpoint


def test_unconditional_and_embedding_samples_are_written_and_reproducible(checkpoint, tmp_path):
    import trimesh

    from fitdiff.sample import sample_avatars

    a = sample_avatars(checkpoint, tmp_path / "a", n=2, steps=3, seed=1)
    b = sample_avatars(checkpoint, tmp_path / "b", n=2, steps=3, seed=1)
    assert a["shape"] == b["shape"] and a["identity"] == "unconditional" and a["guidance_scale"] is None
    for name in ("sample_00.obj", "sample_00.mtl", "sample_00_diffuse.png", "sample_01.glb", "grid.png",
                 "samples.json"):
        assert (tmp_path / "a" / name).is_file(), name
    mesh = trimesh.load(tmp_path / "a" / "sample_01.glb", force="mesh")
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    record = json.loads((tmp_path / "a" / "samples.json").read_text())
    assert record["sampler"]["num_inference_steps"] == 3 and len(record["checkpoint_sha256"]) == 64

    emb = np.random.default_rng(0).normal(size=512).astype(np.float32)
    np.save(tmp_path / "id.npy", emb)
    from fitdiff.sample import load_identity

    identity = load_identity(tmp_path / "id.npy")
    assert torch.allclose(identity.norm(), torch.tensor(1.0))
    c = sample_avatars(checkpoint, tmp_path / "c", n=2, identity=identity, guidance_scale=2.0, steps=3, seed=1,
                       formats=("glb",))
    assert c["guidance_scale"] == 2.0 and c["shape"] != a["shape"]


def test_command_line_errors_name_the_file(checkpoint, tmp_path, capsys):
    from fitdiff.sample import main

    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros(7, dtype=np.float32))
    rc, err = run_main(main, "--ckpt", str(checkpoint), "--identity", str(bad), "--n", "1",
                       "--out", str(tmp_path / "out"), capsys=capsys)
    assert rc == 1 and "bad.npy" in err and "512" in err
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(photo)
    rc, err = run_main(main, "--ckpt", str(checkpoint), "--identity", str(photo), "--n", "1",
                       "--out", str(tmp_path / "out"), capsys=capsys)
    # no landmarks given and no detector weights here: the error names the photo and how to proceed
    assert rc == 1 and "photo.png" in err, err
    rc, err = run_main(main, "--ckpt", str(tmp_path / "none.ckpt"), "--n", "1", "--out", str(tmp_path / "out"),
                       capsys=capsys)
    assert rc == 1 and "none.ckpt" in err
