"""The demo's backend (no page): reconstruct, sample, relight, package, and the errors users see."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from fitdiff.demo.backend import DemoBackend, DemoCancelled, DemoError, DemoSettings, parse_color

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

FAST = ["sampler.num_inference_steps=3"]


@pytest.fixture(scope="module")
def backend(tiny_ldm_checkpoint, latent_dataset, tiny_synthetic, tiny_detector, tmp_path_factory):
    settings = DemoSettings(ckpt=tiny_ldm_checkpoint, data_dir=tiny_synthetic,
                            work_dir=tmp_path_factory.mktemp("demo_work"), recognizer="synthetic_recognizer",
                            recognizer_weights=latent_dataset.recognizer, examples=3)
    assert settings.detector_weights == tiny_detector  # found in the dataset folder
    demo = DemoBackend(settings)
    # a short sampler for the tests: the sessions are built on first use, with these overrides
    original = demo._session

    def short(preset, cfg_scale):
        session = original(preset, cfg_scale)
        session.config.sampler.num_inference_steps = 3
        session.config.polish.steps = min(session.config.polish.steps, 2)
        return session

    demo._session = short
    return demo


def test_examples_are_held_out_photos_with_landmarks(backend, tiny_synthetic):
    examples = backend.examples()
    assert 1 <= len(examples) <= 3
    for photo, landmarks in examples:
        assert Image.open(photo).size == (64, 64)
        assert np.load(landmarks).shape == (68, 2)
    assert backend.examples() == examples  # written once


def test_reconstruct_writes_the_viewer_files_and_relights(backend):
    import trimesh

    photo, landmarks = backend.examples()[0]
    steps = []
    result = backend.reconstruct(photo, landmarks, "unguided", seed=1, cfg_scale=1.0, client="a",
                                 progress=lambda f, d: steps.append((f, d)))
    assert any(d.startswith("sampling (unguided): step 3/3") for _, d in steps)
    mesh = trimesh.load(result.glb, force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.uv is not None
    with zipfile.ZipFile(result.obj_zip) as archive:
        assert sorted(archive.namelist()) == ["avatar.mtl", "avatar.obj", "avatar_diffuse.png",
                                              "avatar_normals.png", "avatar_specular.png"]
    assert Image.open(result.maps).size[0] == 3 * Image.open(result.folder / "avatar_diffuse.png").size[0]
    assert "Identity similarity" in result.summary and result.record["seed"] == 1
    left = np.asarray(Image.open(backend.relight(result.key, -60, 20, "#ffffff", 1.0)), dtype=np.float32)
    right = np.asarray(Image.open(backend.relight(result.key, 60, 20, "#ffffff", 1.0)), dtype=np.float32)
    red = np.asarray(Image.open(backend.relight(result.key, 60, 20, "#ff0000", 1.0)), dtype=np.float32)
    photo_pixels = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32)
    face = np.abs(left - photo_pixels).max(-1) > 0  # where the avatar covers the photo
    assert face.any() and np.abs(left - right)[face].mean() > 1.0
    assert (red[..., 1] <= right[..., 1] + 1e-3).all() and (red[..., 1] < right[..., 1])[face].mean() > 0.5


def test_the_same_seed_gives_the_same_avatar(backend):
    photo, landmarks = backend.examples()[0]
    a = backend.reconstruct(photo, landmarks, "unguided", seed=5)
    b = backend.reconstruct(photo, landmarks, "unguided", seed=5)
    assert a.record["shape"] == b.record["shape"] and a.folder != b.folder


def test_detected_landmarks_and_no_face(backend, tmp_path):
    photo, _ = backend.examples()[0]
    result = backend.reconstruct(photo, None, "unguided", seed=0)
    assert result.record["landmarks"] == "detected"
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((64, 64, 3), 140, np.uint8)).save(blank)
    with pytest.raises(DemoError, match="no face found in .*wall.png"):
        backend.reconstruct(blank, None, "unguided")


def test_unreadable_and_too_large_photos(backend, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DemoError, match="broken.png"):
        backend.reconstruct(broken, None, "unguided")
    huge = tmp_path / "huge.png"
    Image.new("RGB", (8000, 6000)).save(huge)  # 48 M pixels: refused before decoding
    with pytest.raises(DemoError, match="huge.png.*pixels"):
        backend.reconstruct(huge, None, "unguided")
    with pytest.raises(DemoError, match="Upload a photo"):
        backend.reconstruct(None)


def test_cancel_stops_at_the_next_step(backend):
    photo, landmarks = backend.examples()[0]

    def cancel_after_first(fraction, _):
        if fraction > 0:
            backend.cancel("b")

    with pytest.raises(DemoCancelled):
        backend.reconstruct(photo, landmarks, "unguided", client="b", progress=cancel_after_first)
    assert backend.reconstruct(photo, landmarks, "unguided", client="b").glb.is_file()  # a new request runs


def test_unconditional_sample(backend):
    import trimesh

    result = backend.sample(seed=2)
    assert trimesh.load(result.glb, force="mesh").faces.shape[1] == 3
    assert result.record["mode"] == "unconditional"
    assert backend.relight(result.key, 0, 0).is_file()


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    demo = DemoBackend(DemoSettings(ckpt=tmp_path / "none.ckpt", data_dir=tmp_path, work_dir=tmp_path / "w"))
    assert "make quickstart" in demo.status()
    with pytest.raises(DemoError, match="make quickstart"):
        demo.reconstruct(tmp_path / "x.png")
    with pytest.raises(DemoError, match="Nothing to relight"):
        demo.relight("nope", 0, 0)


def test_parse_color():
    assert parse_color("#ff8000") == (1.0, 128 / 255, 0.0)
    assert parse_color("#fff") == (1.0, 1.0, 1.0)
    assert parse_color("rgba(255, 0, 51, 1)") == (1.0, 0.0, 0.2)
    with pytest.raises(DemoError, match="not #rrggbb"):
        parse_color("blue-ish")
    assert torch.is_tensor(torch.tensor(parse_color("#000")))
