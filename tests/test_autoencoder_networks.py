"""Branched VQ autoencoder networks: shapes, spaces, branching options, quantiser, straight-through."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fitdiff.autoencoder import BranchedVQAutoencoder, PatchDiscriminator, VectorQuantizer
from fitdiff.data import FaceBatch

TINY = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=2, quantizer=dict(n_codes=32))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def maps(b: int = 2, r: int = 16, spec_channels: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "diffuse": torch.rand(b, 3, r, r, generator=g),
        "specular": torch.rand(b, spec_channels, r, r, generator=g),
        "normals": F.normalize(torch.randn(b, 3, r, r, generator=g) + torch.tensor([0, 0, 2.0])[:, None, None], dim=1),
    }


@pytest.mark.parametrize("ch_mult, factor", [([1, 2], 2), ([1, 2, 2], 4), ([1, 1, 2, 2], 8)])
def test_encode_decode_shapes_and_slices(ch_mult, factor):
    net = BranchedVQAutoencoder(**{**TINY, "ch_mult": ch_mult}).eval()
    x = maps(r=16)
    z = net.encode(x)
    assert net.downsampling_factor == factor
    assert z.shape == (2, 6, 16 // factor, 16 // factor) == (2, *net.latent_shape(16))
    assert net.latent_slices == {"diffuse": slice(0, 2), "specular": slice(2, 4), "normals": slice(4, 6)}
    out = net.decode(z)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: tuple(v.shape) for k, v in x.items()}
    assert out["diffuse"].min() >= 0 and out["diffuse"].max() <= 1
    assert torch.allclose(out["normals"].norm(dim=1), torch.ones(2, 16, 16), atol=1e-5)


def test_encode_accepts_facebatch_and_quantized_latents_lie_on_the_codebook():
    net = BranchedVQAutoencoder(**TINY).eval()
    x = maps()
    batch = FaceBatch(keys=["a_0", "a_1"], **x)
    assert torch.equal(net.encode(batch), net.encode(x))
    zq = net.encode(x, quantize=True)
    codes = net.quantizers["diffuse"].codebook.weight
    vectors = zq[:, net.latent_slices["diffuse"]].permute(0, 2, 3, 1).reshape(-1, 2)
    assert torch.cdist(vectors, codes).min(dim=1).values.max() < 1e-4  # straight-through rounding
    # decode quantises by default: pre- and post-quantisation latents decode to the same maps
    a, b = net.decode(net.encode(x)), net.decode(zq)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_model_space_round_trip():
    net = BranchedVQAutoencoder(**TINY)
    x = maps()
    model = net.to_model_space(x)
    assert model["diffuse"].min() < 0 < model["diffuse"].max() <= 1
    back = net.to_data_space(model)
    assert all(torch.allclose(back[k], x[k], atol=1e-6) for k in x)


def test_branch_options_and_single_branch_ablation():
    base = BranchedVQAutoencoder(**TINY)
    shared = BranchedVQAutoencoder(**TINY, share_trunk=True, shared_codebook=True)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(shared) < n(base) and len(shared.quantizers) == 1 and len(base.quantizers) == 3
    single = BranchedVQAutoencoder(**{**TINY, "embed_dim": 6}, branches={"maps": ["diffuse", "specular", "normals"]})
    x = maps(spec_channels=1)
    for net in (shared, single):
        net.eval()
        z = net.encode(x)
        assert z.shape == base.eval().encode(x).shape
        assert set(net.decode(z)) == {"diffuse", "specular", "normals"}
    assert list(single.last_layers()) == ["maps"] and list(base.last_layers()) == ["diffuse", "specular", "normals"]


def test_three_channel_specular_and_input_errors():
    net = BranchedVQAutoencoder(**TINY, maps={"diffuse": 3, "specular": 3, "normals": 3}).eval()
    assert net.decode(net.encode(maps(spec_channels=3)))["specular"].shape[1] == 3
    with pytest.raises(ValueError, match="specular"):
        net.encode(maps(spec_channels=1))
    with pytest.raises(ValueError, match="normals"):
        net.encode({k: v for k, v in maps(spec_channels=3).items() if k != "normals"})
    with pytest.raises(ValueError, match="exactly once"):
        BranchedVQAutoencoder(**TINY, branches={"a": ["diffuse"], "b": ["normals"]})


def test_straight_through_gradient_reaches_the_encoder():
    net = BranchedVQAutoencoder(**TINY).train()
    out = net(maps())
    loss = sum((out.recon[k] - out.inputs[k]).abs().mean() for k in out.inputs)  # reconstruction only
    loss.backward()
    for branch, stem in net.encoder_stems.items():
        grad = stem.layers[0].weight.grad
        assert grad is not None and grad.abs().sum() > 0, branch
    # no gradient reaches the codebook from reconstruction (it is trained by the VQ loss only)
    assert all(q.codebook.weight.grad is None for q in net.quantizers.values())


def test_vq_loss_beta_weights_the_commitment_term():
    q = VectorQuantizer(n_codes=4, dim=2, beta=0.25, data_init=False, restart_dead=False)
    z = torch.randn(1, 2, 3, 3, requires_grad=True)
    out = q(z)
    out.loss.backward()
    e = out.z_q.detach()  # straight-through output equals the codes in value
    n = z.numel()
    assert torch.allclose(z.grad, 2 * 0.25 * (z.detach() - e) / n, atol=1e-6)  # commitment, weight beta
    used = out.indices.flatten()
    expected = torch.zeros_like(q.codebook.weight)
    flat_z, flat_e = z.detach().permute(0, 2, 3, 1).reshape(-1, 2), e.permute(0, 2, 3, 1).reshape(-1, 2)
    expected.index_add_(0, used, 2 * (flat_e - flat_z) / n)  # codebook term, weight 1
    assert torch.allclose(q.codebook.weight.grad, expected, atol=1e-6)
    # straight-through: the identity gradient to z
    z2 = torch.randn(1, 2, 3, 3, requires_grad=True)
    (q(z2).z_q * 3.0).sum().backward()
    assert torch.allclose(z2.grad, torch.full_like(z2, 3.0))


def test_quantizer_statistics_data_init_and_dead_code_restart():
    torch.manual_seed(0)
    q = VectorQuantizer(n_codes=16, dim=2, data_init=True, restart_dead=True, usage_decay=0.5, dead_threshold=0.2)
    z = torch.randn(4, 2, 4, 4) + 10.0  # far from the uniform initial codebook
    out = q.train()(z)
    assert bool(q.initialized) and q.codebook.weight.mean() > 5  # initialised from the data
    assert 1.0 <= float(out.perplexity) <= 16 and 0 < float(out.usage) <= 1
    # move the data: every code but a few is unused and gets restarted onto the new data
    q.codebook.weight.data[:] = 10.0
    q.codebook.weight.data[0] = -50.0
    for _ in range(6):
        q(torch.randn(4, 2, 4, 4) - 50.0)
    assert int(q.restarted) > 0 and q.codebook.weight.mean() < -20
    q.eval()
    before = q.codebook.weight.clone()
    q(torch.randn(4, 2, 4, 4))  # eval: no restart, no statistics update
    assert torch.equal(before, q.codebook.weight)


def test_patch_discriminator_shapes():
    d = PatchDiscriminator(7, ch=8, n_layers=2)
    assert d(torch.randn(2, 7, 64, 64)).shape == (2, 1, 14, 14)
    assert PatchDiscriminator(3, ch=8, n_layers=3)(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    with pytest.raises(ValueError, match="at least"):
        d(torch.randn(1, 7, 8, 8))
