"""python -m fitdiff.complete: partial maps from a folder or a dataset sample, the files it writes, its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
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


def test_a_reconstructed_photo_is_unwrapped_and_completed(tiny_ldm_checkpoint, latent_dataset, tmp_path, capsys):
    """--from-fit: the photo's visible texels are known (de-lit with the fitted lights), the rest sampled."""
    from fitdiff import reconstruct
    from fitdiff.face.scene import FaceScene
    from fitdiff.fitting.scene_params import SceneParameters
    from fitdiff.ldm.module import LatentDiffusionModule
    from fitdiff.render import PerspectiveCamera, look_at
    from fitdiff.render.lighting import ambient_sh

    model = LatentDiffusionModule.load_checkpoint(tiny_ldm_checkpoint).shape_model()
    rot, trans = look_at(torch.tensor([[120.0, 30.0, 560.0]]), at=torch.tensor([0.0, 0.0, 40.0]))
    camera = PerspectiveCamera.from_fov(rot, trans, (96, 96), fov_degrees=25.0, znear=10.0)
    maps = torch.full((1, 3, 32, 32), 0.6), torch.full((1, 1, 32, 32), 0.0), torch.tensor([0.0, 0.0, 1.0]).view(
        1, 3, 1, 1).expand(1, 3, 32, 32)
    with torch.no_grad():
        out = FaceScene(model)(torch.zeros(1, model.n_components), *maps, camera,
                               SceneParameters(camera, ambient_sh(0.9, 1)).lights(), background=0.35)
    Image.fromarray((out.image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "p.png")
    np.save(tmp_path / "p.npy", out.landmarks[0].numpy())
    rc, err = run_main(reconstruct.main, "--ckpt", str(tiny_ldm_checkpoint), "--image", str(tmp_path / "p.png"),
                       "--landmarks", str(tmp_path / "p.npy"), "--recognizer", "synthetic_recognizer",
                       "--recognizer-weights", str(latent_dataset.recognizer), "--preset", "unguided",
                       "--set", "sampler.num_inference_steps=3", "--out", str(tmp_path / "recon"), capsys=capsys)
    assert rc == 0, err
    rc, err = run_main(main, "--ckpt", str(tiny_ldm_checkpoint), "--from-fit", str(tmp_path / "recon"), "--steps", "3",
                       "--recognizer", "synthetic_recognizer",
                       "--recognizer-weights", str(latent_dataset.recognizer), "--out", str(tmp_path / "done"),
                       capsys=capsys)
    assert rc == 0, err
    record = json.loads((tmp_path / "done" / "completion.json").read_text())
    assert record["maps_given"] == ["diffuse"] and record["shape_given"] and 0.2 < record["hidden_share"] < 0.95
    assert record["identity"] == "the photo's"
    mask = np.asarray(Image.open(tmp_path / "done" / "mask.png").convert("L")) > 127
    assert mask.shape == (32, 32) and 0 < mask.mean() < 0.8
    rc, err = run_main(main, "--ckpt", str(tiny_ldm_checkpoint), "--from-fit", str(tmp_path), "--out",
                       str(tmp_path / "x"), capsys=capsys)
    assert rc == 1 and "no fit.json" in err
