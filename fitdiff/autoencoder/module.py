"""LightningModule of the autoencoder stage: manual GAN optimisation, metrics, image logging, export.

Hydra: ``experiments/model/ae_*.yaml`` (``_target_: fitdiff.autoencoder.AutoencoderModule``). Every
hyperparameter is a plain type (dicts, lists, numbers, strings), so checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from fitdiff.autoencoder.branched import UNIT_VECTOR_MAPS, AutoencoderOutput, BranchedVQAutoencoder
from fitdiff.autoencoder.losses import VQGANLoss, angular_error
from fitdiff.autoencoder.quantizer import VectorQuantizer
from fitdiff.autoencoder.weights import _network_config_from_hparams, build_network, export_safetensors
from fitdiff.config.errors import ConfigError

__all__ = ["AutoencoderModule"]

log = logging.getLogger(__name__)

_PERCEPTUAL_PREFIX = "loss.perceptual."  # fixed LPIPS weights: never stored in checkpoints


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain dicts / lists; anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, tuple):
        return list(value)
    return value


def _check_keys(group: str, values: Mapping[str, Any], target: Callable[..., Any], reserved: Sequence[str]) -> None:
    """Raise ConfigError naming ``model.<group>.<key>`` for a key ``target`` does not take."""
    params = [p for p in inspect.signature(target).parameters if p not in ("self", *reserved)]
    for key in values:
        if key not in params:
            raise ConfigError(f"unknown key 'model.{group}.{key}'. Valid keys: {', '.join(params)}")


def _metrics(maps: Sequence[str]) -> nn.ModuleDict:
    """``<map>_psnr``, ``<map>_ssim`` (data range 1) and ``<map>_angular_error`` (degrees) for unit maps."""
    metrics: dict[str, nn.Module] = {}
    for name in maps:
        metrics[f"{name}_psnr"] = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
        metrics[f"{name}_ssim"] = StructuralSimilarityIndexMeasure(data_range=1.0)
        if name in UNIT_VECTOR_MAPS:
            metrics[f"{name}_angular_error"] = MeanMetric()
    return nn.ModuleDict(metrics)


def _displayable(name: str, x: torch.Tensor) -> torch.Tensor:
    """Data-space map -> (B, 3, H, W) in [0, 1] (normals as (n + 1) / 2, one channel repeated)."""
    if name in UNIT_VECTOR_MAPS:
        x = (x + 1.0) * 0.5
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class AutoencoderModule(L.LightningModule):
    """Branched VQGAN training with two optimisers (generator, discriminators), manual optimisation.

    Args:
        maps: map name -> channels (default ``{diffuse: 3, specular: 1, normals: 3}``).
        branches: branch name -> maps (default one branch per map; one branch of all maps = ablation).
        network: keyword arguments of :class:`BranchedVQAutoencoder` (``ch``, ``ch_mult``,
            ``num_res_blocks``, ``embed_dim``, ``attention``, ``dropout``, ``share_trunk``,
            ``shared_codebook``).
        quantizer: keyword arguments of :class:`VectorQuantizer` (``n_codes``, ``beta``, ...).
        loss: keyword arguments of :class:`VQGANLoss` (weights, ``disc_start``, discriminator size).
        lr: generator Adam learning rate (used as given: never rescaled by batch size or devices).
        disc_lr: discriminator learning rate (default ``lr``).
        betas: Adam betas of both optimisers.
        n_log_images: maps per modality in the validation image grids (W&B loggers only).

    ``global_step`` counts generator steps (one per batch): the discriminator's optimiser is stepped
    through the strategy directly so that it is not counted, and ``max_steps``, ``disc_start`` and
    checkpoint intervals all count batches.
    """

    def __init__(
        self,
        maps: dict[str, int] | None = None,
        branches: dict[str, list[str]] | None = None,
        network: dict[str, Any] | None = None,
        quantizer: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        lr: float = 1e-4,
        disc_lr: float | None = None,
        betas: Sequence[float] = (0.5, 0.9),
        n_log_images: int = 4,
    ) -> None:
        super().__init__()
        maps, branches = _plain(maps), _plain(branches)
        network, quantizer, loss = _plain(network) or {}, _plain(quantizer) or {}, _plain(loss) or {}
        betas = [float(b) for b in _plain(betas)]
        _check_keys("network", network, BranchedVQAutoencoder, ("maps", "branches", "quantizer"))
        _check_keys("quantizer", quantizer, VectorQuantizer, ("dim",))
        _check_keys("loss", loss, VQGANLoss, ("maps", "branches"))
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = build_network(_network_config_from_hparams(self.hparams))
        self.loss = VQGANLoss(maps=self.net.maps, branches=self.net.branches, **loss)
        self.val_metrics = _metrics(list(self.net.maps))
        self.test_metrics = _metrics(list(self.net.maps))

    # ------------------------------------------------------------------------------ API for later stages

    def encode(self, x: Any, quantize: bool = False) -> torch.Tensor:
        """See :meth:`BranchedVQAutoencoder.encode` (data-space maps -> (B, C_total, h, w))."""
        return self.net.encode(x, quantize=quantize)

    def decode(self, z: torch.Tensor, quantize: bool = True) -> dict[str, torch.Tensor]:
        """See :meth:`BranchedVQAutoencoder.decode` (latent -> data-space maps)."""
        return self.net.decode(z, quantize=quantize)

    @property
    def latent_slices(self) -> dict[str, slice]:
        """Branch name -> channel slice of the concatenated latent."""
        return self.net.latent_slices

    def export_safetensors(self, path: str | Path) -> Path:
        """Write the generator (no discriminator, no LPIPS) and its config to a safetensors file."""
        return export_safetensors(self.net, path)

    # ------------------------------------------------------------------------------ training

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        opt_g = torch.optim.Adam(self.net.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        opt_d = torch.optim.Adam(
            self.loss.discriminators.parameters(), lr=hp.disc_lr or hp.lr, betas=tuple(hp.betas)
        )
        return [opt_g, opt_d]

    def _log_scalars(self, prefix: str, values: Mapping[str, torch.Tensor], batch_size: int, **kwargs) -> None:
        for key, value in values.items():
            self.log(f"{prefix}/{key}", value, batch_size=batch_size, prog_bar=key in ("loss", "rec_loss"), **kwargs)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        step = self.global_step
        out = self.net(batch)
        batch_size = next(iter(out.inputs.values())).shape[0]

        self.toggle_optimizer(opt_g)
        g_loss, logs = self.loss.generator_loss(out, self.net.last_layers(), step)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        if self.loss.disc_active(step):
            self.toggle_optimizer(opt_d)
            d_loss, d_logs = self.loss.discriminator_loss(out)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            # through the strategy (precision plugin, hooks) but not LightningOptimizer.step, which would
            # count a second global step per batch
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=lambda: None, model=self)
            self.untoggle_optimizer(opt_d)
            logs.update(d_logs)

        logs.update(out.stats)
        for name, q in self.net.quantizers.items():
            logs[f"{name}_codes_restarted"] = q.restarted.float()
        self._log_scalars("train", logs, batch_size)

    # ------------------------------------------------------------------------------ evaluation

    def _evaluate(self, batch: Any, stage: str, metrics: nn.ModuleDict) -> AutoencoderOutput:
        out = self.net(batch)
        batch_size = next(iter(out.inputs.values())).shape[0]
        rec, logs = self.loss.reconstruction(out)
        logs["rec_loss"] = torch.stack(list(rec.values())).sum()
        logs["vq_loss"] = out.vq_loss
        self._log_scalars(stage, logs, batch_size, sync_dist=True)
        target = self.net.to_data_space(out.inputs)
        pred = self.net.to_data_space(out.recon)
        for name in self.net.maps:
            x, y = _displayable(name, target[name]), _displayable(name, pred[name])
            metrics[f"{name}_psnr"].update(y, x)
            metrics[f"{name}_ssim"].update(y, x)
            if name in UNIT_VECTOR_MAPS:
                metrics[f"{name}_angular_error"].update(torch.rad2deg(angular_error(pred[name], target[name])))
        for key, metric in metrics.items():
            self.log(f"{stage}/{key}", metric, on_step=False, on_epoch=True, batch_size=batch_size)
        return out

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        out = self._evaluate(batch, "val", self.val_metrics)
        if batch_idx == 0:
            self._log_images(out, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def _log_images(self, out: AutoencoderOutput, stage: str) -> None:
        """Input (top row) / reconstruction (bottom row) grids per modality, to W&B loggers."""
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in self.loggers if isinstance(lg, WandbLogger)]
        if not loggers or self.hparams.n_log_images <= 0 or self.global_rank != 0:
            return
        from torchvision.utils import make_grid

        n = self.hparams.n_log_images
        target, pred = self.net.to_data_space(out.inputs), self.net.to_data_space(out.recon)
        for name in self.net.maps:
            rows = torch.cat([_displayable(name, target[name][:n]), _displayable(name, pred[name][:n])])
            grid = make_grid(rows.detach().float().cpu(), nrow=min(n, target[name].shape[0]), padding=1)
            for lg in loggers:
                lg.log_image(key=f"{stage}/recon_{name}", images=[grid], step=self.global_step,
                             caption=["top: input, bottom: reconstruction"])

    # ------------------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(_PERCEPTUAL_PREFIX)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if state is None:
            return
        for key, value in self.state_dict().items():
            if key.startswith(_PERCEPTUAL_PREFIX):
                state.setdefault(key, value)
