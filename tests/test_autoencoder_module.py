"""AutoencoderModule: manual GAN optimisation, resume, metrics, image logging, checkpoint / safetensors I/O."""

from __future__ import annotations

import copy
from unittest import mock

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fitdiff.autoencoder import AutoencoderModule, load_autoencoder
from fitdiff.config import ConfigError

NETWORK = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=2)
VAL_METRICS = {
    f"val/{m}_{k}" for m in ("diffuse", "specular", "normals") for k in ("psnr", "ssim", "l1")
} | {"val/normals_angular_error", "val/normals_angular", "val/rec_loss", "val/vq_loss"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _module(**loss) -> AutoencoderModule:
    loss = {"perceptual_weight": 0.0, "disc_start": 0, "disc_ch": 8, "disc_layers": 2, **loss}
    return AutoencoderModule(network=NETWORK, quantizer={"n_codes": 32}, loss=loss, lr=1e-3)


def _loader(n: int = 8, batch_size: int = 4, r: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    items = [
        {
            "diffuse": torch.rand(3, r, r, generator=g),
            "specular": torch.rand(1, r, r, generator=g),
            "normals": F.normalize(torch.randn(3, r, r, generator=g) + torch.tensor([0, 0, 2.0])[:, None, None], dim=0),
        }
        for _ in range(n)
    ]
    return DataLoader(items, batch_size=batch_size)


def _trainer(tmp_path, max_steps: int, **kwargs) -> L.Trainer:
    kwargs = {"limit_val_batches": 0, "num_sanity_val_steps": 0, **kwargs}
    return L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=max_steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )


def test_one_training_step_updates_both_optimisers(tmp_path):
    torch.manual_seed(0)
    model = _module()
    gen_before = {k: v.clone() for k, v in model.net.state_dict().items()}
    disc_before = {k: v.clone() for k, v in model.loss.discriminators.state_dict().items()}
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(model, train_dataloaders=_loader())
    assert trainer.global_step == 1  # the discriminator step is not counted as a second step
    changed = lambda before, now: any(not torch.equal(before[k], now[k]) for k in before)  # noqa: E731
    assert changed(gen_before, model.net.state_dict())
    assert changed(disc_before, model.loss.discriminators.state_dict())
    opt_g, opt_d = (o.optimizer for o in trainer.optimizers) if hasattr(trainer.optimizers[0], "optimizer") else trainer.optimizers
    assert all(int(s["step"]) == 1 for s in opt_g.state.values()) and len(opt_g.state) > 0
    assert all(int(s["step"]) == 1 for s in opt_d.state.values()) and len(opt_d.state) > 0
    for key in ("train/loss", "train/d_loss", "train/diffuse_d_weight", "train/normals_perplexity"):
        assert torch.isfinite(trainer.callback_metrics[key]), key


def test_discriminator_waits_for_disc_start(tmp_path):
    model = _module(disc_start=100)
    disc_before = {k: v.clone() for k, v in model.loss.discriminators.state_dict().items()}
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(model, train_dataloaders=_loader())
    assert all(torch.equal(v, model.loss.discriminators.state_dict()[k]) for k, v in disc_before.items())
    assert float(trainer.callback_metrics["train/diffuse_d_weight"]) == 0.0


def test_resume_restores_optimisers_discriminator_and_step(tmp_path):
    torch.manual_seed(0)
    trainer = _trainer(tmp_path, max_steps=2)
    model = _module()
    trainer.fit(model, train_dataloaders=_loader())
    ckpt_path = tmp_path / "two.ckpt"
    trainer.save_checkpoint(ckpt_path)

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # plain types only
    assert ckpt["global_step"] == 2 and len(ckpt["optimizer_states"]) == 2
    assert any(k.startswith("loss.discriminators.") for k in ckpt["state_dict"])
    assert not any(k.startswith("loss.perceptual.") for k in ckpt["state_dict"])

    saved_disc = {k: v.clone() for k, v in model.loss.discriminators.state_dict().items()}
    saved_opt = [o.state_dict() for o in trainer.optimizers]
    seen = {}

    class Inspect(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["step"] = trainer.global_step
            seen["disc"] = {k: v.clone() for k, v in pl_module.loss.discriminators.state_dict().items()}
            seen["opt"] = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]  # before step 3

    torch.manual_seed(1)
    fresh = _module()
    resumed = _trainer(tmp_path, max_steps=3, callbacks=[Inspect()])
    resumed.fit(fresh, train_dataloaders=_loader(), ckpt_path=ckpt_path)
    assert seen["step"] == 2 and resumed.global_step == 3
    assert all(torch.equal(saved_disc[k], seen["disc"][k]) for k in saved_disc)
    for before, after in zip(saved_opt, seen["opt"]):
        assert before["state"].keys() == after["state"].keys()
        for key, state in before["state"].items():
            assert torch.equal(state["exp_avg"], after["state"][key]["exp_avg"])
            assert int(state["step"]) == int(after["state"][key]["step"]) == 2


def test_every_validation_metric_is_logged(tmp_path):
    model = _module(perceptual_weight=0.5)
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=None)
    metrics = trainer.validate(model, dataloaders=_loader(), verbose=False)[0]
    expected = VAL_METRICS | {f"val/{m}_lpips" for m in ("diffuse", "specular", "normals")}
    assert expected <= set(metrics), expected - set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert 0 <= metrics["val/normals_angular_error"] <= 180 and metrics["val/diffuse_psnr"] > 0
    test = trainer.test(model, dataloaders=_loader(), verbose=False)[0]
    assert {k.replace("val/", "test/") for k in expected} <= set(test)


def test_reconstruction_grids_go_to_wandb_loggers(monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    model = _module()
    fake = mock.MagicMock(spec=WandbLogger)
    monkeypatch.setattr(AutoencoderModule, "loggers", property(lambda self: [fake]))
    batch = next(iter(_loader()))
    model.validation_step(batch, 0)
    keys = sorted(call.kwargs["key"] for call in fake.log_image.call_args_list)
    assert keys == ["val/recon_diffuse", "val/recon_normals", "val/recon_specular"]
    grid = fake.log_image.call_args_list[0].kwargs["images"][0]
    assert grid.shape[0] == 3 and grid.min() >= 0 and grid.max() <= 1


def test_checkpoint_and_safetensors_give_the_same_autoencoder(tmp_path):
    trainer = _trainer(tmp_path, max_steps=1)
    model = _module()
    trainer.fit(model, train_dataloaders=_loader())
    ckpt = tmp_path / "ae.ckpt"
    trainer.save_checkpoint(ckpt)
    batch = next(iter(_loader()))
    model.eval()
    with torch.no_grad():
        z = model.encode(batch)
        ref = model.decode(z)
    from_ckpt = load_autoencoder(ckpt)
    exported = model.export_safetensors(tmp_path / "ae.safetensors")
    from_st = load_autoencoder(exported)
    for net in (from_ckpt, from_st):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        with torch.no_grad():
            assert torch.allclose(net.encode(batch), z, atol=1e-6)
            out = net.decode(z)
        assert all(torch.allclose(out[k], ref[k], atol=1e-5) for k in ref)
    assert model.latent_slices == from_st.latent_slices
    loaded = AutoencoderModule.load_from_checkpoint(ckpt, weights_only=True)
    assert torch.equal(loaded.net.decoder_heads["normals"].last_layer, model.net.decoder_heads["normals"].last_layer)


def test_unknown_nested_keys_are_named():
    with pytest.raises(ConfigError, match=r"model\.network\.chh"):
        AutoencoderModule(network={"chh": 8})
    with pytest.raises(ConfigError, match=r"model\.loss\.disc_strat"):
        AutoencoderModule(network=NETWORK, loss={"disc_strat": 3})
    with pytest.raises(ConfigError, match=r"model\.quantizer\.codes"):
        AutoencoderModule(network=NETWORK, quantizer={"codes": 3})
