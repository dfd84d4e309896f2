"""From photos to avatars: target preparation, initialisation and the three fitting methods.

:class:`Reconstructor` runs, for a batch of B photos with their landmarks:

1. identity: the photos' embeddings by the recognizer the checkpoint was conditioned on (aligned by
   their 5 landmarks); the same embedding is the conditioning and the identity target;
2. camera: :func:`~fitdiff.fitting.camera_init.camera_from_landmarks` on the mean face's landmark
   vertices; lights: :func:`~fitdiff.fitting.lighting_init.sh_from_photo` on the mean reflectance
   (the decoded zero latent: every channel at its training mean);
3. the method of the preset (:class:`FitConfig`):
   - ``unguided``: conditional sampling (CFG), then camera and lights re-estimated for the sample's
     shape and albedo (nothing changes the latent);
   - ``guided``: conditional sampling with :class:`~fitdiff.fitting.guidance.FacialGuidance` as the
     sampler hook (camera and lights refined along the way; the SH lights re-solved for the final
     albedo);
   - ``optimize``: :func:`~fitdiff.fitting.optimize.optimize_latent` from the zero latent (no diffusion);
4. optional polish (``polish.steps`` > 0): :func:`optimize_latent` from the result.

The result is decoded with quantisation, like every sample of the pipeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from fitdiff.data.landmarks import five_point_landmarks
from fitdiff.diffusion import Sampler
from fitdiff.face.identity import IdentityEncoder
from fitdiff.face.scene import FaceScene
from fitdiff.fitting.camera_init import camera_from_landmarks
from fitdiff.fitting.guidance import FacialGuidance, GuidanceConfig
from fitdiff.fitting.lighting_init import sh_from_photo
from fitdiff.fitting.losses import FitLoss, FitTarget, LossWeights
from fitdiff.fitting.optimize import OptimizeConfig, optimize_latent
from fitdiff.fitting.scene_params import SceneParameters
from fitdiff.ldm.pipeline import DecodedFace, FitDiffPipeline

__all__ = ["METHODS", "CameraInitConfig", "FitConfig", "Reconstruction", "Reconstructor"]

METHODS = ("unguided", "guided", "optimize")
SHAPE_PRIORS = ("mean", "conditional")


@dataclass
class CameraInitConfig:
    """Camera initialisation: assumed vertical field of view (degrees) and L-BFGS refinement steps."""

    fov_degrees: float = 25.0
    refine_steps: int = 30


@dataclass
class FitConfig:
    """A fitting preset (``experiments/fitting/*.yaml``).

    Attributes:
        name: the preset's name (reported with every number it produced).
        method: ``unguided``, ``guided`` or ``optimize`` (module docstring).
        sampler: the sampler (``guided`` and ``unguided``).
        guidance_scale: classifier-free guidance s of the conditional sampling.
        shape_temperature: factor in [0, 1] on the shape channels' start noise (1 = sample the shape,
            0 = the conditional mean shape; :meth:`~fitdiff.ldm.pipeline.FitDiffPipeline.sample`).
        shape_prior: centre of the loss's shape prior: ``mean`` (the mean face, 0) or ``conditional``
            (``guided`` and ``unguided`` only): the conditional mean shape of the photo's identity, the
            shape of deterministic DDIM from the same start noise with the shape channels' noise zeroed
            (one unguided pass more; docs/DESIGN.md §6). What the identity embedding says of the
            shape then stays in the fit where the photo does not pin it.
        guidance: the guidance rule and its schedule (``guided``).
        loss: the fitting loss weights (guidance, optimisation, polish, scene refinement).
        camera: camera initialisation.
        optimize: the optimisation budget (``optimize``).
        polish: the final polish budget (0 steps = none).
    """

    name: str
    method: str
    sampler: Sampler | None = None
    guidance_scale: float = 1.0
    shape_temperature: float = 1.0
    shape_prior: str = "mean"
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    camera: CameraInitConfig = field(default_factory=CameraInitConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    polish: OptimizeConfig = field(default_factory=lambda: OptimizeConfig(steps=0))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"fitting method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method != "optimize" and self.sampler is None:
            raise ValueError(f"fitting preset {self.name!r} ({self.method}) needs a sampler")
        if self.shape_prior not in SHAPE_PRIORS:
            raise ValueError(f"fitting preset {self.name!r}: shape_prior must be one of {', '.join(SHAPE_PRIORS)}, "
                             f"got {self.shape_prior!r}")
        if self.shape_prior == "conditional" and self.method == "optimize":
            raise ValueError(f"fitting preset {self.name!r}: shape_prior=conditional needs the diffusion model; "
                             "the optimisation fitter (method optimize) has only the mean face")

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (the sampler by its scheduler, steps and eta)."""
        from dataclasses import asdict

        out = {"name": self.name, "method": self.method, "guidance_scale": self.guidance_scale,
               "shape_temperature": self.shape_temperature, "shape_prior": self.shape_prior,
               "sampler": self.sampler.describe() if self.sampler is not None else None}
        for key in ("guidance", "loss", "camera", "optimize", "polish"):
            out[key] = asdict(getattr(self, key))
        return out


@dataclass
class Reconstruction:
    """What a fit produced for B photos.

    Attributes:
        latent: (B, C, H, W) normalised packed latent; face: its decoded maps and shape.
        params: the fitted camera and lights; target: the photos and their embeddings.
        history: per guided step (or optimiser step) batch-mean loss terms.
        seconds: wall-clock seconds of the whole fit of the batch (initialisation included).
    """

    latent: torch.Tensor
    face: DecodedFace
    params: SceneParameters
    target: FitTarget
    history: list[dict[str, float]]
    seconds: float


class Reconstructor:
    """Fits photos with a pipeline and a preset (module docstring).

    Args:
        pipeline: the trained diffusion pipeline (denoiser, autoencoder, layout, stats).
        scene: the face scene of the checkpoint's shape model.
        recognizer: the identity encoder the checkpoint's embeddings came from (guides and conditions).
        config: the preset.
    """

    def __init__(self, pipeline: FitDiffPipeline, scene: FaceScene, recognizer: IdentityEncoder,
                 config: FitConfig) -> None:
        self.pipeline = pipeline.eval()
        for p in self.pipeline.parameters():
            p.requires_grad_(False)
        self.scene = scene
        self.recognizer = recognizer.freeze()
        self.config = config
        self.loss = FitLoss(scene, recognizer if config.loss.identity > 0 else None, config.loss)
        self.device = next(pipeline.parameters()).device

    def target(self, photos: torch.Tensor, landmarks: torch.Tensor) -> FitTarget:
        """:class:`FitTarget` of (B, 3, H, W) photos in [0, 1] and their (B, 68 or 5, 2) pixel landmarks."""
        if photos.dim() != 4 or photos.shape[1] != 3:
            raise ValueError(f"photos must be (B, 3, H, W), got {tuple(photos.shape)}")
        if landmarks.dim() != 3 or landmarks.shape[0] != photos.shape[0] or landmarks.shape[1] not in (5, 68) \
                or landmarks.shape[2] != 2:
            raise ValueError(f"landmarks must be ({photos.shape[0]}, 68 or 5, 2), got {tuple(landmarks.shape)}")
        photos = photos.to(self.device, torch.float32)
        landmarks = landmarks.to(self.device, torch.float32)
        five = torch.from_numpy(five_point_landmarks(landmarks.cpu().numpy())).to(self.device, torch.float32)
        with torch.no_grad():
            identity = self.recognizer(photos, five)
        return FitTarget(photo=photos, landmarks=landmarks, five=five, identity=identity)

    def initial_scene(self, target: FitTarget, face: DecodedFace) -> SceneParameters:
        """Camera from the landmarks on ``face``'s mesh (one face for all photos, or one per photo), SH
        lights from its albedo and normals."""
        vertices = self.loss.landmark_vertices(target.landmarks.shape[1])
        points = self.scene.model(face.shape).index_select(1, vertices)
        cfg = self.config.camera
        camera = camera_from_landmarks(target.landmarks, points.expand(target.batch_size, -1, -1),
                                       tuple(target.photo.shape[-2:]), fov_degrees=cfg.fov_degrees,
                                       refine_steps=cfg.refine_steps)
        sh = sh_from_photo(self.scene, face.shape, face.maps["diffuse"], face.maps["normals"], camera,
                           target.photo)
        return SceneParameters(camera, sh)

    @torch.no_grad()
    def conditional_mean_shape(self, target: FitTarget, x_T: torch.Tensor) -> torch.Tensor:
        """(B, K) shape coefficients (std units) of unguided conditional sampling from ``x_T`` with the
        shape channels' noise zeroed: the conditional mean shape of the photos' identity embeddings."""
        latent = self.pipeline.sample(target.batch_size, self.config.sampler, identity=target.identity,
                                      guidance_scale=self.config.guidance_scale, x_T=x_T, shape_temperature=0.0)
        return self._decode(latent).shape.detach()

    def _decode(self, z: torch.Tensor) -> DecodedFace:
        return self.pipeline.decode(z, quantize=True)

    def __call__(self, photos: torch.Tensor, landmarks: torch.Tensor,
                 generator: torch.Generator | list[torch.Generator] | None = None) -> Reconstruction:
        """Fit B photos (see :meth:`target` for the inputs); ``generator`` draws the sampling noise
        (a list: one per photo, so each photo's fit depends only on its own seed)."""
        start = time.perf_counter()
        cfg = self.config
        target = self.target(photos, landmarks)
        batch = target.batch_size
        mask = self.pipeline.layout.apply_mask
        zero = torch.zeros(batch, *self.pipeline.latent_shape, device=self.device)
        params = None
        if cfg.method != "unguided":  # unguided sampling sets camera and lights from its sample instead
            with torch.no_grad():
                mean_face = self._decode(zero[:1])
            params = self.initial_scene(target, mean_face)
        history: list[dict[str, float]] = []
        face = None
        if cfg.method == "optimize":
            latent, history = optimize_latent(zero, self._decode, self.loss, params, target, cfg.optimize,
                                              mask=mask)
        else:
            x_T = None  # drawn by the sampler, unless the prior's pass must start from the same noise
            if cfg.shape_prior == "conditional":
                x_T = randn_tensor((batch, *self.pipeline.latent_shape), generator=generator, device=self.device)
                target.prior_shape = self.conditional_mean_shape(target, x_T)
            hook = None
            if cfg.method == "guided":
                hook = FacialGuidance(self._decode, self.loss, params, target, cfg.guidance)
            latent = self.pipeline.sample(batch, cfg.sampler, identity=target.identity,
                                          guidance_scale=cfg.guidance_scale, generator=generator, hook=hook,
                                          x_T=x_T, shape_temperature=cfg.shape_temperature)
            with torch.no_grad():
                face = self._decode(latent)
            if hook is not None:  # the guided camera stays; the lights follow the final albedo
                history = hook.history
                params.sh.data.copy_(sh_from_photo(self.scene, face.shape, face.maps["diffuse"], face.maps["normals"],
                                                   params.camera(), target.photo))
            else:  # camera and lights for the sample's own shape and albedo
                params = self.initial_scene(target, face)
        if cfg.polish.steps > 0:
            latent, polish = optimize_latent(latent, self._decode, self.loss, params, target, cfg.polish, mask=mask)
            history += [{**h, "polish": 1.0} for h in polish]
            face = None
        if face is None:
            with torch.no_grad():
                face = self._decode(latent)
        return Reconstruction(latent=latent, face=face, params=params, target=target, history=history,
                              seconds=time.perf_counter() - start)
