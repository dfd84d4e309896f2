"""The conditioned UNet denoiser: shapes, exact unconditionality at init, trainable conditioning, null
embedding, gradient checkpointing, timesteps, dtypes, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fitdiff.ldm import CONDITIONINGS, ConditionedUNet

CONDITIONED = [c for c in CONDITIONINGS if c != "none"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_unet(conditioning: str = "spade", **overrides) -> ConditionedUNet:
    kwargs = dict(in_channels=5, out_channels=4, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(2,), num_heads=2, norm_groups=8, cond_dim=512,
                  conditioning=conditioning, spade_map_channels=8, spade_map_res=4, cross_tokens=2)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return ConditionedUNet(**kwargs).eval()


def randomise_(model: torch.nn.Module, std: float = 0.05, keep_conditioning_zero: bool = False) -> None:
    """Perturb every parameter (the zero-initialised ones included), so no path is trivially silent.

    ``keep_conditioning_zero``: leave the conditioning paths' zero-initialised output layers at zero.
    """
    zero_cond = ("to_gamma_beta", "cross.proj_out", "condition.input_conv")
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if keep_conditioning_zero and any(key in name for key in zero_cond):
                continue
            p.add_(torch.randn(p.shape, generator=gen) * std)


def inputs(batch: int = 3, size: tuple[int, int] = (8, 8), channels: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *size, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    cond = F.normalize(torch.randn(batch, 512, generator=gen), dim=1)
    return x, t, cond


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("size", [(4, 4), (8, 8), (16, 12)])
def test_output_shape_every_variant_and_resolution(conditioning, size):
    model = small_unet(conditioning)
    x, t, cond = inputs(size=size)
    with torch.no_grad():
        assert model(x, t, cond).shape == (3, 4, *size)
        assert model(x, t).shape == (3, 4, *size)


def test_three_levels_with_attention_everywhere():
    model = small_unet("spade", channel_mult=(1, 2, 2), attention_resolutions=(1, 2, 4), head_channels=8)
    x, t, cond = inputs(size=(16, 16))
    with torch.no_grad():
        assert model(x, t, cond).shape == (3, 4, 16, 16)


def test_bad_configurations_and_inputs_are_refused():
    with pytest.raises(ValueError, match="conditioning='film'"):
        small_unet("film")
    with pytest.raises(ValueError, match="attention_resolutions"):
        small_unet("spade", attention_resolutions=(3,))
    with pytest.raises(ValueError, match="crossattn"):
        small_unet("crossattn", attention_resolutions=())
    model = small_unet()
    x, t, cond = inputs(size=(6, 6))
    with pytest.raises(ValueError, match="not divisible by 2"):
        model(torch.randn(1, 5, 7, 8), 3)
    with pytest.raises(ValueError, match="cond has shape"):
        model(x, t, cond[:, :100])
    with pytest.raises(ValueError, match="uncond_mask has shape"):
        model(x, t, cond, torch.zeros(2, dtype=torch.bool))


@pytest.mark.parametrize("conditioning", CONDITIONED)
def test_untrained_network_ignores_the_condition_exactly(conditioning):
    """Zero-initialised conditioning outputs alone make the network unconditional (all else perturbed)."""
    model = small_unet(conditioning)
    randomise_(model, keep_conditioning_zero=True)
    x, t, cond = inputs()
    with torch.no_grad():
        ref = model(x, t, cond)
        assert torch.equal(model(x, t, F.normalize(torch.randn(3, 512), dim=1)), ref)
        assert torch.equal(model(x, t), ref)
        assert torch.equal(model(x, t, cond, torch.tensor([True, False, True])), ref)
        assert not torch.equal(model(x + 0.1, t, cond), ref)  # the network is not trivially constant


@pytest.mark.parametrize("conditioning", CONDITIONED)
def test_conditioning_path_trains(conditioning):
    """A few Adam steps on 'output +1 for embedding a, -1 for b, same x and t' (only the embedding tells
    the targets apart) make the output depend on the embedding: the path from zero init is not dead."""
    model = small_unet(conditioning).train()
    x, t, _ = inputs(batch=2)
    x, t = x.repeat_interleave(2, 0), t.repeat_interleave(2, 0)
    a, b = F.normalize(torch.randn(2, 512, generator=torch.Generator().manual_seed(5)), dim=1)
    cond = torch.stack([a, b, a, b])
    target = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1, 1, 1).expand(4, 4, 8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(15):
        loss = F.mse_loss(model(x, t, cond), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model.eval()(x[:2], t[:2], cond[:2])
    gap = (out[0] - out[1]).mean()
    assert gap > 0.5, f"{conditioning}: mean output for a minus for b is {gap:.3f} (target 2)"


@pytest.mark.parametrize("conditioning", CONDITIONED)
def test_every_parameter_gets_a_gradient(conditioning):
    """Also with no unconditional row in the batch (DDP without find_unused_parameters needs this)."""
    model = small_unet(conditioning)
    x, t, cond = inputs()
    model(x, t, cond).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("conditioning", CONDITIONED)
def test_masked_rows_equal_unconditional_rows(conditioning):
    model = small_unet(conditioning)
    randomise_(model)
    x, t, cond = inputs(batch=4)
    mask = torch.tensor([True, False, False, True])
    with torch.no_grad():
        mixed = model(x, t, cond, mask)
        uncond = model(x, t)
        full = model(x, t, cond)
    assert torch.allclose(mixed[mask], uncond[mask], rtol=0, atol=1e-6)
    assert torch.allclose(mixed[~mask], full[~mask], rtol=0, atol=1e-6)
    assert (full[mask] - uncond[mask]).abs().max() > 1e-3  # the condition matters once weights are nonzero


def test_none_ignores_the_condition():
    model = small_unet("none")
    randomise_(model)
    assert model.null_embedding is None
    assert model.parameter_counts()["conditioning"] == 0
    x, t, cond = inputs()
    with torch.no_grad():
        ref = model(x, t)
        assert torch.equal(model(x, t, cond), ref)
        assert torch.equal(model(x, t, cond, torch.tensor([True, False, True])), ref)


def test_null_embedding_initialisation():
    model = small_unet("spade")
    assert model.null_embedding.shape == (512,)
    assert torch.allclose(model.null_embedding.norm(), torch.tensor(0.1))
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert 0 < counts["conditioning"] < counts["total"]


@pytest.mark.parametrize("conditioning", ["spade", "crossattn"])
def test_gradient_checkpointing_matches(conditioning):
    model = small_unet(conditioning, dropout=0.1).train()
    randomise_(model)
    x, t, cond = inputs()

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(7)
        model.zero_grad()
        out = model(x, t, cond, torch.tensor([False, True, False]))
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    out_plain, grads_plain = run()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing and model.is_gradient_checkpointing
    out_ckpt, grads_ckpt = run()
    assert torch.equal(out_plain, out_ckpt)
    for g0, g1 in zip(grads_plain, grads_ckpt):
        assert torch.allclose(g0, g1, rtol=1e-5, atol=1e-7)
    model.disable_gradient_checkpointing()
    assert not model.gradient_checkpointing
    # the constructor switch does the same
    assert small_unet(conditioning, gradient_checkpointing=True).gradient_checkpointing


def test_timesteps_int_float_scalar_or_batch():
    model = small_unet()
    randomise_(model)
    x, _, cond = inputs()
    with torch.no_grad():
        ref = model(x, torch.full((3,), 250), cond)
        assert torch.equal(model(x, 250, cond), ref)
        assert torch.equal(model(x, torch.tensor(250), cond), ref)
        assert torch.allclose(model(x, 250.0, cond), ref, rtol=0, atol=1e-6)
        assert torch.allclose(model(x, torch.full((3,), 250.0, dtype=torch.float64), cond), ref, rtol=0, atol=1e-6)
        assert not torch.equal(model(x, 251, cond), ref)
    with pytest.raises(ValueError, match="t has shape"):
        model(x, torch.zeros(2), cond)


def test_dtypes_float64_and_bfloat16_autocast():
    model = small_unet("spade")
    randomise_(model)
    x, t, cond = inputs()
    with torch.no_grad():
        ref = model(x, t, cond)
        out64 = model.double()(x, t, cond)  # float32 inputs are cast to the parameters' dtype
        assert out64.dtype == torch.float64
        assert torch.allclose(out64.float(), ref, atol=1e-4)
        model.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model(x, t, cond)
    assert torch.isfinite(out_bf16).all()
    assert (out_bf16.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


@pytest.mark.parametrize("conditioning", ["spade", "none"])
def test_save_and_load_are_bit_exact(conditioning, tmp_path):
    model = small_unet(conditioning, channel_mult=[1, 2], attention_resolutions=[2])
    randomise_(model)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "config.json").is_file()
    loaded = ConditionedUNet.from_pretrained(tmp_path).eval()
    def public(config) -> dict:
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert public(loaded.config) == public(model.config)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    x, t, cond = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, cond), loaded(x, t, cond))


def test_config_from_omegaconf_lists_saves(tmp_path):
    """Hydra passes ListConfig values; the saved config holds plain lists."""
    from omegaconf import OmegaConf

    node = OmegaConf.create({"channel_mult": [1, 2], "attention_resolutions": [2]})
    model = small_unet("none", channel_mult=node.channel_mult, attention_resolutions=node.attention_resolutions)
    assert model.config.channel_mult == [1, 2] and model.config.attention_resolutions == [2]
    model.save_pretrained(tmp_path)
    assert ConditionedUNet.from_pretrained(tmp_path).config.channel_mult == [1, 2]
