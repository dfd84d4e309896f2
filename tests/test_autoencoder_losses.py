"""Autoencoder losses: adaptive weight, hinge, per-branch VQGAN loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fitdiff.autoencoder import (
    BranchedVQAutoencoder,
    VQGANLoss,
    adaptive_weight,
    hinge_discriminator_loss,
)

TINY = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=2, quantizer=dict(n_codes=32))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _maps(b: int = 2, r: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "diffuse": torch.rand(b, 3, r, r, generator=g),
        "specular": torch.rand(b, 1, r, r, generator=g),
        "normals": F.normalize(torch.randn(b, 3, r, r, generator=g) + torch.tensor([0, 0, 2.0])[:, None, None], dim=1),
    }


def test_adaptive_weight_ratio_clamp_and_finiteness():
    w = torch.randn(4, 4, requires_grad=True)
    rec, gan = (3.0 * w).sum(), (0.5 * w).sum()
    expected = (3.0 * 4) / (0.5 * 4 + 1e-4)  # gradient norms: 3*||1|| and 0.5*||1|| over 16 entries
    assert math.isclose(float(adaptive_weight(rec, gan, w)), expected, rel_tol=1e-5)
    # a GAN loss with zero gradient at the layer (a switched-off or constant discriminator): finite, clamped
    assert float(adaptive_weight(rec, 0.0 * w.sum(), w)) == 1e4
    # a GAN loss that does not reach the layer at all: finite
    assert float(adaptive_weight(rec, torch.randn(3, requires_grad=True).sum(), w)) == 1e4
    # no reconstruction gradient: 0
    assert float(adaptive_weight(torch.randn(2, requires_grad=True).sum(), gan, w)) == 0.0
    with torch.no_grad():
        assert float(adaptive_weight(rec, gan, w)) == 0.0


@pytest.mark.parametrize("disc_on", [False, True])
def test_generator_loss_adaptive_weight_finite_with_discriminator_off_and_on(disc_on):
    torch.manual_seed(0)
    net = BranchedVQAutoencoder(**TINY)
    loss = VQGANLoss(net.maps, net.branches, perceptual_weight=0.0, disc_start=10, disc_ch=8, disc_layers=2)
    out = net(_maps())
    step = 10 if disc_on else 9
    total, logs = loss.generator_loss(out, net.last_layers(), step)
    assert torch.isfinite(total)
    for branch in ("diffuse", "specular", "normals"):
        weight = logs[f"{branch}_d_weight"]
        assert torch.isfinite(weight)
        assert (float(weight) > 0) == disc_on
        assert (f"{branch}_g_loss" in logs) == disc_on
    total.backward()  # the weights are detached: the graph still backpropagates
    assert net.decoder_heads["normals"].last_layer.grad is not None
    assert {"normals_angular", "diffuse_l1", "rec_loss", "vq_loss", "loss"} <= set(logs)


def test_discriminator_loss_and_hinge():
    assert float(hinge_discriminator_loss(torch.full((2,), 2.0), torch.full((2,), -2.0))) == 0.0
    assert math.isclose(float(hinge_discriminator_loss(torch.zeros(2), torch.zeros(2))), 1.0)
    net = BranchedVQAutoencoder(**TINY)
    loss = VQGANLoss(net.maps, net.branches, perceptual_weight=0.0, disc_start=0, disc_ch=8, disc_layers=2)
    out = net(_maps())
    d_loss, logs = loss.discriminator_loss(out)
    d_loss.backward()
    assert all(p.grad is not None for p in loss.discriminators.parameters())
    assert all(p.grad is None for p in net.parameters())  # reconstructions are detached
    assert {"diffuse_d_loss", "normals_logits_real", "d_loss"} <= set(logs)
