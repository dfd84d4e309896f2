"""Benchmark fits during diffusion training: a fixed validation subset reconstructed with short presets.

Every ``every_n_validations`` validations (sanity checks excluded) a :class:`ValidationFits` callback
reconstructs the first ``n_photos`` photos of a split (spread over subjects, loaded once) with the EMA
denoiser and each of its fitting presets (``methods``: logged name -> ``experiments/fitting/`` preset,
shortened by ``preset_overrides``), scores the fits (subclasses: identity, reflectance maps) and logs
the means over photos as ``bench/...`` scalars with ``pl_module.log`` (CSV, W&B, ``ModelCheckpoint``),
its own wall-clock cost as ``bench/<name>_seconds``, and, for every W&B logger, a table with one row per
(photo, method) holding the scores and the photo beside the fit's render. Photo ``i`` draws its noise
from the generator seeded from ``(seed, i)``, so successive benchmarks differ only by training.

Fits are shared: callbacks that fit the same photos with the same preset at the same ``global_step``
(e.g. :class:`~fitdiff.callbacks.IdentitySimilarityCallback` and
:class:`~fitdiff.callbacks.ReflectanceErrorCallback` together) reuse one fit, kept in a cache keyed by
the LightningModule, the step and everything that decides the fit; only the latest step is kept.

DDP: the fits run on rank 0 only (one set of photos, no duplicated work, no collective inside the
fits: the EMA network is not wrapped by DDP), then ``trainer.strategy.broadcast(metrics, src=0)`` gives
every rank the same values and every rank logs them with ``sync_dist=False, rank_zero_only=False``. The
metric is therefore logged once per validation with one value, and a checkpoint callback monitoring it
sees it on every rank; no reduction is needed since no rank holds a value of its own. The other ranks
wait in the broadcast meanwhile (keep the fits shorter than the process group's timeout). An error on
rank 0 is broadcast too, so every rank raises instead of waiting.

Gradients: Lightning validates under ``torch.inference_mode`` (``torch.no_grad`` with gloo), but fits
need autograd (the camera's L-BFGS refinement, guidance). The fits run under
``torch.inference_mode(False)`` and ``torch.enable_grad()``, on a copy of the latent statistics and
with the shape model's inference-mode buffers cloned (tensors made in inference mode, e.g. cached by a
validation step, cannot be saved for backward), and the global RNG state is restored afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch import nn

from fitdiff.config.errors import ConfigError
from fitdiff.evaluation.fit_runs import FIT_STREAM  # photo i draws the noise of its table fits

__all__ = ["BenchResult", "ValidationFits", "clear_fit_cache", "load_recognizer"]

log = logging.getLogger(__name__)

DEFAULT_METHODS: dict[str, str] = {"unguided": "unguided", "guided": "guided_eps"}
DEFAULT_OVERRIDES: tuple[str, ...] = ("sampler.num_inference_steps=10", "polish.steps=0")
IMAGE_COLUMN = "photo | render"

#: LightningModule -> {(global_step, fit signature): Reconstruction}
_FIT_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def clear_fit_cache() -> None:
    """Forget every shared fit."""
    _FIT_CACHE.clear()


def load_recognizer(path: Path) -> Any:
    """The synthetic recognizer with the weights at ``path`` (checked by :meth:`ValidationFits.check_files`)."""
    from fitdiff.face.identity import build_identity_encoder
    from fitdiff.face.synthetic_recognizer import SyntheticRecognizer  # noqa: F401  (registers it)

    return build_identity_encoder("synthetic_recognizer", weights=str(path))


@dataclass
class BenchResult:
    """One benchmark: logged name -> mean over photos, and the table (one row per photo and method)."""

    metrics: dict[str, float]
    columns: list[str]
    rows: list[list[Any]]
    shared: int = 0  # fits taken from the shared cache


@contextmanager
def _fitting_context(device: torch.device):
    """Autograd on (even inside inference mode), the global RNG state restored afterwards."""
    devices = [torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.enable_grad():
        yield


def _plain_tensors(module: nn.Module) -> nn.Module:
    """``module`` with its inference-mode buffers replaced by normal copies (in place; same values)."""
    for sub in module.modules():
        for name, value in list(sub._buffers.items()):
            if value is not None and value.is_inference():
                sub._buffers[name] = value.clone()
    return module


def _wandb_loggers(trainer: L.Trainer) -> list[Any]:
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def _side_by_side(photos: torch.Tensor, renders: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) photos and renders in [0, 1] -> B (H, 2W, 3) uint8 images."""
    pair = torch.cat([photos, renders], dim=-1).clamp(0, 1).mul(255).round().to(torch.uint8)
    return list(pair.permute(0, 2, 3, 1).cpu().numpy())


class ValidationFits(L.Callback):
    """Base of the benchmark callbacks (module docstring); subclasses define :meth:`score` and :meth:`metric_name`.

    Args:
        data_dir: the face-shard dataset with photos and 68 landmarks (the embedded synthetic one).
        split: the split whose photos are fitted; n_photos: how many (spread over subjects), >= 1.
        every_n_validations: 1 = every validation; 0 disables.
        methods: logged method name -> fitting preset (default unguided -> ``unguided``, guided -> ``guided_eps``).
        preset_overrides: Hydra overrides applied to every preset (default 10 sampler steps, no polish).
        seed: base seed of the per-photo generators.
        recognizer_weights: the guiding recognizer (default ``<data_dir>/recognizer.safetensors``).
        ema: fit with the EMA denoiser (else the raw one).
    """

    name: ClassVar[str] = "validation_fits"

    def __init__(self, data_dir: str, split: str = "val", n_photos: int = 4, every_n_validations: int = 1,
                 methods: Mapping[str, str] | None = None, preset_overrides: Sequence[str] | None = None,
                 seed: int = 0, recognizer_weights: str | None = None, ema: bool = True) -> None:
        from fitdiff.fitting import available_presets

        if n_photos < 1:
            raise ConfigError(f"{self.name}.n_photos must be >= 1, got {n_photos}")
        self.data_dir, self.split, self.n_photos = Path(data_dir), str(split), int(n_photos)
        self.every = int(every_n_validations)
        self.methods = dict(DEFAULT_METHODS if methods is None else methods)
        unknown = sorted(set(self.methods.values()) - set(available_presets()))
        if not self.methods or unknown:
            raise ConfigError(f"{self.name}.methods: unknown fitting preset(s) {', '.join(unknown) or '(none given)'}; "
                              f"presets: {', '.join(available_presets())}")
        self.overrides = list(DEFAULT_OVERRIDES if preset_overrides is None else preset_overrides)
        self.seed, self.ema = int(seed), bool(ema)
        self.recognizer_weights = Path(recognizer_weights or self.data_dir / "recognizer.safetensors")
        self._validations = 0
        self._presets: dict[str, Any] | None = None
        self._photos: Any = None
        self._guide: Any = None
        self._dataset_model: Any = None

    def required_files(self) -> dict[Path, tuple[str, str]]:
        """File -> (what it is, the option that sets it), checked at setup and before every benchmark."""
        return {self.recognizer_weights: ("guiding recognizer", f"callbacks.{self.name}.recognizer_weights")}

    def score(self, photos: Any, scene: Any, fit: Any) -> dict[str, torch.Tensor]:
        """Metric -> (B,) per-photo values of one method's fits of ``photos`` (a FaceSet)."""
        raise NotImplementedError

    def metric_name(self, method: str, metric: str) -> str:
        """The logged name of ``metric`` of ``method``."""
        raise NotImplementedError

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        """Fail early, on every rank, on a missing file or a bad preset override."""
        if self.every > 0:
            self.check_files()
            self.presets()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or self.every <= 0:
            return
        self._validations += 1
        if (self._validations - 1) % self.every:
            return
        self.run(trainer, pl_module)

    def run(self, trainer: L.Trainer, pl_module: Any) -> dict[str, float]:
        """Benchmark on rank 0, broadcast, log on every rank; returns the logged values."""
        result, error, payload = None, None, None
        if trainer.is_global_zero:
            try:
                result = self.compute(pl_module, trainer.global_step, images=bool(_wandb_loggers(trainer)))
                payload = {"metrics": result.metrics}
            except Exception as exc:  # every rank must leave the broadcast
                error, payload = exc, {"error": f"{type(exc).__name__}: {exc}"}
        payload = trainer.strategy.broadcast(payload, src=0)
        if error is not None:
            raise error
        if "error" in payload:
            raise RuntimeError(f"{self.name} failed on rank 0: {payload['error']}")
        for key, value in payload["metrics"].items():
            pl_module.log(key, float(value), on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=False)
        if result is not None:
            self._publish(trainer, result)
        return dict(payload["metrics"])

    def check_files(self) -> None:
        """Raise :class:`ConfigError` naming the first missing required file."""
        for path, (what, option) in self.required_files().items():
            if not path.is_file():
                raise ConfigError(f"{self.name}: {what}: no weights at {path} (set {option}=...)")

    def presets(self) -> dict[str, Any]:
        """Method -> its :class:`~fitdiff.fitting.FitConfig` (loaded once)."""
        if self._presets is None:
            from fitdiff.fitting import load_preset

            self._presets = {m: load_preset(p, self.overrides) for m, p in self.methods.items()}
        return self._presets

    def photos(self) -> Any:
        """The benchmark photos (a :class:`~fitdiff.evaluation.faces.FaceSet`, loaded once)."""
        if self._photos is None:
            from fitdiff.evaluation.faces import load_faces, select_photos

            faces = load_faces(self.data_dir, [self.split], with_photos=True)
            photos = faces.subset(select_photos(faces, self.n_photos))
            if photos.landmarks is None or photos.landmarks.shape[1] != 68:
                raise ConfigError(f"{self.name}: {self.data_dir} needs photos with 68 landmarks")
            self._photos = photos
        return self._photos

    def scene(self, pl_module: Any) -> Any:
        """The face scene of the module's shape model (the dataset's when the module has none)."""
        from fitdiff.data.manifest import load_manifest
        from fitdiff.face.scene import FaceScene

        model = pl_module.shape_model()
        if model is None:
            if self._dataset_model is None:
                from fitdiff.synthetic.dataset_model import dataset_shape_model

                self._dataset_model = dataset_shape_model(self.data_dir)
            model = self._dataset_model.to(pl_module.device)
        expected = load_manifest(self.data_dir).shape_model
        if expected and expected != model.model_id:
            raise ConfigError(f"{self.name}: the module's shape model {model.model_id!r} is not the one of "
                              f"{self.data_dir} ({expected!r})")
        return FaceScene(_plain_tensors(model), normal_space="tangent")

    def _signature(self, method: str) -> tuple:
        return (str(self.data_dir.resolve()), self.split, self.n_photos, self.methods[method], tuple(self.overrides),
                self.seed, str(self.recognizer_weights.resolve()), self.ema)

    def fits(self, pl_module: Any, step: int, scene: Any) -> tuple[dict[str, Any], int]:
        """Method -> :class:`~fitdiff.fitting.Reconstruction` of the photos at ``step`` (shared), and the
        number taken from the cache. Call under :func:`_fitting_context`."""
        from fitdiff.evaluation.sampling import sample_generators
        from fitdiff.fitting import Reconstructor

        cache = _FIT_CACHE.setdefault(pl_module, {})
        for key in [k for k in cache if k[0] != step]:
            del cache[key]
        photos, out, hits = self.photos(), {}, 0
        for method, cfg in self.presets().items():
            key = (step, self._signature(method))
            if key in cache:
                hits += 1
            else:
                if self._guide is None:
                    self._guide = load_recognizer(self.recognizer_weights)
                pipe = pl_module.pipeline(ema=self.ema)
                pipe.stats = dataclasses.replace(pipe.stats)  # fresh tensor cache (module docstring)
                flags = [(p, p.requires_grad) for p in pipe.parameters()]
                try:  # the Reconstructor freezes the pipeline: the raw denoiser must train on afterwards
                    reconstructor = Reconstructor(pipe, scene, self._guide.to(pl_module.device), cfg)
                    generators = sample_generators(self.seed, range(len(photos)), 1, stream=FIT_STREAM)
                    cache[key] = reconstructor(photos.image, photos.landmarks, generator=generators)
                finally:
                    for p, flag in flags:
                        p.requires_grad_(flag)
            out[method] = cache[key]
        return out, hits

    def compute(self, pl_module: Any, step: int = 0, images: bool = False) -> BenchResult:
        """Fit (or reuse the fits of) the photos with every method and score them (on this process)."""
        from fitdiff.fitting.relight import render_face

        start = time.perf_counter()
        self.check_files()
        photos = self.photos()
        with _fitting_context(pl_module.device):
            scene = self.scene(pl_module)
            fits, hits = self.fits(pl_module, step, scene)
            metrics: dict[str, float] = {}
            rows: list[list[Any]] = []
            names: list[str] = []
            for method, fit in fits.items():
                scores = self.score(photos, scene, fit)
                names = list(scores)
                metrics.update({self.metric_name(method, k): float(v.mean()) for k, v in scores.items()})
                shown = [None] * len(photos)
                if images:
                    image = photos.image.to(pl_module.device)
                    shown = _side_by_side(image, render_face(scene, fit.face, fit.params, image).image)
                for i, key in enumerate(photos.keys):
                    rows.append([key, method, *(float(v[i]) for v in scores.values()), shown[i]])
        seconds = time.perf_counter() - start
        metrics[f"bench/{self.name}_seconds"] = seconds
        log.info("%s at step %d: %d photos x %d methods in %.1f s%s", self.name, step, len(photos), len(fits),
                 seconds, f" ({hits} fit(s) shared with another benchmark callback)" if hits else "")
        return BenchResult(metrics, ["key", "method", *names, IMAGE_COLUMN], rows, hits)

    def _publish(self, trainer: L.Trainer, result: BenchResult) -> None:
        loggers = _wandb_loggers(trainer)
        if not loggers:
            return
        import wandb

        data = [[*row[:-1], wandb.Image(row[-1]) if row[-1] is not None else None] for row in result.rows]
        for logger in loggers:
            logger.log_table(key=f"bench/{self.name}", columns=result.columns, data=data, step=trainer.global_step)
