"""LightningModule of the diffusion stage: noise-prediction training of the conditioned denoiser.

Hydra: ``experiments/model/ldm_*.yaml``. Every part is a nested ``_target_`` node kept as a plain dict
(its hyperparameters, so checkpoints load with ``torch.load(weights_only=True)``): ``model.net`` (the
denoiser), ``model.noise_scheduler`` (diffusers' DDPMScheduler with the ldm_linear schedule),
``model.objective`` (prediction type, min-SNR weighting), ``model.sampler`` (validation samples),
``model.optimizer`` / ``model.scheduler`` (``_partial_``) and ``model.aux_losses`` (optional x0 losses).

What a training step does (the parts are named components; the maths is in ``fitdiff/diffusion``):

1. batch -> packed, normalised latent z_0 (:class:`~fitdiff.ldm.layout.LatentLayout`,
   :class:`~fitdiff.ldm.latent_stats.LatentStats`); pre-encoded latent batches are used as they are, batches
   of maps are encoded by the frozen autoencoder;
2. t ~ U{0..T-1}, x_t = scheduler.add_noise(z_0, eps, t); the identity is replaced by the learned null
   embedding with probability ``p_uncond``;
3. loss = objective.loss(denoiser(x_t, t, id), ...) over valid latent elements, plus the weighted
   auxiliary losses on the predicted x_0 (shape, identity) at low-noise timesteps.

The EMA of the denoiser (:class:`~fitdiff.ldm.ema.DenoiserEMA`) is updated after every optimiser step.
Validation reports the loss of the raw and the EMA weights (``val/loss``, ``val/ema_loss``) overall and
per timestep bucket, with noise and timesteps drawn from a generator seeded by the batch index so that
every validation sees the same draws.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn

from fitdiff.autoencoder.branched import BranchedVQAutoencoder
from fitdiff.autoencoder.weights import load_autoencoder
from fitdiff.config.errors import ConfigError
from fitdiff.diffusion import DiffusionObjective, Sampler, alphas_cumprod
from fitdiff.io import sha256_file
from fitdiff.ldm.ema import DenoiserEMA
from fitdiff.ldm.latent_batch import LatentBatch, latent_batch
from fitdiff.ldm.latent_stats import LatentStats
from fitdiff.ldm.layout import LatentLayout
from fitdiff.ldm.pipeline import FitDiffPipeline
from fitdiff.optim import build_optimizer, build_scheduler, config_node, plain

__all__ = ["LatentDiffusionModule"]

log = logging.getLogger(__name__)

_NET = "fitdiff.ldm.ConditionedUNet"
_AE_PREFIX = "autoencoder."
DEFAULT_OPTIMIZER: dict[str, Any] = {"_target_": "torch.optim.AdamW", "lr": 1e-4, "weight_decay": 0.0}
DEFAULT_NOISE_SCHEDULER: dict[str, Any] = {
    "_target_": "diffusers.DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
    "beta_start": 0.0015, "beta_end": 0.0195, "clip_sample": False,
}
DEFAULT_SAMPLER: dict[str, Any] = {
    "_target_": "fitdiff.diffusion.Sampler", "num_inference_steps": 50, "eta": 0.0,
    "scheduler": {"_target_": "diffusers.DDIMScheduler", "num_train_timesteps": 1000,
                  "beta_schedule": "scaled_linear", "beta_start": 0.0015, "beta_end": 0.0195,
                  "timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False,
                  "clip_sample": False},
}


def _build(node: Mapping[str, Any], key: str, **kwargs: Any) -> Any:
    try:
        return instantiate(dict(node), _convert_="all", **kwargs)
    except Exception as exc:
        raise ConfigError(f"{key} ({node.get('_target_')}): {exc}") from exc


def _read_latent_info(latents: str | Path) -> dict[str, Any]:
    """The layout, statistics and autoencoder hash recorded in a latent dataset's manifest."""
    from fitdiff.data.latent_manifest import load_latent_manifest

    manifest = load_latent_manifest(latents)
    return {"layout": manifest.layout, "stats": manifest.stats, "autoencoder_sha256": manifest.autoencoder_sha256,
            "recognizer": manifest.source.get("recognizer")}


class LatentDiffusionModule(L.LightningModule):
    """Identity-conditioned latent diffusion over [z_diffuse | z_specular | z_normals | shape].

    Args:
        autoencoder: the trained autoencoder (``.safetensors`` export or ``.ckpt``); frozen, always eval.
            Its weights are stored in this module's checkpoints, so a checkpoint samples on its own.
        latents: a latent dataset folder (``data_prep/encode_latents.py``) whose manifest gives the
            layout and the train-split statistics; its autoencoder hash must match ``autoencoder``.
        layout, stats: the same as plain dicts (what checkpoints store; read from ``latents`` when None).
        net: ``_target_`` node of the denoiser; ``in_channels`` / ``out_channels`` null = the layout's.
        noise_scheduler: ``_target_`` node of the training noise schedule (diffusers DDPMScheduler).
        objective: ``_target_`` node of :class:`~fitdiff.diffusion.DiffusionObjective`.
        sampler: ``_target_`` node of the :class:`~fitdiff.diffusion.Sampler` used for validation samples.
        optimizer: ``_partial_`` optimiser node (default AdamW, lr 1e-4), used as given (never rescaled).
        scheduler: ``_partial_`` learning-rate schedule node (``fitdiff.optim``); None = constant.
        p_uncond: probability of training a sample with the null embedding (classifier-free guidance).
        identity_noise: conditioning augmentation in training: each unit identity embedding gets isotropic
            Gaussian noise of expected norm ``identity_noise`` and is re-normalised (0 = off). A recognizer
            embeds the photos of the subjects it was trained on more tightly than those of new subjects;
            the noise keeps the denoiser from reading more out of a training embedding than a new one holds.
        ema_decay: EMA decay (0.9999; warm-up min(decay, (1 + n) / (10 + n))); None disables the EMA.
        aux_losses: name -> ``_target_`` node of an auxiliary loss on the predicted x_0
            (:mod:`fitdiff.ldm.aux_losses`), each with its weight and timestep range.
        guidance_scale: the default CFG scale (validation samples, ``python -m fitdiff.sample``).
        val_timestep_buckets: validation loss also reported for this many equal timestep ranges.
        shape_loss_weight: weight of the shape plane's texels in the diffusion loss relative to a branch-latent
            element (1 = every valid element counts the same; the shape plane is then about a tenth of it).
        shape_model: ``_target_`` node of the dataset's PCA shape model (renders and meshes of samples;
            e.g. ``fitdiff.synthetic.dataset_model.dataset_shape_model``); None = maps only.
        recognizer: id of the recognizer that made the training embeddings (``name@sha256:<hex>``; read
            from the latent manifest): a photo given as identity must be embedded by the same network.
        autoencoder_sha256, autoencoder_config: recorded by the module itself (checkpoints).
        compile: ``torch.compile`` the denoiser (``nn.Module.compile``, in place: parameter names and
            checkpoints are unchanged) when the trainer sets the model up; off by default. The EMA copy
            (validation) stays eager.

    Sample grids during training: the :class:`~fitdiff.callbacks.SampleGrid` callback.
    """

    def __init__(
        self,
        autoencoder: str,
        latents: str | None = None,
        layout: Mapping[str, Any] | None = None,
        stats: Mapping[str, Any] | None = None,
        net: Mapping[str, Any] | None = None,
        noise_scheduler: Mapping[str, Any] | None = None,
        objective: Mapping[str, Any] | None = None,
        sampler: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        p_uncond: float = 0.1,
        identity_noise: float = 0.0,
        ema_decay: float | None = 0.9999,
        aux_losses: Mapping[str, Mapping[str, Any]] | None = None,
        guidance_scale: float = 3.0,
        val_timestep_buckets: int = 4,
        shape_loss_weight: float = 1.0,
        shape_model: Mapping[str, Any] | None = None,
        recognizer: str | None = None,
        autoencoder_sha256: str | None = None,
        autoencoder_config: Mapping[str, Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if shape_loss_weight <= 0:
            raise ConfigError(f"model.shape_loss_weight must be > 0, got {shape_loss_weight}")
        if not 0.0 <= p_uncond <= 1.0:
            raise ConfigError(f"model.p_uncond must be in [0, 1], got {p_uncond}")
        if identity_noise < 0:
            raise ConfigError(f"model.identity_noise must be >= 0, got {identity_noise}")
        ae = self._load_autoencoder(autoencoder, autoencoder_config)
        autoencoder_config = plain(dict(ae.config))
        if layout is None or stats is None:
            if latents is None:
                raise ConfigError("model.latents: a latent dataset folder is needed for the layout and statistics "
                                  "(python data_prep/encode_latents.py), or pass model.layout and model.stats")
            info = _read_latent_info(latents)
            layout = info["layout"] if layout is None else layout
            stats = info["stats"] if stats is None else stats
            if autoencoder_sha256 is None:
                autoencoder_sha256 = info["autoencoder_sha256"]
            if recognizer is None:
                recognizer = info["recognizer"]
        if autoencoder_sha256 is None and Path(autoencoder).is_file():
            autoencoder_sha256 = sha256_file(autoencoder)
        layout, stats = plain(dict(layout)), plain(dict(stats))
        net = config_node(net, _NET)
        for key in ("in_channels", "out_channels"):
            if net.get(key) is None:
                net[key] = LatentLayout.from_dict(layout).channels
        noise_scheduler = config_node(noise_scheduler or DEFAULT_NOISE_SCHEDULER, "diffusers.DDPMScheduler")
        objective = config_node(objective, "fitdiff.diffusion.DiffusionObjective")
        sampler = config_node(sampler or DEFAULT_SAMPLER, "fitdiff.diffusion.Sampler")
        optimizer = config_node(optimizer if optimizer and "_target_" in optimizer
                                else {**DEFAULT_OPTIMIZER, **plain(dict(optimizer or {}))},
                                "torch.optim.AdamW", partial=True)
        scheduler = None if scheduler is None else config_node(scheduler, "fitdiff.optim.constant", partial=True)
        aux_losses = {k: config_node(v, "") for k, v in plain(dict(aux_losses or {})).items()}
        shape_model = None if shape_model is None else plain(dict(shape_model))
        self.save_hyperparameters()

        self.layout = LatentLayout.from_dict(layout)
        self.stats = LatentStats.from_dict(stats, layout=self.layout)
        if self.stats.channels != self.layout.channels:
            raise ConfigError(f"model.stats has {self.stats.channels} channels, the layout {self.layout.channels}")
        ae_channels = ae.latent_channels
        if ae_channels != self.layout.map_channels:
            raise ConfigError(f"the autoencoder's latent has {ae_channels} channels, the latent layout "
                              f"{self.layout.map_channels}: latents made by another autoencoder?")
        self.autoencoder = ae
        self.denoiser = _build(net, "model.net")
        config = getattr(self.denoiser, "config", {})
        if config.get("in_channels", self.layout.channels) != self.layout.channels:
            raise ConfigError(f"model.net.in_channels={net['in_channels']} but the latent has {self.layout.channels}")
        self.noise_scheduler = _build(noise_scheduler, "model.noise_scheduler")
        self.objective: DiffusionObjective = _build(objective, "model.objective")
        self.sampler_node = sampler
        _build(sampler, "model.sampler")  # a bad node fails now, not at the first validation
        self.register_buffer("alphas_cumprod", alphas_cumprod(self.noise_scheduler).float(), persistent=False)
        loss_mask = self.layout.loss_mask()
        loss_mask[:, self.layout.shape_slice] *= shape_loss_weight
        self.register_buffer("loss_mask", loss_mask, persistent=False)
        self.ema = DenoiserEMA(self.denoiser, ema_decay) if ema_decay is not None else None
        self.aux_losses = nn.ModuleDict({k: _build(v, f"model.aux_losses.{k}") for k, v in aux_losses.items()})
        build_scheduler(scheduler, build_optimizer(optimizer, [nn.Parameter(torch.zeros(1))], "model.optimizer"))
        self._shape_model: Any = None

    # ------------------------------------------------------------------------------ parts

    @staticmethod
    def _load_autoencoder(path: str, config: Mapping[str, Any] | None) -> BranchedVQAutoencoder:
        """The frozen autoencoder from ``path``, or (a checkpoint restored elsewhere) an empty network of
        ``config`` that the checkpoint's state dict fills."""
        if Path(path).is_file():
            ae = load_autoencoder(path)
        elif config is not None:
            ae = BranchedVQAutoencoder(**dict(config))
        else:
            raise ConfigError(f"model.autoencoder: no autoencoder file at {path} (export one with "
                              "python -m fitdiff.autoencoder RUN/checkpoints/last.ckpt autoencoder.safetensors)")
        ae.eval()
        ae.requires_grad_(False)
        return ae

    def train(self, mode: bool = True) -> LatentDiffusionModule:
        """The autoencoder stays in eval mode (no quantiser statistics updates, no dropout)."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def pipeline(self, ema: bool = True) -> FitDiffPipeline:
        """The sampling pipeline with the EMA (default) or raw denoiser."""
        net = self.ema.module if ema and self.ema is not None else self.denoiser
        return FitDiffPipeline(net, self.autoencoder, self.layout, self.stats.to(self.device),
                               self.objective.prediction_type)

    def shape_model(self) -> Any:
        """The PCA shape model of ``model.shape_model`` (built once, on this module's device), or None."""
        node = self.hparams.shape_model
        if node is None:
            return None
        if self._shape_model is None:
            from fitdiff.ldm.aux_losses import build_shape_model

            # kept outside the module tree: not trained, not in checkpoints (rebuilt from the node)
            object.__setattr__(self, "_shape_model", build_shape_model(node).requires_grad_(False))
        return self._shape_model.to(self.device)

    def build_sampler(self, **overrides: Any) -> Sampler:
        """The configured validation sampler (``num_inference_steps=...`` etc. override its keys)."""
        return _build({**self.sampler_node, **overrides}, "model.sampler")

    @classmethod
    def load_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> LatentDiffusionModule:
        """A module from a checkpoint of this class (``weights_only=True``), frozen and in eval mode."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no diffusion checkpoint at {path}")
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        hp = dict(ckpt.get("hyper_parameters") or {})
        if "layout" not in hp or "net" not in hp:
            raise ValueError(f"{path} is not a LatentDiffusionModule checkpoint (no layout / net hyperparameters)")
        module = cls(**hp)
        module.load_state_dict(ckpt["state_dict"])
        module.eval().requires_grad_(False)
        return module

    # ------------------------------------------------------------------------------ training

    def configure_model(self) -> None:
        """With ``model.compile=true``, compile the denoiser once (before DDP wraps the module)."""
        if self.hparams.get("compile") and getattr(self.denoiser, "_compiled_call_impl", None) is None:
            log.info("torch.compile: the denoiser")
            self.denoiser.compile()

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = build_optimizer(hp.optimizer, self.denoiser.parameters(), "model.optimizer")
        sched = build_scheduler(hp.scheduler, opt)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def latents(self, batch: Any) -> LatentBatch:
        """Normalised packed latent z_0 and the condition of a batch (pre-encoded or maps)."""
        return latent_batch(batch, self.autoencoder, self.layout, self.stats.to(self.device))

    def _diffusion_loss(self, net: nn.Module, lb: LatentBatch, t: torch.Tensor, noise: torch.Tensor,
                        uncond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-sample loss (B,), model output, x_t)."""
        x_t = self.noise_scheduler.add_noise(lb.z0, noise, t)
        out = net(x_t, t, lb.identity, uncond)
        loss = self.objective.loss(out, lb.z0, noise, t, self.alphas_cumprod, mask=self.loss_mask)
        return loss, out, x_t

    def augment_identity(self, lb: LatentBatch) -> LatentBatch:
        """``lb`` with noisy re-normalised identity embeddings (``model.identity_noise``; unchanged at 0)."""
        sigma = float(self.hparams.get("identity_noise") or 0.0)
        if sigma == 0.0:
            return lb
        e = lb.identity
        noisy = e + sigma / e.shape[-1] ** 0.5 * torch.randn_like(e)
        return dataclasses.replace(lb, identity=torch.nn.functional.normalize(noisy, dim=-1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        lb = self.latents(batch)
        b = lb.z0.shape[0]
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,), device=self.device)
        noise = torch.randn_like(lb.z0)
        uncond = torch.rand(b, device=self.device) < self.hparams.p_uncond
        loss, out, x_t = self._diffusion_loss(self.denoiser, self.augment_identity(lb), t, noise, uncond)
        logs = {"diffusion_loss": loss.mean()}
        total = loss.mean()
        if len(self.aux_losses):
            x0 = self.objective.predict_x0(out, x_t, t, self.alphas_cumprod)
            for name, aux in self.aux_losses.items():
                value, aux_logs = aux(x0=x0, t=t, batch=batch, latents=lb, pipeline=self.pipeline(ema=False))
                total = total + value
                logs.update({f"{name}_{k}": v for k, v in aux_logs.items()})
        logs["loss"] = total
        for key, value in logs.items():
            self.log(f"train/{key}", value, batch_size=b, prog_bar=key == "loss")
        return total

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then the EMA update, before any ``on_train_batch_end`` hook: a checkpoint
        written there (``LastCheckpoint``, ``ModelCheckpoint``) holds the EMA of the weights it holds."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.denoiser)

    # ------------------------------------------------------------------------------ evaluation

    def _evaluate(self, batch: Any, batch_idx: int, stage: str) -> None:
        lb = self.latents(batch)
        b = lb.z0.shape[0]
        gen = torch.Generator(device="cpu").manual_seed(10_000 + batch_idx)
        n_t = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, n_t, (b,), generator=gen).to(self.device)
        noise = torch.randn(lb.z0.shape, generator=gen).to(self.device, lb.z0.dtype)
        nets = {"": self.denoiser}
        if self.ema is not None:
            nets["ema_"] = self.ema.module
        buckets = max(1, int(self.hparams.val_timestep_buckets))
        bucket = (t * buckets) // n_t
        for prefix, net in nets.items():
            loss, _, _ = self._diffusion_loss(net, lb, t, noise, None)
            self.log(f"{stage}/{prefix}loss", loss.mean(), batch_size=b, sync_dist=True, prog_bar=not prefix)
            # conditional loss per timestep bucket: how well each noise level is learned
            for k in range(buckets if buckets > 1 else 0):
                sel = bucket == k
                if sel.any():
                    lo, hi = k * n_t // buckets, (k + 1) * n_t // buckets - 1
                    self.log(f"{stage}/{prefix}loss_t{lo:03d}_{hi:03d}", loss[sel].mean(),
                             batch_size=int(sel.sum()), sync_dist=True)
            if stage == "val" and prefix == "":
                uncond = torch.ones(b, dtype=torch.bool, device=self.device)
                loss_u, _, _ = self._diffusion_loss(net, lb, t, noise, uncond)
                self.log(f"{stage}/uncond_loss", loss_u.mean(), batch_size=b, sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    # ------------------------------------------------------------------------------ checkpoints

    def denoiser_modules(self) -> Sequence[nn.Module]:
        """The trained networks (raw, EMA)."""
        return [self.denoiser] + ([self.ema.module] if self.ema is not None else [])
