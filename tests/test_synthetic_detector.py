"""The synthetic face detector: its training data, augmentation, weights files and detection contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitdiff.evaluation.faces import load_faces
from fitdiff.face import detection
from fitdiff.face.detection import NoFaceError
from fitdiff.face.detectors import face_detector, is_synthetic_detector
from fitdiff.face.synthetic_detector import DetectorNet, SyntheticFaceDetector, load_detector_weights
from fitdiff.synthetic.detector_training import (
    _similarity,
    _warp,
    check_detector,
    face_and_background,
    save_detector_weights,
)


def test_warp_moves_landmarks_with_the_image():
    """A bright dot at each landmark lands where the transformed landmark says, within a pixel."""
    size = 96
    points = torch.tensor([[[30.5, 35.5], [65.5, 35.5], [48.5, 50.5], [35.5, 68.5], [61.5, 68.5]]])
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    images = torch.zeros(1, 5, size, size)  # one channel per landmark
    for k in range(5):
        images[0, k] = torch.exp(-((xs - points[0, k, 0]) ** 2 + (ys - points[0, k, 1]) ** 2) / 4.0)
    theta = _similarity(1, torch.Generator().manual_seed(3))
    warped, moved = _warp(images, points, theta)
    for k in range(5):
        flat = int(warped[0, k].argmax())
        peak = torch.tensor([flat % size + 0.5, flat // size + 0.5])
        assert (peak - moved[0, k]).norm() < 1.0


@pytest.mark.slow
def test_backgrounds_are_the_photos_without_their_faces(tiny_synthetic):
    """Rebuilt from meta with the same sensor noise, a background equals its photo outside the face."""
    faces = load_faces(tiny_synthetic, ["train"])
    images, points, backgrounds = face_and_background(faces.image, faces.landmarks, faces.meta)
    assert points.shape == (len(faces), 5, 2)
    same = (images - backgrounds).abs().amax(1) < 1e-6  # (N, H, W)
    share = same.float().mean((1, 2))
    assert bool((share > 0.3).all()) and bool((share < 0.97).all()), share
    # the landmarks lie on the face, where photo and background differ
    centre = points.mean(1).round().long()
    assert not bool(same[torch.arange(len(faces)), centre[:, 1], centre[:, 0]].any())


@pytest.mark.slow
def test_trained_detector_finds_faces_and_rejects_backgrounds(tiny_detector, tiny_synthetic):
    """The command's detector on held-out photos of the small dataset (its record holds the same check)."""
    detector = SyntheticFaceDetector(tiny_detector)
    held = load_faces(tiny_synthetic, ["val", "test"])
    check = check_detector(detector, *face_and_background(held.image, held.landmarks, held.meta))
    assert check.recall >= 0.9 and check.specificity >= 0.9, check
    assert check.landmark_px < 4.0, check  # 64-pixel photos
    assert detector.record["check"]["photos"] > 0 and "loss_per_epoch" in detector.record
    blank = np.full((64, 64, 3), 128, np.uint8)
    assert detector.detect(blank) == []
    found = detector.detect_one(held.image[0], source="held-out photo")
    assert found.landmarks.shape == (5, 2) and 0.5 < found.score <= 1.0
    box = found.box
    assert box[0] < found.landmarks[:, 0].min() and box[2] > found.landmarks[:, 0].max()


def test_no_face_error_names_the_source():
    net = DetectorNet()
    with torch.no_grad():
        net.score.bias[0] = -50.0  # face logit: never a face
    detector = SyntheticFaceDetector(net)
    with pytest.raises(NoFaceError, match="no face found in empty.png"):
        detector.detect_one(np.zeros((64, 64, 3), np.uint8), source="empty.png")


def test_face_detector_chooses_by_file(tmp_path, monkeypatch):
    net = DetectorNet(width=8)
    path = tmp_path / "detector.safetensors"
    save_detector_weights(net, path, {"loss_per_epoch": [1.0], "check": {}})
    assert is_synthetic_detector(path)
    chosen = face_detector(path)
    assert isinstance(chosen, SyntheticFaceDetector) and chosen.net.width == 8
    loaded, record = load_detector_weights(path)
    assert record["width"] == 8 and torch.equal(loaded.score.weight, net.score.weight)

    calls = []

    class StandIn:
        def __init__(self, weights=None):
            calls.append(weights)

    monkeypatch.setattr(detection, "FaceDetector", StandIn)
    face_detector(None)
    other = tmp_path / "retinaface.pth"
    torch.save({}, other)
    face_detector(other)
    assert calls == [None, other]
    with pytest.raises(FileNotFoundError, match="do not exist"):
        face_detector(tmp_path / "missing.safetensors")


def test_missing_weights_say_which_command_writes_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_prep/train_detector.py --data DATASET"):
        load_detector_weights(tmp_path / "detector.safetensors")
