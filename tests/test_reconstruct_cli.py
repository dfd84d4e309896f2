"""python -m fitdiff.reconstruct: every output file from one photo, batch mode, and errors that name the input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from helpers import run_main, run_script

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

FAST = ["--set", "sampler.num_inference_steps=3", "--recognizer", "synthetic_recognizer"]
OUTPUTS = ("avatar.obj", "avatar.mtl", "avatar_diffuse.png", "avatar_specular.png", "avatar_normals.png",
           "avatar.glb", "render.png", "relit_left.png", "relit_right.png", "relit_top.png", "side_by_side.png",
           "fit.json")


@pytest.fixture(scope="module")
def checkpoint(tiny_ldm_checkpoint):
    return tiny_ldm_checkpoint


@pytest.fixture(scope="module")
def photo(checkpoint, tmp_path_factory):
    """A rendered face of the checkpoint's shape model (96x96 PNG) and its 68 landmarks (.npy)."""
    from PIL import Image

    from fitdiff.face.scene import FaceScene
    from fitdiff.fitting.scene_params import SceneParameters
    from fitdiff.ldm.module import LatentDiffusionModule
    from fitdiff.render import PerspectiveCamera, look_at
    from fitdiff.render.lighting import ambient_sh

    model = LatentDiffusionModule.load_checkpoint(checkpoint).shape_model()
    scene = FaceScene(model)
    rot, trans = look_at(torch.tensor([[80.0, 30.0, 560.0]]), at=torch.tensor([0.0, 0.0, 40.0]))
    camera = PerspectiveCamera.from_fov(rot, trans, (96, 96), fov_degrees=25.0, znear=10.0)
    lights = SceneParameters(camera, ambient_sh(0.9, 1)).lights()
    maps = torch.full((1, 3, 32, 32), 0.6), torch.full((1, 1, 32, 32), 0.2), torch.tensor([0.0, 0.0, 1.0]).view(
        1, 3, 1, 1).expand(1, 3, 32, 32)
    with torch.no_grad():
        out = scene(torch.zeros(1, model.n_components), *maps, camera, lights, background=0.35)
    folder = tmp_path_factory.mktemp("photos")
    image = (out.image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(image).save(folder / "face.png")
    np.save(folder / "face.npy", out.landmarks[0].numpy())
    return folder / "face.png", folder / "face.npy"


def test_reconstruct_writes_every_file_and_trimesh_loads_them(checkpoint, photo, latent_dataset, tmp_path):
    import trimesh

    image, landmarks = photo
    out = tmp_path / "recon"
    result = run_script("-m", "fitdiff.reconstruct", "--ckpt", str(checkpoint), "--image", str(image),
                        "--landmarks", str(landmarks), "--recognizer-weights", str(latent_dataset.recognizer),
                        "--out", str(out), "--seed", "3", *FAST)
    assert result.returncode == 0, result.stderr
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    glb = trimesh.load(out / "avatar.glb", force="mesh")
    obj = trimesh.load(out / "avatar.obj", force="mesh")
    for mesh in (glb, obj):
        assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
        assert mesh.visual.kind == "texture" and mesh.visual.uv is not None
    assert obj.visual.material.image is not None
    assert glb.visual.material.baseColorTexture is not None
    record = json.loads((out / "fit.json").read_text())
    assert record["seed"] == 3 and record["preset"]["name"] == "guided_x0" and len(record["checkpoint_sha256"]) == 64
    assert record["steps"] and {"total", "identity", "landmarks", "pixel"} <= set(record["steps"][0])
    assert -1.0 <= record["identity_similarity"] <= 1.0 and len(record["camera"]["R"]) == 3
    assert len(record["lighting"]["sh"]) == 9 and record["seconds"] > 0
    from PIL import Image

    with Image.open(out / "side_by_side.png") as side:
        assert side.size == (96 * 5, 96)  # photo, fit and three relit renders


def test_batch_mode_writes_a_folder_per_photo_and_a_summary(checkpoint, photo, latent_dataset, tmp_path):
    import shutil

    image, landmarks = photo
    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in ("a", "b"):
        shutil.copy(image, photos / f"{stem}.png")
        shutil.copy(landmarks, photos / f"{stem}.npy")
    out = tmp_path / "batch"
    result = run_script("-m", "fitdiff.reconstruct", "--ckpt", str(checkpoint), "--image", str(photos),
                        "--recognizer-weights", str(latent_dataset.recognizer), "--out", str(out),
                        "--preset", "unguided", *FAST)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["photo"] for r in rows] == ["a.png", "b.png"]
    for stem in ("a", "b"):
        assert (out / stem / "avatar.glb").is_file() and (out / stem / "fit.json").is_file()


def test_errors_name_the_input_and_write_nothing(checkpoint, photo, latent_dataset, tmp_path, capsys):
    from fitdiff.reconstruct import main

    image, landmarks = photo
    base = ["--ckpt", str(checkpoint), "--recognizer-weights",
            str(latent_dataset.recognizer), *FAST]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    bad_landmarks = tmp_path / "bad.npy"
    np.save(bad_landmarks, np.zeros((7, 2), dtype=np.float32))
    cases = [
        (["--image", str(empty), "--landmarks", str(landmarks)], "empty.png", "0 bytes"),
        (["--image", str(garbage), "--landmarks", str(landmarks)], "garbage.png", "not a readable image"),
        (["--image", str(image), "--landmarks", str(bad_landmarks)], "bad.npy", "(68, 2) or (5, 2)"),
        (["--image", str(image)], "face.png", "retinaface"),  # no landmarks and no detector weights here
        (["--image", str(tmp_path / "missing.png"), "--landmarks", str(landmarks)], "missing.png", "no file"),
    ]
    for i, (args, name, words) in enumerate(cases):
        out = tmp_path / f"out{i}"
        rc, err = run_main(main, *base, *args, "--out", str(out), capsys=capsys)
        assert rc == 1 and name in err and words in err, (args, err)
        assert not out.exists()
    rc, err = run_main(main, "--ckpt", str(tmp_path / "none.ckpt"), "--image", str(image),
                       "--landmarks", str(landmarks), "--out", str(tmp_path / "x"), capsys=capsys)
    assert rc == 1 and "none.ckpt" in err and "quickstart" in err
