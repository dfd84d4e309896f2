"""python -m fitdiff.complete: partial maps from a folder or a dataset sample, the files it writes, its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fitdiff.complete import CompletionError, load_partial_maps, main
from helpers import run_main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _mask(path, res: int) -> None:
    known = np.zeros((res, res), np.uint8)
    known[:, : res // 2] = 255
    Image.fromarray(known).save(path)


def test_a_dataset_sample_completed_with_its_own_identity(tiny_ldm_checkpoint, latent_dataset, tmp_path, capsys):
    import trimesh

    _mask(tmp_path / "mask.png", 32)
    rc, err = run_main(main, "--ckpt", str(tiny_ldm_checkpoint), "--maps", f"{latent_dataset.faces}:s8_0",
                       "--mask", str(tmp_path / "mask.png"), "--identity", "stored", "--steps", "3",
                       "--out", str(tmp_path / "out"), capsys=capsys)
    assert rc == 0, err
    out = tmp_path / "out"
    record = json.loads((out / "completion.json").read_text())
    assert record["maps_given"] == ["diffuse", "normals", "specular"] and abs(record["hidden_share"] - 0.5) < 1e-6
    assert record["identity"] == "stored" and len(record["checkpoint_sha256"]) == 64
    assert trimesh.load(out / "completed.glb", force="mesh").faces.shape[1] == 3
    assert Image.open(out / "comparison.png").size == (3 * 32, 64)

    # the written maps, read back as a folder, are a valid --maps input of the same size
    again, extra = load_partial_maps(str(out))
    assert sorted(again) == ["diffuse", "normals", "specular"] and again["diffuse"].shape == (1, 3, 32, 32)
    assert extra == {}


def test_errors_name_the_input(tiny_ldm_checkpoint, latent_dataset, tmp_path, capsys):
    _mask(tmp_path / "mask.png", 32)
    base = ["--ckpt", str(tiny_ldm_checkpoint), "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "o")]
    rc, err = run_main(main, *base, "--maps", str(tmp_path / "nothing"), capsys=capsys)
    assert rc == 1 and "neither a folder nor DATASET:KEY" in err
    (tmp_path / "empty").mkdir()
    rc, err = run_main(main, *base, "--maps", str(tmp_path / "empty"), capsys=capsys)
    assert rc == 1 and "no *diffuse*.png" in err
    rc, err = run_main(main, *base, "--maps", f"{latent_dataset.faces}:nope", capsys=capsys)
    assert rc == 1 and "no sample 'nope'" in err
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "empty" / "small_diffuse.png")
    rc, err = run_main(main, *base, "--maps", str(tmp_path / "empty"), capsys=capsys)
    assert rc == 1 and "16 x 16 maps; the checkpoint's are 32 x 32" in err
    rc, err = run_main(main, *base, "--maps", str(tmp_path / "empty"), "--identity", "stored", capsys=capsys)
    assert rc == 1
    with pytest.raises(CompletionError, match="several diffuse maps"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "empty" / "other_diffuse.png")
        load_partial_maps(str(tmp_path / "empty"))
    rc, err = run_main(main, "--ckpt", str(tmp_path / "no.ckpt"), "--maps", "x", "--mask", "m.png", "--out", "o",
                       capsys=capsys)
    assert rc == 1 and "no checkpoint at" in err and "make quickstart" in err
