"""The synthetic recognizer: ArcFace margin head, training, weight files, encoder registry; verification."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fitdiff.face.identity import WeightsMismatchError, build_identity_encoder
from fitdiff.face.synthetic_recognizer import RecognizerNet, SyntheticRecognizer, load_recognizer_weights
from fitdiff.io import StateDictError, sha256_file
from fitdiff.synthetic.recognizer_training import (
    ArcMarginHead,
    RecognizerTrainingConfig,
    save_recognizer_weights,
    shift_images,
    train_recognizer,
)
from fitdiff.synthetic.verification import verification_auc, verification_pairs
from helpers import run_script


def test_verification_pairs_cover_every_pair_once():
    e = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, -3.0]])
    scores, labels = verification_pairs(e, ["a", "a", "b", "b"])
    assert len(scores) == 6 and labels.sum() == 2
    assert np.allclose(sorted(scores), [-1, 0, 0, 0, 0, 1])
    result = verification_auc(e, ["a", "a", "b", "c"])
    assert result.genuine == 1 and result.impostor == 5 and result.auc == 1.0


def test_arc_margin_head_adds_the_angle_to_the_true_class_only():
    head = ArcMarginHead(4, 3, scale=10.0, margin=0.3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
    theta = 0.5
    emb = torch.tensor([[math.cos(theta), math.sin(theta), 0.0, 0.0]]) * 7.0  # the norm does not matter
    logits = head(emb, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(theta + 0.3), abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(10 * math.sin(theta), abs=1e-5)
    assert logits[0, 2].item() == pytest.approx(0.0, abs=1e-5)
    plain = head(emb, torch.tensor([0]), margin=0.0)
    assert plain[0, 0].item() == pytest.approx(10 * math.cos(theta), abs=1e-5)


def _toy_crops(n_classes: int = 4, per_class: int = 16, seed: int = 0):
    """Crops whose class is a colour and a blob position, with noise."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.1, 0.9, (n_classes, 3))
    crops, labels = [], []
    yy, xx = np.mgrid[0:112, 0:112]
    for c in range(n_classes):
        cx, cy = rng.uniform(30, 80, 2)
        for _ in range(per_class):
            blob = np.exp(-((xx - cx - rng.normal(0, 3)) ** 2 + (yy - cy - rng.normal(0, 3)) ** 2) / 300.0)
            image = (
                0.3
                + blob[..., None] * colours[c] * rng.uniform(0.7, 1.3)
                + rng.normal(0, 0.05, (112, 112, 3))
            )
            crops.append(np.clip(image * 255, 0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(crops), np.array(labels)


@pytest.fixture(scope="module")
def trained():
    crops, labels = _toy_crops()
    config = RecognizerTrainingConfig(epochs=6, batch_size=16, lr=3e-3, margin_warmup=0.0, seed=3)
    net, history = train_recognizer(crops, labels, config)
    return net, history, crops, labels, config


@pytest.mark.slow
def test_training_decreases_the_loss_and_separates_identities(trained):
    net, history, crops, labels, _ = trained
    assert len(history) == 6 and all(math.isfinite(x) for x in history)
    assert history[-1] < 0.7 * history[0]
    encoder = SyntheticRecognizer(net)
    with torch.no_grad():
        emb = encoder.embed_aligned(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(emb)), atol=1e-5)
    assert verification_auc(emb.numpy(), [str(x) for x in labels]).auc > 0.9


@pytest.mark.slow
def test_training_is_deterministic(trained):
    net, history, crops, labels, config = trained
    again, history2 = train_recognizer(crops, labels, config)
    assert history == history2
    for key, value in net.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


@pytest.mark.slow
def test_weights_round_trip_through_safetensors_and_the_registry(trained, tmp_path):
    net = trained[0]
    path = tmp_path / "rec.safetensors"
    sha = save_recognizer_weights(net, path)
    assert sha == sha256_file(path) and len(sha) == 64
    assert save_recognizer_weights(net, tmp_path / "again.safetensors") == sha  # same weights, same bytes
    loaded = load_recognizer_weights(path)
    x = torch.rand(3, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    encoder = build_identity_encoder("synthetic_recognizer", weights=str(path))
    assert isinstance(encoder, SyntheticRecognizer)
    assert not any(p.requires_grad for p in encoder.parameters())
    images = torch.rand(2, 3, 64, 64)
    landmarks = torch.tensor([[[22.0, 28.0], [42.0, 28.0], [32.0, 38.0], [24.0, 48.0], [40.0, 48.0]]]).repeat(
        2, 1, 1
    )
    emb = encoder(images, landmarks)
    assert emb.shape == (2, 512) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    # torch.save files load with weights_only=True
    torch.save(net.state_dict(), tmp_path / "rec.pt")
    assert torch.equal(load_recognizer_weights(tmp_path / "rec.pt")(x), loaded(x))


def test_bad_weight_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_synthetic"):
        load_recognizer_weights(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsMismatchError):
        load_recognizer_weights(tmp_path / "bad.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(StateDictError, match="corrupt.safetensors"):
        load_recognizer_weights(tmp_path / "corrupt.safetensors")


def test_recognizer_net_checks_its_input_size():
    with pytest.raises(ValueError, match="112"):
        RecognizerNet()(torch.rand(1, 3, 64, 64))


def test_shift_images_moves_content_with_edge_replication():
    batch = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    out = shift_images(batch, torch.tensor([[1, 0], [0, -1]]))
    assert torch.equal(out[0, :, :, :-1], batch[0, :, :, 1:])  # dx = 1: output x reads input x + 1
    assert torch.equal(out[0, :, :, -1], batch[0, :, :, -1])  # replicated right edge
    assert torch.equal(out[1, :, 1:], batch[1, :, :-1])  # dy = -1: content moves down
    assert torch.equal(out[1, :, 0], batch[1, :, 0])
    assert shift_images(batch, torch.zeros(2, 2, dtype=torch.long)) is batch


@pytest.mark.slow
def test_importing_the_face_toolkit_loads_no_training_code():
    code = (
        "import sys, fitdiff.face; "
        "bad = [m for m in sys.modules if 'recognizer_training' in m or m.startswith('fitdiff.synthetic')]; "
        "assert not bad, bad; "
        "from fitdiff.face.identity import available_identity_encoders; "
        "assert 'synthetic_recognizer' in available_identity_encoders()"
    )
    result = run_script("-c", code, timeout=600)
    assert result.returncode == 0, result.stderr
