"""AutoencoderModule: manual GAN optimisation, optimisers / schedules / clipping from config nodes, resume,
metrics, image logging, checkpoint / safetensors I/O."""

from __future__ import annotations

import copy
from unittest import mock

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from fitdiff.autoencoder import AutoencoderModule, load_autoencoder
from fitdiff.config import ConfigError, validate_config
from fitdiff.optim import WarmupCosine

NETWORK = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=2, quantizer={"n_codes": 32})
VAL_METRICS = {
    f"val/{m}_{k}" for m in ("diffuse", "specular", "normals") for k in ("psnr", "ssim", "l1")
} | {"val/normals_angular_error", "val/normals_angular", "val/rec_loss", "val/vq_loss"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _module(module_kwargs: dict | None = None, **loss) -> AutoencoderModule:
    loss = {"perceptual_weight": 0.0, "disc_start": 0, "disc_ch": 8, "disc_layers": 2, **loss}
    return AutoencoderModule(net=NETWORK, loss=loss, **{"optimizer": {"lr": 1e-3}, **(module_kwargs or {})})


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


def test_export_is_atomic_and_records_the_constructor_arguments(tmp_path, monkeypatch):
    import json

    import safetensors.torch
    from safetensors import safe_open

    model = _module()
    path = model.export_safetensors(tmp_path / "ae.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["config"]) == model.net.config
    assert model.net.config["quantizer"] == {"n_codes": 32} and model.net.config["ch"] == 8
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        _module().export_safetensors(path)
    assert path.read_bytes() == before  # the old export is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae.safetensors"]  # no temporary file left


def test_checkpoint_naming_another_network_class_is_refused(tmp_path):
    ckpt = tmp_path / "odd.ckpt"
    torch.save({"hyper_parameters": {"net": {"_target_": "torch.nn.Linear", "in_features": 1, "out_features": 1}},
                "state_dict": {}}, ckpt)
    with pytest.raises(ValueError, match="not a BranchedVQAutoencoder"):
        load_autoencoder(ckpt)


@pytest.mark.parametrize(
    "override, key",
    [
        ("+model.net.chh=8", r"model\.net\.chh"),
        ("+model.net.quantizer.codes=3", r"model\.net\.quantizer\.codes"),
        ("+model.loss.disc_strat=3", r"model\.loss\.disc_strat"),
        ("+model.optimizer.lrr=0.1", r"model\.optimizer\.lrr"),
        ("+model.disc_optimizer.momentum=0.9", r"model\.disc_optimizer\.momentum"),
        ("model.gradient_clip_algorithm=l2", r"model\.gradient_clip_algorithm"),
    ],
)
def test_unknown_nested_keys_are_named_by_the_config_validator(compose_train, override, key):
    cfg = compose_train("quickstart_ae", override)
    with pytest.raises(ConfigError, match=key):
        validate_config(cfg)


def test_parts_are_swapped_and_overridden_from_the_command_line(compose_train):
    cfg = compose_train(
        "quickstart_ae", "model/scheduler=cosine", "model.scheduler.warmup_steps=10", "model.optimizer.lr=0.002",
        "model/optimizer@model.disc_optimizer=adamw", "model.net.quantizer.n_codes=64", "model.gradient_clip_val=0.5",
    )
    validate_config(cfg)
    model = instantiate(cfg.model)
    assert model.net.quantizers["diffuse"].n_codes == 64
    assert model.hparams.scheduler["total_steps"] == cfg.trainer.max_steps  # interpolated, stored resolved
    (opt_g, opt_d), (sch_g, sch_d) = model.configure_optimizers()
    assert type(opt_g) is torch.optim.Adam and type(opt_d) is torch.optim.AdamW
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.002 / 10)  # same lr (interpolated), warm-up step 0
    assert opt_g.param_groups[0]["betas"] == (0.5, 0.9) and opt_d.param_groups[0]["weight_decay"] == 0.01
    assert sch_g.lr_lambdas[0].total_steps == cfg.trainer.max_steps


def test_bad_optimiser_or_schedule_fails_when_the_model_is_built():
    with pytest.raises(ConfigError, match=r"model\.optimizer .*lrr"):
        _module({"optimizer": {"_target_": "torch.optim.Adam", "lrr": 0.1}})
    with pytest.raises(ConfigError, match=r"model\.scheduler .*total_steps"):
        _module({"scheduler": {"_target_": "fitdiff.optim.warmup_cosine", "total_steps": -1}})


def test_schedules_step_once_per_generator_step_and_resume(tmp_path):
    schedule = {"_target_": "fitdiff.optim.warmup_cosine", "warmup_steps": 2, "total_steps": 6, "min_lr_ratio": 0.1}
    kwargs = {"scheduler": schedule, "disc_optimizer": {"_target_": "torch.optim.SGD", "lr": 0.01}}
    trainer = _trainer(tmp_path, max_steps=3)
    model = _module(kwargs, disc_start=2)  # the discriminator's schedule advances before it trains
    trainer.fit(model, train_dataloaders=_loader(n=16))
    factor = WarmupCosine(6, 2, 0.1)(3)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * factor)
    assert trainer.optimizers[1].param_groups[0]["lr"] == pytest.approx(0.01 * factor)
    ckpt = tmp_path / "three.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert [s["last_epoch"] for s in state["lr_schedulers"]] == [3, 3]
    assert state["hyper_parameters"]["scheduler"]["total_steps"] == 6  # plain dicts

    resumed = _trainer(tmp_path, max_steps=5)
    resumed.fit(_module(kwargs, disc_start=2), train_dataloaders=_loader(n=16), ckpt_path=ckpt)
    assert resumed.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * WarmupCosine(6, 2, 0.1)(5))
    assert resumed.lr_scheduler_configs[1].scheduler.last_epoch == 5


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_from_the_model_config(tmp_path, algorithm):
    torch.manual_seed(0)
    sgd = {"_target_": "torch.optim.SGD", "lr": 1.0}
    model = _module({"optimizer": sgd, "gradient_clip_val": 1e-3, "gradient_clip_algorithm": algorithm})
    trainable = lambda m: {k: v.detach().clone() for k, v in m.named_parameters() if "codebook" not in k}  # noqa: E731
    gen, disc = trainable(model.net), trainable(model.loss.discriminators)
    _trainer(tmp_path, max_steps=1).fit(model, train_dataloaders=_loader())
    for before, now in ((gen, trainable(model.net)), (disc, trainable(model.loss.discriminators))):
        step = torch.cat([(now[k] - before[k]).flatten() for k in before])  # = -lr * clipped gradient
        assert step.abs().max() > 0
        if algorithm == "norm":
            assert step.norm() <= 1e-3 * 1.001
        else:
            assert step.abs().max() <= 1e-3 * 1.001


def test_plain_ddp_is_refused_naming_the_strategy_key():
    model = _module()
    model.trainer = L.Trainer(accelerator="cpu", devices=1, strategy="ddp", logger=False)
    with pytest.raises(ConfigError, match=r"trainer\.strategy.*ddp_find_unused_parameters_true"):
        model.setup("fit")
    model.trainer = L.Trainer(accelerator="cpu", devices=1, strategy="ddp_find_unused_parameters_true", logger=False)
    model.setup("fit")  # accepted
