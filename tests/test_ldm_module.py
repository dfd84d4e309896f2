"""The diffusion LightningModule: null-embedding dropout, EMA rule, losses, checkpoints, sampling, and one
training step of every diffusion experiment config."""

from __future__ import annotations

import pytest
import torch

from fitdiff.config.compose import experiment_names
from fitdiff.ldm.ema import DenoiserEMA, ema_decay
from fitdiff.tasks import train
from helpers import diffusion_overrides

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_NET = ["model.net.model_channels=32", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
            "model.net.attention_resolutions=[2]", "model.net.num_heads=2", "model.net.spade_map_channels=8"]


def _module(latent_dataset, **kwargs):
    from fitdiff.ldm import LatentDiffusionModule

    net = {"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [2],
           "num_heads": 2, "spade_map_channels": 8, **kwargs.pop("net", {})}
    return LatentDiffusionModule(autoencoder=str(latent_dataset.autoencoder), latents=str(latent_dataset.latents),
                                 net=net, **kwargs)


def _batch(latent_dataset, n=4):
    from fitdiff.data import LatentDataModule

    dm = LatentDataModule(latent_dataset.latents, batch_size=n, num_workers=0, seed=0)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_ema_decay_warms_up_and_averages_like_the_closed_form():
    assert ema_decay(0, 0.9999) == pytest.approx(0.1)
    assert ema_decay(1, 0.9999) == pytest.approx(2 / 11)
    assert ema_decay(10**6, 0.9999) == 0.9999
    assert ema_decay(5, 0.9, warmup=False) == 0.9
    net = torch.nn.Linear(2, 1, bias=False)
    ema = DenoiserEMA(net, decay=0.9999)
    values = [1.0, 3.0, -2.0]
    expected = None
    for n, v in enumerate(values):
        net.weight.data.fill_(v)
        ema.update(net)
        expected = v if expected is None else (lambda d: d * expected + (1 - d) * v)(ema_decay(n, 0.9999))
    assert torch.allclose(ema.module.weight, torch.full_like(net.weight, expected))
    assert ema.n_updates == 3 and not any(p.requires_grad for p in ema.parameters())


@pytest.mark.parametrize("p_uncond, expect_all", [(1.0, True), (0.0, False)])
def test_p_uncond_one_always_trains_with_the_null_embedding(latent_dataset, p_uncond, expect_all):
    module = _module(latent_dataset, p_uncond=p_uncond)
    seen = []
    original = module.denoiser.forward

    def spy(x, t, cond=None, uncond_mask=None):
        seen.append(None if uncond_mask is None else uncond_mask.clone())
        return original(x, t, cond, uncond_mask)

    module.denoiser.forward = spy
    module.log = lambda *a, **k: None
    for _ in range(3):
        module.training_step(_batch(latent_dataset, 8), 0)
    masks = torch.cat([m for m in seen])
    assert bool(masks.all()) is expect_all and bool(masks.any()) is expect_all


def test_identity_noise_perturbs_the_training_embeddings_only(latent_dataset):
    from fitdiff.config.errors import ConfigError

    module = _module(latent_dataset, identity_noise=0.5)
    lb = module.latents(_batch(latent_dataset, 8))
    torch.manual_seed(0)
    noisy = module.augment_identity(lb)
    assert torch.allclose(noisy.identity.norm(dim=-1), torch.ones(8), atol=1e-5)
    cos = (noisy.identity * lb.identity).sum(-1)
    # noise of norm ~0.5 on a unit vector: cos ~ 1 / sqrt(1 + 0.25) = 0.89
    assert float(cos.mean()) == pytest.approx(0.894, abs=0.03) and torch.equal(noisy.z0, lb.z0)
    seen = []
    original = module.denoiser.forward

    def spy(x, t, cond=None, uncond_mask=None):
        seen.append(cond.clone())
        return original(x, t, cond, uncond_mask)

    module.denoiser.forward = spy
    module.log = lambda *a, **k: None
    batch = _batch(latent_dataset, 8)
    module.training_step(batch, 0)
    assert not torch.allclose(seen[-1], module.latents(batch).identity)
    module.validation_step(batch, 0)  # validation sees the embeddings as they are
    assert torch.allclose(seen[-1], module.latents(batch).identity)
    assert module.augment_identity(lb) is not lb
    assert _module(latent_dataset).augment_identity(lb) is lb
    with pytest.raises(ConfigError, match="identity_noise"):
        _module(latent_dataset, identity_noise=-1.0)


def test_latents_are_normalised_with_padding_masked(latent_dataset):
    module = _module(latent_dataset)
    lb = module.latents(_batch(latent_dataset, 8))
    mask = module.loss_mask.expand_as(lb.z0).bool()
    assert lb.z0.shape[1:] == module.layout.latent_shape
    assert torch.equal(lb.z0[~mask], torch.zeros_like(lb.z0[~mask]))
    _, shape = module.layout.unpack(module.stats.denormalize(lb.z0))
    assert torch.allclose(shape, lb.shape, atol=1e-5)


def test_autoencoder_of_other_latent_width_is_refused(latent_dataset, tmp_path):
    from fitdiff.autoencoder import BranchedVQAutoencoder, export_safetensors
    from fitdiff.config import ConfigError
    from fitdiff.ldm import LatentDiffusionModule

    other = export_safetensors(BranchedVQAutoencoder(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=3,
                                                     quantizer=dict(n_codes=16)), tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="latents made by another autoencoder"):
        LatentDiffusionModule(autoencoder=str(other), latents=str(latent_dataset.latents))


def test_missing_autoencoder_file_names_it(latent_dataset, tmp_path):
    from fitdiff.config import ConfigError

    with pytest.raises(ConfigError, match="no autoencoder file at .*nope.safetensors"):
        _module(latent_dataset).__class__(autoencoder=str(tmp_path / "nope.safetensors"),
                                          latents=str(latent_dataset.latents))


@pytest.mark.slow
def test_train_checkpoint_sample_round_trip(latent_dataset, compose_train, tmp_path):
    """Train a few steps, reload the checkpoint (weights_only) and sample: reproducible, EMA != raw."""
    from fitdiff.ldm import LatentDiffusionModule

    cfg = compose_train("quickstart_ldm", *latent_dataset.overrides, *TINY_NET, "logger=none",
                        "trainer.max_steps=6", "trainer.val_check_interval=3", "data.batch_size=4",
                        "callbacks.sample_grid.every_n_validations=1", "callbacks.sample_grid.num_inference_steps=2",
                        "extras.print_config=false")
    metrics = train(cfg)
    assert {"val/loss", "val/ema_loss", "val/uncond_loss", "train/loss"} <= set(metrics)
    assert any(k.startswith("val/loss_t") for k in metrics)
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step0000003_conditional.png", "step0000003_unconditional.png",
        "step0000006_conditional.png", "step0000006_unconditional.png"]
    module = LatentDiffusionModule.load_checkpoint(run / "checkpoints" / "last.ckpt")
    raw, ema = module.denoiser.state_dict(), module.ema.module.state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)
    pipe = module.pipeline()
    sampler = module.build_sampler(num_inference_steps=3)
    ident = torch.nn.functional.normalize(torch.randn(2, 512, generator=torch.Generator().manual_seed(1)), dim=1)
    a = pipe.sample(2, sampler, identity=ident, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    b = pipe.sample(2, sampler, identity=ident, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    c = pipe.sample(2, sampler, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, c)
    face = pipe.decode(a)
    assert face.shape.shape == (2, latent_dataset.shape_dim)
    assert face.maps["diffuse"].shape == (2, 3, 32, 32) and face.maps["normals"].norm(dim=1).sub(1).abs().max() < 1e-4


DIFFUSION_EXPERIMENTS = [n for n in experiment_names() if n.startswith(("ldm_", "quickstart_ldm", "ablation_"))]


@pytest.mark.slow
@pytest.mark.parametrize("name", DIFFUSION_EXPERIMENTS)
def test_every_diffusion_experiment_runs_one_training_step(name, latent_dataset, compose_train):
    """The real configs (full-scale networks included), one optimiser step and one validation batch."""
    # random meta holds no renderable camera: the aux experiment runs its shape loss here (identity: below)
    aux = ["~model.aux_losses.identity", "model.aux_losses.shape.max_timestep=1000"] if "aux" in name else []
    cfg = compose_train(name, *diffusion_overrides(name, latent_dataset), *aux, "logger=none", "+trainer.fast_dev_run=1",
                        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true",
                        "data.batch_size=2", "data.num_workers=0", "callbacks.sample_grid.every_n_validations=0",
                        "extras.print_config=false")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    if "aux" in name:
        assert "train/shape_loss" in metrics


@pytest.mark.slow
def test_bf16_mixed_training_step_on_cpu(latent_dataset, compose_train):
    """The autocast path (bf16-mixed, as trainer=gpu uses) runs the module's step and validation."""
    cfg = compose_train("quickstart_ldm", *latent_dataset.overrides, *TINY_NET, "logger=none",
                        "+trainer.fast_dev_run=1", "trainer.precision=bf16-mixed", "data.batch_size=2",
                        "callbacks.sample_grid.every_n_validations=0", "extras.print_config=false")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor([metrics["train/loss"], metrics["val/ema_loss"]])).all()
