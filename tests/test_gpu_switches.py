"""The switches of a GPU run on one CPU step: ``trainer.precision=bf16-mixed`` reaches the autoencoder's
networks under manual GAN optimisation, and ``model.compile=true`` reaches ``torch.compile`` for both
stages, in place (parameter names unchanged). The diffusion stage's bf16-mixed step:
tests/test_ldm_module.py. A real compiled step is not run here: compiling even the tiny autoencoder
took 166 s on the 2-core CI machine (docs/SCALING.md)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fitdiff import tasks
from fitdiff.autoencoder import AutoencoderModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NETWORK = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=2, quantizer={"n_codes": 32})
LOSS = {"perceptual_weight": 0.0, "disc_start": 0, "disc_ch": 8, "disc_layers": 2}


def _loader(n: int = 4, r: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    items = [{"diffuse": torch.rand(3, r, r, generator=g), "specular": torch.rand(1, r, r, generator=g),
              "normals": F.normalize(torch.randn(3, r, r, generator=g) + torch.tensor([0, 0, 2.0])[:, None, None], dim=0)}
             for _ in range(n)]
    return DataLoader(items, batch_size=2)


@pytest.fixture
def compile_calls(monkeypatch):
    """Every ``torch.compile`` call as (the compiled callable, kwargs); the callable is returned as it is."""
    calls: list = []

    def fake_compile(fn, *args, **kwargs):
        calls.append((fn, kwargs))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def test_bf16_mixed_autoencoder_step_runs_its_convolutions_in_bfloat16(tmp_path):
    torch.manual_seed(0)
    model = AutoencoderModule(net=NETWORK, loss=LOSS, optimizer={"lr": 1e-3})
    disc_before = {k: v.clone() for k, v in model.loss.discriminators.state_dict().items()}
    dtypes: set[torch.dtype] = set()

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            dtypes.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=1, logger=False,
                            precision="bf16-mixed", limit_val_batches=0, num_sanity_val_steps=0,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, train_dataloaders=_loader())
    finally:
        handle.remove()
    assert dtypes == {torch.bfloat16}  # generator and discriminator convolutions under autocast
    assert trainer.global_step == 1
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32
    assert any(not torch.equal(v, model.loss.discriminators.state_dict()[k]) for k, v in disc_before.items())
    for key in ("train/loss", "train/d_loss", "train/rec_loss"):
        assert torch.isfinite(trainer.callback_metrics[key]), key


@pytest.mark.parametrize("flag", [True, False])
def test_autoencoder_compile_flag_reaches_torch_compile_once(tmp_path, compile_calls, flag):
    model = AutoencoderModule(net=NETWORK, loss=LOSS, compile=flag)
    keys = list(model.state_dict())
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=1, logger=False,
                        limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=_loader())
    model.configure_model()  # a second set-up (validate, test) does not compile again
    if flag:
        assert len(compile_calls) == 1
        assert getattr(compile_calls[0][0], "__self__", None) is model.net  # the generator, in place
    else:
        assert compile_calls == []
    assert list(model.state_dict()) == keys  # checkpoints keep their parameter names


def test_diffusion_compile_flag_from_the_config_reaches_torch_compile(latent_dataset, compose_train, compile_calls):
    from conftest import TINY_UNET

    cfg = compose_train("quickstart_ldm", *latent_dataset.overrides, *TINY_UNET, "model.compile=true", "logger=none",
                        "+trainer.fast_dev_run=1", "data.batch_size=2", "callbacks.sample_grid.every_n_validations=0",
                        "extras.print_config=false")
    metrics = tasks.train(cfg)
    compiled = [fn.__self__ for fn, _ in compile_calls]
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "ConditionedUNet"
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_compile_is_off_in_both_full_scale_configs(compose_train):
    for name in ("ae_branched", "ldm_spade"):
        assert compose_train(name).model.compile is False


def test_channels_last_switch_keeps_values_and_exported_weights(tmp_path):
    """``model.channels_last=true``: NHWC weights after set-up, the same outputs, contiguous exports."""
    torch.manual_seed(0)
    model = AutoencoderModule(net=NETWORK, loss=LOSS, channels_last=True).eval()  # no codebook updates
    batch = next(iter(_loader()))
    with torch.no_grad():
        before = model.net(batch)
    model.configure_model()
    convs = [m for m in [*model.net.modules(), *model.loss.modules()] if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not all(m.weight.is_contiguous() for m in convs)  # the order really changed
    with torch.no_grad():
        after = model.net(batch)
    for key in ("diffuse", "specular", "normals"):
        # NHWC kernels sum in another order: float32 rounding only (a flipped code would move whole maps)
        torch.testing.assert_close(after.recon[key], before.recon[key], rtol=1e-3, atol=1e-3)
    from safetensors.torch import load_file

    exported = load_file(model.export_safetensors(tmp_path / "ae.safetensors"))
    assert all(v.is_contiguous() for v in exported.values())


def test_channels_last_is_on_in_the_autoencoder_configs(compose_train):
    for name in ("ae_branched", "quickstart_ae"):
        assert compose_train(name).model.channels_last is True
