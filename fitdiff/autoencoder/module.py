"""LightningModule of the autoencoder stage: manual GAN optimisation, metrics, image logging, export.

Hydra: ``experiments/model/ae_*.yaml``. Every part is a nested ``_target_`` node, checked against its
target's signature before a run starts (:mod:`fitdiff.config.validate`) and overridable on the command
line: ``model.net`` (the generator), ``model.net.quantizer``, ``model.loss``, ``model.optimizer`` and
``model.disc_optimizer`` (``_partial_``) and ``model.scheduler`` (``_partial_``, ``model/scheduler=cosine``).
The model node sets ``_recursive_: false``: the module receives the nodes and keeps them as plain dicts
(its hyperparameters, so checkpoints load with ``torch.load(weights_only=True)``), and builds the parts
itself.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from fitdiff.autoencoder.branched import UNIT_VECTOR_MAPS, AutoencoderOutput, BranchedVQAutoencoder
from fitdiff.autoencoder.losses import VQGANLoss, angular_error
from fitdiff.autoencoder.weights import export_safetensors
from fitdiff.config.errors import ConfigError
from fitdiff.optim import build_optimizer, build_partial, build_scheduler, config_node, plain

__all__ = ["AutoencoderModule"]

log = logging.getLogger(__name__)

_PERCEPTUAL_PREFIX = "loss.perceptual."  # fixed LPIPS weights: never stored in checkpoints
_NET = f"{BranchedVQAutoencoder.__module__}.{BranchedVQAutoencoder.__qualname__}"
_LOSS = f"{VQGANLoss.__module__}.{VQGANLoss.__qualname__}"
#: the default optimiser of both networks (taming-transformers' VQGAN settings)
DEFAULT_OPTIMIZER: dict[str, Any] = {"_target_": "torch.optim.Adam", "lr": 1e-4, "betas": [0.5, 0.9]}


def _over_default(node: Mapping[str, Any] | None, default: Mapping[str, Any]) -> dict[str, Any]:
    """``node`` when it names a ``_target_``, else its keys over ``default`` (``{lr: 1e-3}`` keeps Adam)."""
    node = plain(dict(node or {}))
    return node if "_target_" in node else {**plain(dict(default)), **node}


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
        net: ``_target_`` node of the generator (default target
            :class:`~fitdiff.autoencoder.branched.BranchedVQAutoencoder`), its ``quantizer`` a nested
            ``_partial_`` :class:`~fitdiff.autoencoder.quantizer.VectorQuantizer` node.
        loss: ``_partial_`` node of :class:`~fitdiff.autoencoder.losses.VQGANLoss` without ``maps`` and
            ``branches`` (they come from the network): weights, ``disc_start``, discriminator size.
        optimizer: ``_partial_`` node of the generator's optimiser (default Adam, lr 1e-4, betas
            (0.5, 0.9); a node without ``_target_`` overrides those keys); the learning rate is used as
            given, never rescaled by batch size or devices.
        disc_optimizer: ``_partial_`` node of the discriminators' optimiser (default: as ``optimizer``;
            a node without ``_target_`` overrides the generator's keys).
        scheduler: ``_partial_`` node of a learning-rate schedule (``fitdiff.optim``), one instance per
            optimiser, both stepped once per generator step; ``None`` keeps the rates constant.
        gradient_clip_val: clip each optimiser's gradients to this norm (or value) before its step;
            ``None`` or 0 disables. (``trainer.gradient_clip_val`` does not apply to manual optimisation.)
        gradient_clip_algorithm: ``"norm"`` (total 2-norm) or ``"value"`` (element-wise).
        n_log_images: maps per modality in the validation image grids (W&B loggers only).
        compile: ``torch.compile`` the generator network (``nn.Module.compile``, in place: parameter
            names and checkpoints are unchanged) when the trainer sets the model up; off by default.
        channels_last: keep the generator's and discriminators' 4-D weights in ``channels_last``
            (NHWC) memory order; convolutions then run NHWC (on 2 CPU cores the quickstart step drops
            from 0.63 to 0.47 s, docs/BENCHMARKS.md). Values, names and exported weights are unchanged.

    ``global_step`` counts generator steps (one per batch): the discriminator's optimiser is stepped
    through the strategy directly so that it is not counted, and ``max_steps``, ``disc_start``,
    schedules and checkpoint intervals all count batches.
    """

    def __init__(
        self,
        net: Mapping[str, Any] | None = None,
        loss: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        disc_optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Literal["norm", "value"] = "norm",
        n_log_images: int = 4,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        # plain dicts with explicit targets: what the checkpoint stores and what the parts are built from
        net = config_node(net, _NET)
        loss = config_node(loss, _LOSS, partial=True)
        optimizer = config_node(_over_default(optimizer, DEFAULT_OPTIMIZER), "torch.optim.Adam", partial=True)
        disc_optimizer = config_node(_over_default(disc_optimizer, optimizer), "torch.optim.Adam", partial=True)
        scheduler = None if scheduler is None else config_node(scheduler, "fitdiff.optim.constant", partial=True)
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ConfigError(f"model.gradient_clip_algorithm must be 'norm' or 'value', got {gradient_clip_algorithm!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = self._build_net(net)
        self.loss = build_partial(loss, "model.loss", maps=self.net.maps, branches=self.net.branches)
        self._check_optimisation()
        self.val_metrics = _metrics(list(self.net.maps))
        self.test_metrics = _metrics(list(self.net.maps))

    @staticmethod
    def _build_net(node: dict[str, Any]) -> BranchedVQAutoencoder:
        try:
            net = instantiate(node, _convert_="all")
        except Exception as exc:
            raise ConfigError(f"model.net ({node.get('_target_')}): {exc}") from exc
        if not isinstance(net, BranchedVQAutoencoder):
            raise ConfigError(f"model.net built a {type(net).__name__}, not a BranchedVQAutoencoder")
        return net

    def _check_optimisation(self) -> None:
        """Build the optimisers and schedules once on a stand-in parameter: a bad node fails now, not at fit."""
        probe = [nn.Parameter(torch.zeros(1))]
        for key in ("optimizer", "disc_optimizer"):
            build_scheduler(self.hparams.scheduler, build_optimizer(self.hparams[key], probe, f"model.{key}"))

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

    def setup(self, stage: str) -> None:
        """Refuse plain DDP before training: the GAN step's two backward passes each leave parameters unused."""
        from lightning.pytorch.strategies import DDPStrategy

        strategy = self.trainer.strategy if self._trainer is not None else None
        if stage == "fit" and isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters"):
            raise ConfigError(
                "trainer.strategy: the autoencoder's generator and discriminator backward passes each leave the "
                "other network's parameters unused; use trainer.strategy=ddp_find_unused_parameters_true"
            )

    def configure_model(self) -> None:
        """Memory order and ``torch.compile`` of the generator, once, before DDP wraps the module."""
        if self.hparams.get("channels_last"):
            self.net.to(memory_format=torch.channels_last)
            self.loss.to(memory_format=torch.channels_last)
        if self.hparams.get("compile") and getattr(self.net, "_compiled_call_impl", None) is None:
            log.info("torch.compile: the generator network")
            self.net.compile()

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        """Generator and discriminator optimisers, each with its own instance of the schedule."""
        hp = self.hparams
        opt_g = build_optimizer(hp.optimizer, self.net.parameters(), "model.optimizer")
        opt_d = build_optimizer(hp.disc_optimizer, self.loss.discriminators.parameters(), "model.disc_optimizer")
        return [opt_g, opt_d], [build_scheduler(hp.scheduler, opt) for opt in (opt_g, opt_d)]

    def _log_scalars(self, prefix: str, values: Mapping[str, torch.Tensor], batch_size: int, **kwargs) -> None:
        for key, value in values.items():
            self.log(f"{prefix}/{key}", value, batch_size=batch_size, prog_bar=key in ("loss", "rec_loss"), **kwargs)

    def _clip(self, optimizer: Any) -> None:
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val,
                                gradient_clip_algorithm=self.hparams.gradient_clip_algorithm)

    def _step_schedulers(self) -> None:
        """One step of both schedules per generator step (the discriminator's also before ``disc_start``)."""
        with warnings.catch_warnings():
            # the discriminator's schedule advances with the generator's steps, before its optimiser runs
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            for scheduler in self.lr_schedulers():
                scheduler.step()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        step = self.global_step
        out = self.net(batch)
        batch_size = next(iter(out.inputs.values())).shape[0]

        self.toggle_optimizer(opt_g)
        g_loss, logs = self.loss.generator_loss(out, self.net.last_layers(), step)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        self._clip(opt_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        if self.loss.disc_active(step):
            self.toggle_optimizer(opt_d)
            d_loss, d_logs = self.loss.discriminator_loss(out)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            self._clip(opt_d)
            # through the strategy (precision plugin, hooks) but not LightningOptimizer.step, which would
            # count a second global step per batch
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=lambda: None, model=self)
            self.untoggle_optimizer(opt_d)
            logs.update(d_logs)
        self._step_schedulers()

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
