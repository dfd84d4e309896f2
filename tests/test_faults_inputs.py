"""Bad photos, configs and checkpoints, and what the user sees; nothing half-written is left behind.

Shard faults: ``tests/test_faults.py``. Photo limits: :mod:`fitdiff.face.photo` (40 M pixels, read from the
header before decoding; longest side 2048 on load).

=====================================  ===============================================================  ==============================================
bad input                              what the user sees                                               test
=====================================  ===============================================================  ==============================================
no landmarks, no detector weights      "<photo>: no --landmarks and no --aligned given, and face         test_photo_without_landmarks_names_the_detector_asset
                                       detection is not available: missing asset 'retinaface_resnet50'
                                       ... python -m fitdiff.assets fetch retinaface_resnet50"
a photo with no face                   "no face found in <photo>; pass --landmarks (68 or 5 points) or   test_photo_with_no_face_suggests_landmarks
                                       --aligned" (sample: "--identity: no face found in <photo> ...;
                                       pass its landmarks with --landmarks ...")
a 0-byte image                         "--image <photo>: the file is empty (0 bytes)"                   test_empty_image_says_0_bytes
a decompression bomb (20000^2 PNG)     "--image <photo>: 400,000,000 pixels is more than the            test_decompression_bomb_is_refused_before_decoding
and a 8000 x 6000 PNG                  40,000,000 pixels a photo may have ...; nothing was decoded:
                                       downscale it"; the pixel data is never decoded
a 6000 x 4000 photo (JPEG, PNG)        fitted at 2048 x 1365, its landmark file scaled alike; the fit    test_large_photo_is_downscaled_with_its_landmarks
                                       gets the same inputs as for a small photo
unknown config key +model.net.chh=8    ConfigError naming "model.net.chh"                               test_unknown_config_key_is_named
an autoencoder ckpt for sampling /     "--ckpt: <ckpt> is a checkpoint of the autoencoder stage          test_sample_and_reconstruct_refuse_an_autoencoder_checkpoint
reconstruction / result tables         (fitdiff.autoencoder.AutoencoderModule), but the diffusion stage
                                       (fitdiff.ldm.LatentDiffusionModule) is expected here; pass ..."
                                       (tables: "ckpts: <ckpt> is a checkpoint of ...")
model.autoencoder = a diffusion ckpt   CheckpointStageError "... is a checkpoint of the diffusion        test_diffusion_checkpoint_as_autoencoder_is_refused
                                       stage ..., but the autoencoder stage ... is expected here"
ckpt_path of another stage (train.py,  the same message for ckpt_path, before any data or model is built     test_train_and_evaluate_refuse_a_checkpoint_of_another_stage
evaluate.py)
disk full while writing a checkpoint   DiskFullError "cannot write <run>/.last.ckpt.tmp: the disk is     test_disk_full_while_checkpointing_keeps_the_previous_checkpoint
                                       full ..."; last.ckpt and last-prev.ckpt intact, no temp file
=====================================  ===============================================================  ==============================================
"""

from __future__ import annotations

import inspect
import struct
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from fitdiff import reconstruct
from fitdiff.config import ConfigError, validate_config
from fitdiff.config.checkpoint_kind import CheckpointStageError, check_checkpoint_stage
from fitdiff.face import detection
from fitdiff.face.photo import MAX_PHOTO_PIXELS, MAX_PHOTO_SIDE, PhotoError, read_photo
from fitdiff.io import DiskFullError
from fitdiff.sample import load_identity
from helpers import full_disk, leftovers, run_main


def _small_photo(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path)
    return path


class _NoFaceDetector:
    """Stands in for :class:`FaceDetector` (whose weights are an asset): it finds no face."""

    score_threshold = 0.8
    detect_one = detection.FaceDetector.detect_one

    def __init__(self, *args, **kwargs) -> None:
        pass

    def detect(self, image):
        return []


# ------------------------------------------------------------------------------------------- photos

def test_photo_without_landmarks_names_the_detector_asset(tmp_path):
    """No --landmarks / --aligned and no detector weights offline: the message names the asset to fetch."""
    photo = _small_photo(tmp_path / "face.png")
    with pytest.raises(reconstruct.ReconstructionError) as info:
        reconstruct.photo_landmarks(reconstruct.load_photo(photo).pixels, photo, None, aligned=False)
    message = str(info.value)
    assert message.startswith(f"{photo}: no --landmarks and no --aligned given, and face detection is not available")
    assert "missing asset 'retinaface_resnet50'" in message
    assert "python -m fitdiff.assets fetch retinaface_resnet50" in message


def test_photo_with_no_face_suggests_landmarks(tmp_path, monkeypatch):
    """The detector runs and finds nothing: both commands name the photo and say what to pass instead."""
    photo = _small_photo(tmp_path / "landscape.png")
    monkeypatch.setattr(detection, "FaceDetector", _NoFaceDetector)
    with pytest.raises(reconstruct.ReconstructionError) as info:
        reconstruct.photo_landmarks(reconstruct.load_photo(photo).pixels, photo, None, aligned=False)
    assert str(info.value) == f"no face found in {photo}; pass --landmarks (68 or 5 points) or --aligned"
    with pytest.raises(RuntimeError) as info:
        load_identity(photo)
    assert str(info.value) == (f"--identity: no face found in {photo} (64 x 48 pixels); pass its landmarks with "
                               "--landmarks (a .npy of 5 or 68 points, image pixels)")


def test_empty_image_says_0_bytes(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(reconstruct.ReconstructionError, match=rf"^--image {empty}: the file is empty \(0 bytes\)$"):
        reconstruct.load_photo(empty)
    with pytest.raises(PhotoError, match=rf"^--identity {empty}: the file is empty \(0 bytes\)$"):
        load_identity(empty)
    assert empty.read_bytes() == b""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _zero_png(path: Path, width: int, height: int, bit_depth: int) -> Path:
    """A real greyscale PNG of zeros, compressed row block by row block: small on disk, huge decoded."""
    row = b"\0" * (1 + (width * bit_depth + 7) // 8)  # filter byte + pixels
    packer = zlib.compressobj(9)
    block = row * 1000
    body = b"".join(packer.compress(block) for _ in range(height // 1000)) + packer.compress(row * (height % 1000))
    body += packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {"bomb": _zero_png(folder / "bomb.png", 20000, 20000, 1),  # PIL itself refuses it (> 179 M pixels)
            "big": _zero_png(folder / "big.png", 8000, 6000, 8)}  # under PIL's limit, over ours


@pytest.fixture
def decodes(monkeypatch) -> list[tuple[int, int]]:
    """The image sizes PIL decodes pixel data at (every ``ImageFile.load``)."""
    sizes: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def spy(self):
        sizes.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


@pytest.mark.parametrize(("name", "pixels", "size"), [("bomb", "400,000,000", ""),
                                                       ("big", "48,000,000", "8000 x 6000 = ")])
@pytest.mark.parametrize("loader", ["reconstruct", "sample"])
def test_decompression_bomb_is_refused_before_decoding(bombs, decodes, name, pixels, size, loader):
    """A PNG whose header claims more pixels than the limit: refused from the header, nothing decoded."""
    path = bombs[name]
    assert path.stat().st_size < 600_000
    option, error = ("--image", reconstruct.ReconstructionError) if loader == "reconstruct" else ("--identity",
                                                                                                  PhotoError)
    with pytest.raises(error) as info:
        reconstruct.load_photo(path) if loader == "reconstruct" else load_identity(path)
    assert str(info.value).startswith(f"{option} {path}: {size}{pixels} pixels is more than the "
                                      f"{MAX_PHOTO_PIXELS:,} pixels a photo may have"), str(info.value)
    assert "nothing was decoded: downscale it" in str(info.value)
    assert decodes == []


@pytest.fixture(scope="module")
def large_photos(tmp_path_factory) -> SimpleNamespace:
    """6000 x 4000 photos (JPEG, PNG) with a bright square around (4500, 1000) and its landmark file."""
    folder = tmp_path_factory.mktemp("large")
    image = Image.new("RGB", (6000, 4000), (90, 60, 40))
    image.paste((255, 255, 255), (4460, 960, 4540, 1040))
    paths = {}
    for suffix in ("jpg", "png"):
        paths[suffix] = folder / f"large.{suffix}"
        image.save(paths[suffix], quality=90) if suffix == "jpg" else image.save(paths[suffix], compress_level=1)
    image.resize((600, 400), Image.Resampling.BOX).save(folder / "small.png")
    points = np.random.default_rng(0).uniform([100, 100], [5900, 3900], size=(68, 2)).astype(np.float32)
    points[30] = (4500.0, 1000.0)  # the nose tip, on the bright square
    np.save(folder / "large.npy", points)
    np.save(folder / "small.npy", points / 10.0)
    return SimpleNamespace(paths=paths, small=folder / "small.png", landmarks=folder / "large.npy",
                           small_landmarks=folder / "small.npy", points=points)


class _Reached(Exception):
    """Raised by :class:`_FitSpy`: the reconstruction got as far as the fit."""


class _FitSpy:
    """The reconstructor of a session: records what the fit would get, then stops."""

    def __call__(self, photos, landmarks, generator=None):
        self.photos, self.landmarks = photos, landmarks
        raise _Reached


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_large_photo_is_downscaled_with_its_landmarks(large_photos, decodes, tmp_path, suffix):
    """A 6000 x 4000 photo reaches the fit like a small one, at 2048 x 1365, its landmarks scaled alike.

    Memory: no array of the file's full size is ever made (the largest Python / numpy allocation is the
    loaded photo), and a JPEG is decoded at half size (``Image.draft``).
    """
    path = large_photos.paths[suffix]
    tracemalloc.start()
    try:
        photo = reconstruct.load_photo(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert photo.file_size == (6000, 4000) and photo.size == (MAX_PHOTO_SIDE, 1365)
    assert peak < 3 * photo.pixels.nbytes < 6000 * 4000 * 3
    assert max(w for w, _ in decodes) == (3000 if suffix == "jpg" else 6000)

    session = SimpleNamespace(reconstructor=_FitSpy(), detector_weights=None)
    with pytest.raises(_Reached):
        reconstruct.reconstruct_photo(session, path, tmp_path / "out", landmarks=large_photos.landmarks)
    photos, landmarks = session.reconstructor.photos, session.reconstructor.landmarks
    assert tuple(photos.shape) == (1, 3, 1365, 2048) and tuple(landmarks.shape) == (1, 68, 2)
    expected = large_photos.points * np.array([2048 / 6000, 1365 / 4000], np.float32)
    np.testing.assert_allclose(landmarks[0].numpy(), expected, rtol=1e-6)
    x, y = (int(v) for v in landmarks[0, 30])
    assert float(photos[0, :, y, x].min()) > 0.95  # the scaled nose tip lies on the bright square
    assert not (tmp_path / "out").exists()

    small = SimpleNamespace(reconstructor=_FitSpy(), detector_weights=None)  # the same next step for a small photo
    with pytest.raises(_Reached):
        reconstruct.reconstruct_photo(small, large_photos.small, tmp_path / "small", landmarks=large_photos.small_landmarks)
    assert tuple(small.reconstructor.photos.shape) == (1, 3, 400, 600)
    np.testing.assert_allclose(small.reconstructor.landmarks[0].numpy(), large_photos.points / 10.0)
    assert read_photo(large_photos.small).scale == (1.0, 1.0)


# ------------------------------------------------------------------------------------------- configs

def test_unknown_config_key_is_named(compose_train):
    """``python train.py experiment=quickstart_ae +model.net.chh=8``: the key is named before any work."""
    with pytest.raises(ConfigError, match=r"model\.net\.chh"):
        validate_config(compose_train("quickstart_ae", "+model.net.chh=8"))


# ------------------------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def stage_checkpoints(tmp_path_factory) -> SimpleNamespace:
    """An autoencoder checkpoint (a tiny AutoencoderModule's hyperparameters and weights, as Lightning saves
    them) and a diffusion checkpoint's hyperparameters (the LatentDiffusionModule arguments, no weights)."""
    from fitdiff.autoencoder import AutoencoderModule
    from fitdiff.ldm import LatentDiffusionModule

    folder = tmp_path_factory.mktemp("ckpts")
    net = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=2, quantizer=dict(n_codes=16))
    module = AutoencoderModule(net=net, loss={"perceptual_weight": 0.0, "disc_ch": 8, "disc_layers": 2})
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), "global_step": 0},
               folder / "ae.ckpt")
    names = [p for p in inspect.signature(LatentDiffusionModule.__init__).parameters if p != "self"]
    hparams = {**dict.fromkeys(names), "layout": {"shape_dim": 6}, "net": {"_target_": "fitdiff.ldm.UNet"}}
    torch.save({"hyper_parameters": hparams, "state_dict": {}, "global_step": 2}, folder / "ldm.ckpt")
    return SimpleNamespace(autoencoder=folder / "ae.ckpt", diffusion=folder / "ldm.ckpt")


def test_sample_and_reconstruct_refuse_an_autoencoder_checkpoint(stage_checkpoints, tmp_path, capsys):
    """``--ckpt`` of the autoencoder stage: both commands exit 1 saying which stage it is and which is
    needed, and write nothing."""
    from fitdiff.reconstruct import main as reconstruct_main
    from fitdiff.sample import main as sample_main

    ckpt = stage_checkpoints.autoencoder
    expected = (f"--ckpt: {ckpt} is a checkpoint of the autoencoder stage (fitdiff.autoencoder.AutoencoderModule), "
                "but the diffusion stage (fitdiff.ldm.LatentDiffusionModule) is expected here; pass a diffusion "
                "checkpoint")
    rc, err = run_main(sample_main, "--ckpt", str(ckpt), "--n", "1", "--out", str(tmp_path / "s"), capsys=capsys)
    assert rc == 1 and expected in err, err
    photo = _small_photo(tmp_path / "face.png")
    np.save(tmp_path / "face.npy", np.full((5, 2), 20.0, np.float32))
    rc, err = run_main(reconstruct_main, "--ckpt", str(ckpt), "--image", str(photo), "--landmarks",
                       str(tmp_path / "face.npy"), "--out", str(tmp_path / "r"), capsys=capsys)
    assert rc == 1 and expected in err, err
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()
    from fitdiff.evaluation.checkpoints import inspect_checkpoints  # evaluate.py table=... ckpts=[...]

    with pytest.raises(CheckpointStageError, match=r"^ckpts: .* is a checkpoint of the autoencoder stage"):
        inspect_checkpoints([ckpt])


def test_diffusion_checkpoint_as_autoencoder_is_refused(stage_checkpoints):
    """``model.autoencoder`` naming a diffusion checkpoint: refused when the diffusion module is built."""
    from fitdiff.ldm import LatentDiffusionModule

    ckpt = stage_checkpoints.diffusion
    with pytest.raises(CheckpointStageError) as info:
        LatentDiffusionModule(autoencoder=str(ckpt))
    assert (info.value.found, info.value.expected) == ("diffusion", "autoencoder")
    assert f"{ckpt} is a checkpoint of the diffusion stage (fitdiff.ldm.LatentDiffusionModule), but the " \
           "autoencoder stage (fitdiff.autoencoder.AutoencoderModule) is expected here" in str(info.value)
    check_checkpoint_stage(stage_checkpoints.autoencoder, "autoencoder", what="model.autoencoder")  # accepted
    check_checkpoint_stage(ckpt, "diffusion", what="--ckpt")


@pytest.mark.parametrize("task", ["train", "evaluate"])
def test_train_and_evaluate_refuse_a_checkpoint_of_another_stage(stage_checkpoints, compose_train, tmp_path, task):
    """``python train.py experiment=quickstart_ldm ckpt_path=<autoencoder ckpt>`` (and evaluate.py)."""
    from fitdiff import tasks

    cfg = compose_train("quickstart_ldm", f"ckpt_path={stage_checkpoints.autoencoder}", "logger=none",
                        f"model.autoencoder={tmp_path / 'none.safetensors'}", f"data.data_dir={tmp_path / 'none'}",
                        "extras.print_config=false", config_name=task)
    with pytest.raises(CheckpointStageError, match="is a checkpoint of the autoencoder stage .* the diffusion stage"):
        getattr(tasks, task)(cfg)


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """``LastCheckpoint.save`` on a full disk: the error names the file; last.ckpt and last-prev.ckpt stay."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from fitdiff.callbacks import LastCheckpoint
    from fitdiff.callbacks.checkpoint import AtomicCheckpointIO

    folder = tmp_path / "checkpoints"
    callback = LastCheckpoint(str(folder))
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, callbacks=[callback],
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                        max_steps=2, limit_train_batches=2, limit_val_batches=0, plugins=[AtomicCheckpointIO()])
    trainer.fit(BoringModel())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sorted(before) == ["last-prev.ckpt", "last.ckpt"]
    full_disk(monkeypatch, 1000)
    with pytest.raises(DiskFullError) as info:
        callback.save(trainer)
    assert str(info.value).startswith(f"cannot write {folder / '.last.ckpt.tmp'}: the disk is full")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert leftovers(tmp_path) == []
