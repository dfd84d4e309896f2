"""The autoencoder can learn: trained on one batch for a few dozen steps, its PSNR on that batch rises."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fitdiff.autoencoder import AutoencoderModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

R = 16  # map resolution


def _smooth_maps(index: int) -> dict[str, torch.Tensor]:
    """One sample of smooth, face-map-like textures (learnable, unlike white noise)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, R), torch.linspace(0, 1, R), indexing="ij")
    diffuse = torch.stack([0.5 + 0.3 * torch.sin(6 * x + index), 0.4 + 0.2 * y, 0.3 + 0.2 * torch.cos(5 * y + index)])
    specular = (0.2 + 0.1 * x * y)[None]
    tilt = torch.stack([0.3 * torch.sin(4 * x + index), 0.3 * torch.cos(4 * y), torch.ones_like(x)])
    return {"diffuse": diffuse, "specular": specular, "normals": F.normalize(tilt, dim=0)}


def _psnr(model: AutoencoderModule, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """PSNR in dB of each map's reconstruction, in data space (normals over their [-1, 1] range)."""
    model.eval()
    with torch.no_grad():
        out = model.net(batch)
        target, recon = model.net.to_data_space(out.inputs), model.net.to_data_space(out.recon)
    model.train()
    peak = {"diffuse": 1.0, "specular": 1.0, "normals": 2.0}
    return {k: float(10 * torch.log10(peak[k] ** 2 / F.mse_loss(recon[k], target[k]))) for k in target}


def test_psnr_on_one_batch_rises_within_forty_steps(tmp_path):
    torch.manual_seed(0)
    loader = DataLoader([_smooth_maps(i) for i in range(4)], batch_size=4)
    batch = next(iter(loader))
    model = AutoencoderModule(
        net=dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, embed_dim=2, quantizer={"n_codes": 32}),
        loss={"perceptual_weight": 0.0, "disc_start": 10**6, "disc_ch": 8, "disc_layers": 2},
        optimizer={"lr": 3e-3},
    )
    before = _psnr(model, batch)
    trainer = L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=40, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0,
    )
    trainer.fit(model, loader)
    after = _psnr(model, batch)
    assert trainer.global_step == 40
    for name in before:  # measured: +17 to +20 dB per map
        assert after[name] > before[name] + 10.0, (name, before[name], after[name])
    assert after["diffuse"] > 22.0 and after["specular"] > 22.0, after
