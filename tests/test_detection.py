"""Tests of the RetinaFace wrapper and the landmark step (fitdiff.face.detection), random weights only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitdiff.assets import AssetMissingError
from fitdiff.face.alignment import arcface_template
from fitdiff.face.detection import (
    Detection,
    FaceDetector,
    MissingLandmarksError,
    NoFaceError,
    image_to_tensor,
    landmarks_for,
)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    torch.manual_seed(0)
    return FaceDetector(weights="random", score_threshold=0.5)


class _ScriptedDetector(FaceDetector):
    """Real priors, decoding, thresholding and NMS; network outputs replaced by chosen ones.

    ``hits`` maps prior index -> (score, box offsets (4,), landmark offsets (10,)); all other priors
    score 0.01. This checks the post-processing against hand-computed boxes.
    """

    def __init__(self, hits: dict[int, tuple[float, list[float], list[float]]], **kwargs) -> None:
        super().__init__(weights="random", **kwargs)
        self.hits = hits
        self.seen_inputs: list[torch.Tensor] = []

    def _raw_outputs(self, bgr):
        self.seen_inputs.append(bgr)
        count = self._priors(*bgr.shape[-2:]).shape[0]
        loc, landm = torch.zeros(count, 4), torch.zeros(count, 10)
        scores = torch.full((count,), 0.01)
        for index, (score, box, points) in self.hits.items():
            scores[index] = score
            loc[index] = torch.tensor(box)
            landm[index] = torch.tensor(points)
        return loc, scores, landm


def _prior_index(det: FaceDetector, height: int, width: int, cx: float, cy: float, size: float) -> int:
    """Index of the prior with centre (cx, cy) and side ``size`` in pixels."""
    priors = det._priors(height, width) * torch.tensor([width, height, width, height])
    target = torch.tensor([cx, cy, size, size])
    index = int((priors - target).abs().sum(1).argmin())
    assert torch.allclose(priors[index], target, atol=1e-3), priors[index]
    return index


@pytest.mark.slow
def test_random_detector_runs_and_returns_sorted_well_formed_detections(detector):
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(3, 128, 128, generator=gen)
    detections = detector.detect(image)
    assert isinstance(detections, list)
    assert len(detections) >= 2, "the seeded random network must give detections for the checks below"
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True)
    for det in detections:
        assert isinstance(det, Detection)
        assert det.box.shape == (4,) and det.landmarks.shape == (5, 2)
        assert det.score > 0.5 and det.score <= 1.0
        assert torch.isfinite(det.box).all() and torch.isfinite(det.landmarks).all()
        assert det.box[2] >= det.box[0] and det.box[3] >= det.box[1]
    # the same photo as uint8 HWC numpy gives the same detections (same preprocessing)
    as_uint8 = (image * 255).round().byte()
    again = detector.detect(as_uint8.permute(1, 2, 0).numpy())
    same = detector.detect(as_uint8.float() / 255)
    assert len(again) == len(same) >= 2
    for a, b in zip(again, same):
        assert torch.allclose(a.box, b.box) and a.score == pytest.approx(b.score)
    assert not any(p.requires_grad for p in detector.parameters()) and not detector.training


def test_preprocessing_is_bgr_minus_mean():
    det = _ScriptedDetector({})
    image = torch.zeros(3, 16, 24)
    image[0] = 1.0  # pure red
    det.detect(image)
    bgr = det.seen_inputs[-1]
    assert bgr.shape == (1, 3, 16, 24)
    assert torch.allclose(bgr[0, :, 0, 0], torch.tensor([-104.0, -117.0, 255.0 - 123.0]))


def test_decoding_gives_prior_boxes_in_pixels_sorted_and_nms():
    height, width = 96, 128
    probe = _ScriptedDetector({})
    a = _prior_index(probe, height, width, cx=60.0, cy=44.0, size=32.0)   # cell (7, 5) of stride 8
    b = _prior_index(probe, height, width, cx=68.0, cy=44.0, size=32.0)   # next cell: IoU 0.6 with a
    c = _prior_index(probe, height, width, cx=20.0, cy=76.0, size=16.0)
    # landmark offsets of +1 in x move a point by variance(0.1) * prior width
    points = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0]
    det = _ScriptedDetector(
        {a: (0.9, [0.0] * 4, points), b: (0.95, [0.0] * 4, [0.0] * 10), c: (0.85, [0.5, 0, 0, 0], points)},
        score_threshold=0.8,
    )
    found = det.detect(torch.rand(3, height, width))
    assert [d.score for d in found] == pytest.approx([0.95, 0.85])  # a suppressed by b
    assert torch.allclose(found[0].box, torch.tensor([52.0, 28.0, 84.0, 60.0]), atol=1e-4)
    # box x-offset 0.5 shifts the centre by 0.5 * 0.1 * 16 = 0.8 px
    assert torch.allclose(found[1].box, torch.tensor([12.8, 68.0, 28.8, 84.0]), atol=1e-4)
    expected = torch.tensor([[20.0, 76.0], [21.6, 76.0], [20.0, 77.6], [18.4, 76.0], [20.0, 74.4]])
    assert torch.allclose(found[1].landmarks, expected, atol=1e-4)


def test_downscaled_detection_maps_back_to_original_pixels():
    height, width = 96, 128
    probe = _ScriptedDetector({})
    # with max_size=64 the network sees 48 x 64; its prior (cx=20, cy=20, 16 px) is (40, 40, 32) originally
    index = _prior_index(probe, 48, 64, cx=20.0, cy=20.0, size=16.0)
    det = _ScriptedDetector({index: (0.99, [0.0] * 4, [0.0] * 10)}, max_size=64)
    found = det.detect(torch.rand(3, height, width))
    assert det.seen_inputs[-1].shape[-2:] == (48, 64)
    assert torch.allclose(found[0].box, torch.tensor([24.0, 24.0, 56.0, 56.0]), atol=1e-4)
    assert torch.allclose(found[0].landmarks, torch.full((5, 2), 40.0), atol=1e-4)


def test_detect_one_on_blank_image_names_the_source():
    det = _ScriptedDetector({}, score_threshold=0.8)  # the network reports no face anywhere
    blank = np.zeros((128, 128, 3), dtype=np.uint8)
    assert det.detect(blank) == []
    with pytest.raises(NoFaceError, match=r"blank_photo\.png .*128 x 128"):
        det.detect_one(blank, source="blank_photo.png")
    best = _ScriptedDetector({5: (0.7, [0.0] * 4, [0.0] * 10), 9: (0.9, [0.0] * 4, [0.0] * 10)}, score_threshold=0.5)
    assert best.detect_one(blank).score == pytest.approx(0.9)


@pytest.mark.slow
def test_weight_file_loading_and_missing_asset(tmp_path, monkeypatch, detector):
    state = {f"module.{k}": v for k, v in detector.net.state_dict().items()}
    path = tmp_path / "retinaface.pth"
    torch.save(state, path)
    loaded = FaceDetector(weights=path)
    for (name, mine), theirs in zip(loaded.net.state_dict().items(), detector.net.state_dict().values()):
        assert torch.equal(mine, theirs), name
    monkeypatch.setenv("FITDIFF_ASSETS", str(tmp_path / "empty"))
    with pytest.raises(AssetMissingError, match="python -m fitdiff.assets fetch retinaface_resnet50"):
        FaceDetector()


def test_image_to_tensor_conversions():
    array = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    tensor = image_to_tensor(array)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    assert tensor[2, 1, 0] == pytest.approx(array[1, 0, 2] / 255)
    assert torch.equal(image_to_tensor(tensor[None]), tensor)
    with pytest.raises(ValueError, match="RGB"):
        image_to_tensor(torch.zeros(4, 8, 8))
    with pytest.raises(TypeError):
        image_to_tensor([[0, 1]])


def test_landmarks_for_each_source():
    image = torch.rand(3, 112, 112)
    given = torch.rand(5, 2) * 100
    assert torch.equal(landmarks_for(image, given), given)
    assert torch.allclose(landmarks_for(image, given.numpy()), given)
    assert torch.allclose(landmarks_for(torch.rand(3, 224, 224), aligned=True), arcface_template(224))
    with pytest.raises(MissingLandmarksError, match="landmarks=.*fetch retinaface_resnet50") as info:
        landmarks_for(image, source="me.jpg")
    assert "me.jpg" in str(info.value)
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        landmarks_for(image, torch.zeros(68, 2))
    det = _ScriptedDetector({3: (0.99, [0.0] * 4, [0.0] * 10)})
    expected = det.detect_one(image).landmarks
    assert torch.equal(landmarks_for(image, detector=det), expected)
    with pytest.raises(NoFaceError, match="empty.png"):
        landmarks_for(image, detector=_ScriptedDetector({}), source="empty.png")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_detector_follows_its_device_on_gpu():
    det = FaceDetector(weights="random", device="cuda", score_threshold=0.5)
    found = det.detect(torch.rand(3, 64, 64))
    assert all(d.box.device.type == "cpu" and torch.isfinite(d.box).all() for d in found)
