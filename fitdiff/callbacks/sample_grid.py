"""Grids of diffusion samples during training: conditional samples beside their ground truth, and
unconditional samples, as decoded maps and renders.

Every ``every_n_validations`` validations, on rank 0, the callback takes the first validation batch and
samples with the EMA denoiser (the configured sampler, the module's default guidance scale and a fixed
generator, so successive grids differ only by training): ``n`` conditional samples for the batch's first
identities — each row followed by the autoencoder reconstruction of that sample's ground truth with its
true shape — and ``n`` unconditional ones. Renders use the fixed preview scene
(:func:`fitdiff.face.preview.preview_scene`) when the module has a shape model. The grids go to W&B
loggers (``val/samples_conditional``, ``val/samples_unconditional``) and to
``<run>/samples/step<step>_{conditional,unconditional}.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from fitdiff.export.grid import avatar_grid, save_png
from fitdiff.face.preview import preview_scene
from fitdiff.face.scene import FaceScene

__all__ = ["SampleGrid", "render_previews"]

log = logging.getLogger(__name__)


@torch.no_grad()
def render_previews(shape_model: Any, face: Any, image_size: int = 96, views: tuple[float, ...] = (0.0, 35.0)
                    ) -> torch.Tensor:
    """(B, V, 3, S, S) renders of a :class:`~fitdiff.ldm.pipeline.DecodedFace` under the preview scene."""
    scene = FaceScene(shape_model)
    b = face.shape.shape[0]
    out = []
    for yaw in views:
        camera, lights = preview_scene(b, image_size, yaw, device=face.shape.device)
        m = face.maps
        out.append(scene(face.shape, m["diffuse"], m["specular"], m["normals"], camera, lights,
                         background=1.0).image.clamp(0, 1))
    return torch.stack(out, dim=1)


class SampleGrid(L.Callback):
    """Log sample grids every ``every_n_validations`` validations (see the module docstring).

    Args:
        every_n_validations: 1 = every validation; 0 disables.
        n: conditional samples (and as many unconditional ones) per grid.
        num_inference_steps: sampler steps (None = the module's configured sampler).
        seed: of the sampling generator.
        image_size: side of the preview renders in pixels.
        save_png: also write the grids into ``<run>/samples/``.
    """

    def __init__(self, every_n_validations: int = 1, n: int = 4, num_inference_steps: int | None = None,
                 seed: int = 0, image_size: int = 96, save_png: bool = True) -> None:
        self.every = int(every_n_validations)
        self.n = int(n)
        self.steps = num_inference_steps
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.save = bool(save_png)
        self._validations = 0

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking or self.every <= 0:
            return
        self._validations += 1
        if (self._validations - 1) % self.every or trainer.global_rank != 0:
            return
        grids = self.make_grids(pl_module, batch)
        self._publish(trainer, grids)

    @torch.no_grad()
    def make_grids(self, pl_module: Any, batch: Any) -> dict[str, Any]:
        """{"conditional": uint8 image, "unconditional": uint8 image} for one validation batch."""
        lb = pl_module.latents(batch)
        n = min(self.n, lb.z0.shape[0])
        pipe = pl_module.pipeline(ema=True)
        sampler = pl_module.build_sampler(**({} if self.steps is None else {"num_inference_steps": self.steps}))
        shape_model = pl_module.shape_model()
        gen = torch.Generator().manual_seed(self.seed)
        cond = pipe.decode(pipe.sample(n, sampler, identity=lb.identity[:n],
                                       guidance_scale=float(pl_module.hparams.guidance_scale), generator=gen))
        truth = pipe.decode(lb.z0[:n])
        truth.shape = lb.shape[:n]  # the true coefficients, not their normalised round trip
        uncond = pipe.decode(pipe.sample(n, sampler, generator=gen))
        renders = {}
        if shape_model is not None:
            renders = {k: render_previews(shape_model, f, self.image_size)
                       for k, f in (("cond", cond), ("truth", truth), ("uncond", uncond))}
        return {
            "conditional": avatar_grid(cond.maps, renders.get("cond"), ground_truth=truth.maps,
                                       ground_truth_renders=renders.get("truth")),
            "unconditional": avatar_grid(uncond.maps, renders.get("uncond")),
        }

    def _publish(self, trainer: L.Trainer, grids: dict[str, Any]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for name, image in grids.items():
                    logger.log_image(key=f"val/samples_{name}", images=[image], step=step,
                                     caption=[f"step {step}" + (": rows sample / ground truth"
                                                                if name == "conditional" else "")])
        if self.save and trainer.log_dir is not None:
            folder = Path(trainer.default_root_dir) / "samples"
            for name, image in grids.items():
                save_png(folder / f"step{step:07d}_{name}.png", image)
            log.info("sample grids of step %d in %s", step, folder)
