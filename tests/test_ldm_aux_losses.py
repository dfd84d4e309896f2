"""Auxiliary x0 losses: zero where they should be, differentiable, restricted to low-noise timesteps."""

from __future__ import annotations

import pytest
import torch

from fitdiff.face.preview import preview_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE_MODEL = {"_target_": "fitdiff.face.make_procedural_shape_model", "n_vertices": 600, "n_components": 6}


@pytest.fixture(scope="module")
def parts(latent_dataset):
    from fitdiff.data import LatentDataModule
    from fitdiff.ldm import LatentDiffusionModule

    module = LatentDiffusionModule(autoencoder=str(latent_dataset.autoencoder), latents=str(latent_dataset.latents),
                                   net={"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                                        "attention_resolutions": [], "spade_map_channels": 8})
    dm = LatentDataModule(latent_dataset.latents, batch_size=4, num_workers=0, seed=0,
                          fields=["latent", "shape", "identity", "meta"])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    return module, module.latents(batch), module.pipeline(ema=False)


def test_shape_loss_is_zero_on_the_truth_and_counts_only_low_noise(parts):
    from fitdiff.ldm.aux_losses import ShapeLoss

    module, lb, pipe = parts
    loss = ShapeLoss(weight=2.0, max_timestep=100, shape_model=SHAPE_MODEL)
    low = torch.zeros(4, dtype=torch.long)
    value, logs = loss(x0=lb.z0, t=low, latents=lb, pipeline=pipe)
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    x0 = (lb.z0 + 0.5 * module.loss_mask).requires_grad_(True)
    value, logs = loss(x0=x0, t=low, latents=lb, pipeline=pipe)
    value.backward()
    assert value.item() > 0 and logs["rms_mm"] > 0 and x0.grad.abs().sum() > 0
    high, _ = loss(x0=x0, t=torch.full((4,), 500), latents=lb, pipeline=pipe)
    assert high.item() == 0.0


def test_identity_loss_renders_and_backpropagates_to_x0(parts, latent_dataset, monkeypatch):
    import fitdiff.ldm.aux_losses as aux

    module, lb, pipe = parts
    # the random test samples carry no renderable camera: render them under the preview scene
    monkeypatch.setattr(aux, "camera_from_meta", lambda metas, device=None: preview_scene(len(metas), 112))
    loss = aux.IdentityLoss(weight=1.0, max_timestep=100, shape_model=SHAPE_MODEL,
                            recognizer_weights=str(latent_dataset.recognizer), max_samples=2)
    x0 = lb.z0.clone().requires_grad_(True)
    t = torch.tensor([0, 50, 900, 10])
    value, logs = loss(x0=x0, t=t, latents=lb, pipeline=pipe)
    value.backward()
    assert 0.0 <= logs["loss"].item() <= 2.0
    touched = x0.grad.flatten(1).abs().sum(1) > 0
    assert touched.tolist() == [True, True, False, False]  # t=900 is not low noise; max_samples=2 drops t=10
