"""Tests of the identity encoders (fitdiff.face.identity) on random-initialised networks."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from fitdiff.assets import AssetMissingError
from fitdiff.face import identity as identity_mod
from fitdiff.face.alignment import align_faces, arcface_template
from fitdiff.face.identity import (
    ArcFaceEncoder,
    IdentityEncoder,
    WeightsMismatchError,
    available_identity_encoders,
    build_identity_encoder,
    cosine_similarity,
    identity_loss,
    load_state_dict_file,
    register_identity_encoder,
)


@pytest.fixture(scope="module")
def arcface() -> ArcFaceEncoder:
    torch.manual_seed(0)
    return ArcFaceEncoder(weights="random")


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """A random IR-SE50 Backbone's state dict saved like a release file, with the network it came from."""
    from facexlib.recognition.arcface_arch import Backbone

    torch.manual_seed(1)
    net = Backbone(50, 0.6, "ir_se").eval()
    # non-trivial BatchNorm statistics so eval-mode outputs depend on the loaded buffers
    for module in net.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "ir_se50.pth"
    torch.save(net.state_dict(), path)
    return path, net


def _faces(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random (B, 3, 160, 144) images and landmarks of a scaled, shifted template."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 20, 18, generator=gen)
    images = nn.functional.interpolate(coarse, size=(160, 144), mode="bilinear", align_corners=False)
    landmarks = torch.stack([arcface_template() * (1.1 + 0.1 * b) + 10 for b in range(batch)])
    return images, landmarks


@pytest.mark.slow
def test_embedding_is_unit_length_and_512d(arcface):
    images, landmarks = _faces(2)
    with torch.no_grad():
        emb = arcface(images, landmarks)
    assert emb.shape == (2, 512) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert arcface.embedding_dim == 512 and arcface.input_size == 112 and arcface.name == "arcface_ir_se50"


@pytest.mark.slow
def test_frozen_but_gradients_reach_input_pixels(arcface):
    assert all(not p.requires_grad for p in arcface.parameters())
    images, landmarks = _faces(2, seed=1)
    images.requires_grad_(True)
    with torch.no_grad():
        target = arcface(torch.rand(2, 3, 112, 112))
    loss = identity_loss(arcface(images, landmarks), target)
    loss.backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0
    # only pixels inside the aligned crop's footprint can matter: the far corner gets no gradient
    assert images.grad[:, :, -2:, -2:].abs().sum() == 0
    assert all(p.grad is None for p in arcface.parameters())


@pytest.mark.slow
def test_stays_in_eval_mode_under_parent_train(arcface):
    parent = nn.ModuleDict({"id": arcface, "head": nn.Linear(512, 4)})
    parent.train()
    assert parent["head"].training
    assert not arcface.training and not any(m.training for m in arcface.modules())
    # Dropout/BatchNorm in eval: repeated calls give identical embeddings
    crops = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first, second = arcface(crops), arcface(crops)
    assert torch.equal(first, second)
    arcface.train(True)
    assert not arcface.training
    # a parent optimiser finds nothing to update in the encoder
    assert [p for p in parent.parameters() if p.requires_grad] == list(parent["head"].parameters())


@pytest.mark.slow
def test_landmark_path_equals_explicit_alignment_and_resize(arcface):
    images, landmarks = _faces(2, seed=3)
    with torch.no_grad():
        via_forward = arcface(images, landmarks)
        crops = align_faces(images, landmarks, 112, arcface_template(112))
        explicit = arcface.embed_aligned(crops)
        # a 224 crop aligned to the scaled template resizes to (almost) the same 112 crop
        big = align_faces(images, landmarks, 224)
        resized = arcface(big)
    assert torch.allclose(via_forward, explicit, atol=1e-5)
    assert cosine_similarity(resized, explicit).min() > 0.99
    # ...which is a real constraint: another face's embedding is far less similar
    assert cosine_similarity(resized, explicit.flip(0)).max() < 0.99
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        arcface(torch.rand(3, 112, 112))


@pytest.mark.slow
def test_loads_weights_from_file_with_and_without_wrappers(arcface, backbone_file, tmp_path):
    path, net = backbone_file
    crops = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = nn.functional.normalize(net(crops * 2 - 1), dim=-1)
        random_emb = arcface.embed_aligned(crops)
    state = torch.load(path, map_location="cpu", weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    for weights in (path, str(wrapped)):
        encoder = ArcFaceEncoder(weights=weights)
        assert all(not p.requires_grad for p in encoder.parameters())
        with torch.no_grad():
            emb = encoder.embed_aligned(crops)
        assert torch.allclose(emb, expected, atol=1e-5)
        assert not torch.allclose(emb, random_emb, atol=1e-3)  # the file really was loaded


@pytest.mark.slow
def test_mismatched_weight_file_names_file_and_keys(backbone_file, tmp_path):
    path, _ = backbone_file
    state = torch.load(path, map_location="cpu", weights_only=True)
    bad = dict(state)
    bad["head.extra.weight"] = torch.zeros(3)
    del bad["input_layer.0.weight"]
    bad_path = tmp_path / "wrong_keys.pth"
    torch.save(bad, bad_path)
    with pytest.raises(WeightsMismatchError) as info:
        ArcFaceEncoder(weights=bad_path)
    message = str(info.value)
    assert str(bad_path) in message
    assert "missing keys: input_layer.0.weight" in message and "unexpected keys: head.extra.weight" in message

    # shape mismatches are reported per key (checked on a small module: same loader)
    small = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    shaped_path = tmp_path / "wrong_shape.pth"
    torch.save({"0.weight": torch.zeros(2, 4), "0.bias": torch.zeros(3), "1.weight": torch.ones(3),
                "1.bias": torch.zeros(3), "1.running_mean": torch.zeros(3), "1.running_var": torch.ones(3)},
               shaped_path)
    with pytest.raises(WeightsMismatchError, match=r"0\.weight: file \(2, 4\) vs network \(3, 4\)"):
        load_state_dict_file(small, shaped_path)
    # BatchNorm counters absent from old checkpoints are tolerated
    torch.save({k: v for k, v in small.state_dict().items() if "num_batches" not in k}, shaped_path)
    load_state_dict_file(small, shaped_path)
    with pytest.raises(FileNotFoundError, match="does_not_exist.pth"):
        ArcFaceEncoder(weights=tmp_path / "does_not_exist.pth")


def test_missing_asset_says_how_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("FITDIFF_ASSETS", str(tmp_path))
    with pytest.raises(AssetMissingError, match="python -m fitdiff.assets fetch arcface_ir_se50"):
        ArcFaceEncoder()


@pytest.mark.slow
def test_random_weights_log_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="fitdiff.face.identity"):
        ArcFaceEncoder(weights="random", name="arcface_test")
    assert any("RANDOM" in record.getMessage() for record in caplog.records)


class _TinyEncoder(IdentityEncoder):
    """A small recogniser used to exercise the registry and the base-class behaviour."""

    name = "tiny"
    input_size = 32
    embedding_dim = 16

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout(0.5),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(width * 16, self.embedding_dim),
        )
        self.freeze()

    def _embed(self, aligned: torch.Tensor) -> torch.Tensor:
        return self.net(aligned)


@pytest.mark.slow
def test_registry_builds_and_plugs_in_new_encoders(monkeypatch):
    monkeypatch.setattr(identity_mod, "_REGISTRY", dict(identity_mod._REGISTRY))
    assert "arcface_ir_se50" in available_identity_encoders()
    assert isinstance(build_identity_encoder("arcface_ir_se50", weights="random"), ArcFaceEncoder)
    register_identity_encoder("tiny")(_TinyEncoder)
    tiny = build_identity_encoder("tiny", width=4)
    nn.Sequential(tiny).train()
    assert not tiny.training and all(not p.requires_grad for p in tiny.parameters())
    images, landmarks = _faces(3, seed=5)
    images.requires_grad_(True)
    emb = tiny(images, landmarks)
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    emb.sum().backward()
    assert images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="already registered"):
        register_identity_encoder("tiny")(lambda: tiny)
    with pytest.raises(KeyError, match="registered: .*arcface_ir_se50"):
        build_identity_encoder("no_such_net")


@pytest.mark.slow
def test_hydra_target_instantiates():
    hydra_utils = pytest.importorskip("hydra.utils")
    encoder = hydra_utils.instantiate({"_target_": "fitdiff.face.identity.ArcFaceEncoder", "weights": "random"})
    assert isinstance(encoder, ArcFaceEncoder) and not encoder.training


def test_cosine_and_identity_loss():
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(4, 8, generator=gen)
    orth = torch.zeros(2, 2)
    orth[0, 0] = orth[1, 1] = 1.0
    assert torch.allclose(identity_loss(a, a, reduction="none"), torch.zeros(4), atol=1e-6)
    assert torch.allclose(identity_loss(a, -a, reduction="none"), torch.full((4,), 2.0), atol=1e-6)
    assert torch.allclose(identity_loss(orth[:1], orth[1:]), torch.tensor(1.0))
    assert torch.allclose(identity_loss(a, 3 * a, reduction="sum"), torch.tensor(0.0), atol=1e-5)
    b = torch.randn(4, 8, generator=gen)
    expected = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    assert torch.allclose(cosine_similarity(a, b), expected, atol=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        identity_loss(a, b, reduction="max")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_follows_module_device_on_gpu():
    encoder = ArcFaceEncoder(weights="random", device="cuda")
    images, landmarks = _faces(1, seed=7)
    images = images.cuda().requires_grad_(True)
    emb = encoder(images, landmarks.cuda())
    assert emb.device.type == "cuda"
    emb.sum().backward()
    assert images.grad.abs().sum() > 0
    cpu_images = torch.rand(1, 3, 112, 112)
    assert encoder(cpu_images).device.type == "cuda"
