"""The reconstruction table: guided FitDiff against unguided sampling and the optimisation fitter.

``python evaluate.py table=reconstruction ckpts=[CKPT]`` fits held-out photos of the embedded dataset
with every preset of ``table.presets`` (``experiments/fitting/*.yaml``) and a ``mean face`` baseline (the
zero latent with the initial camera and lights), scores each fit with
:class:`~fitdiff.evaluation.fit_metrics.FitMetrics` (identity by the evaluation recognizer, photometric,
landmark, shape and albedo errors, seconds per photo), and writes ``reconstruction.{csv,md}`` in the
common table layout (:mod:`fitdiff.evaluation.table`). Every photo's fit draws its noise from its own
generator (seeded from ``(seed, photo)``), so a row is reproducible for a seed and batch size. The fits
take the dataset's landmarks, or (``table.landmarks=detected``) those the synthetic face detector finds
on the photo (:mod:`fitdiff.evaluation.landmark_source`).
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fitdiff.config.errors import ConfigError
from fitdiff.data.errors import ManifestError
from fitdiff.data.manifest import MANIFEST_NAME, load_manifest
from fitdiff.evaluation.checkpoints import inspect_checkpoints
from fitdiff.evaluation.faces import FaceSet, load_faces, select_photos
from fitdiff.evaluation.fit_metrics import FitMetrics
from fitdiff.evaluation.fit_runs import FitSetup, fit_photos
from fitdiff.evaluation.landmark_source import landmark_source
from fitdiff.evaluation.sampling import resolve_device
from fitdiff.evaluation.table import Column, ResultTable, TableRow
from fitdiff.io import sha256_file

__all__ = ["COLUMNS", "PRESET_LABELS", "ReconstructionResult", "ReconstructionTable"]

log = logging.getLogger(__name__)

COLUMNS: tuple[Column, ...] = (
    Column("identity_eval", "identity (eval)", "{:.3f}"),
    Column("identity_guide", "identity (guide)", "{:.3f}"),
    Column("photo_l1", "photo L1", "{:.4f}"),
    Column("photo_lpips", "photo LPIPS", "{:.3f}"),
    Column("landmark_px", "landmarks (px)", "{:.2f}"),
    Column("shape_rmse_mm", "shape (mm)", "{:.2f}"),
    Column("diffuse_psnr", "diffuse PSNR (dB)", "{:.2f}"),
    Column("seconds", "s / photo", "{:.2f}"),
)

#: row names of the standard presets
PRESET_LABELS = {"unguided": "unguided (conditional)", "guided_eps": "guided eps", "guided_x0": "guided x0",
                 "optimize": "optimisation fitter"}


@dataclass
class ReconstructionResult:
    """The table, its Markdown and the files written."""

    table: ResultTable
    markdown: str
    paths: list[Path] = field(default_factory=list)
    name: str = "reconstruction"
    title: str = "Reconstruction"
    plot_metrics: tuple[tuple[str, bool], ...] = ()
    images: list[tuple[str, str]] = field(default_factory=list)  # (path relative to the run dir, caption)

    def metrics(self) -> dict[str, float]:
        return self.table.metrics(f"{self.name}/")



class ReconstructionTable:
    """``experiments/table/reconstruction.yaml`` (see the module docstring).

    Args:
        ckpts: one diffusion checkpoint (a list, as ``evaluate.py``'s ``ckpts``).
        data_dir: the embedded dataset (photos, landmarks, ground truth, both recognizers).
        presets: fitting presets, one row each; preset_overrides: preset -> Hydra overrides.
        splits, n_photos: held-out photos (spread over subjects).
        seed: base seed of every fit's generator; batch_size: photos fitted together.
        device: ``auto``, ``cpu``, ``cuda``...; ema: use the EMA denoiser weights.
        recognizer_weights: the guiding recognizer (default ``<data_dir>/recognizer.safetensors``);
        eval_recognizer_weights: the evaluation recognizer (default ``<data_dir>/eval_recognizer.safetensors``).
        lpips: add the LPIPS column (the ``lpips_vgg16`` asset; a random VGG without it, said in the header).
        mean_face: add the ``mean face`` baseline row.
        landmarks: ``dataset`` (the photos' ground-truth 68 landmarks) or ``detected`` (5 found on the photo
            each fit sees by the synthetic detector ``detector_weights``, default
            ``<data_dir>/detector.safetensors``; rows then count ``faces_found``).
        images: photos per image grid of each fitted row (``images/<name>_<row>.png``, for the report);
            0 = none.
        name: file stem; progress: progress bar.
    """

    title = "Reconstruction"
    #: (metric, higher is better) of the plot
    plot_metrics: tuple[tuple[str, bool], ...] = (("identity_eval", True), ("photo_l1", False),
                                                  ("landmark_px", False), ("shape_rmse_mm", False),
                                                  ("diffuse_psnr", True))

    def __init__(
        self,
        ckpts: Sequence[str],
        data_dir: str,
        presets: Sequence[str] = ("unguided", "guided_eps", "guided_x0", "optimize"),
        preset_overrides: Mapping[str, Sequence[str]] | None = None,
        splits: Sequence[str] = ("val", "test"),
        n_photos: int | None = 40,
        seed: int | None = 0,
        batch_size: int = 4,
        device: str = "auto",
        ema: bool = True,
        recognizer_weights: str | None = None,
        eval_recognizer_weights: str | None = None,
        lpips: bool = True,
        mean_face: bool = True,
        landmarks: str = "dataset",
        detector_weights: str | None = None,
        images: int = 0,
        name: str = "reconstruction",
        progress: bool = True,
    ) -> None:
        ckpts = list(ckpts or [])
        if len(ckpts) != 1:
            raise ConfigError(f"table=reconstruction fits with one checkpoint: ckpts=[CKPT], got {len(ckpts)}")
        if batch_size < 1 or (n_photos is not None and n_photos < 1):
            raise ConfigError("table: batch_size and n_photos must be >= 1")
        self.info = inspect_checkpoints(ckpts, None)[0]
        self.data_dir = Path(data_dir)
        self.presets = list(presets)
        self.preset_overrides = {k: list(v) for k, v in (preset_overrides or {}).items()}
        unknown = sorted(set(self.preset_overrides) - set(self.presets))
        if unknown:
            raise ConfigError(f"table.preset_overrides names presets not in table.presets: {', '.join(unknown)}")
        self.splits, self.n_photos = list(splits), n_photos
        self.seed, self.batch_size, self.device = int(seed or 0), int(batch_size), resolve_device(device)
        self.ema = ema
        self.recognizer_weights = Path(recognizer_weights or self.data_dir / "recognizer.safetensors")
        self.eval_recognizer_weights = Path(eval_recognizer_weights or self.data_dir / "eval_recognizer.safetensors")
        self.lpips, self.mean_face, self.name, self.progress = lpips, mean_face, name, progress
        self.images = int(images)
        self.landmarks = landmark_source(landmarks, self.data_dir, detector_weights, self.device)

    def _encoders(self) -> tuple[Any, Any]:
        from fitdiff.face.identity import build_identity_encoder
        from fitdiff.face.synthetic_recognizer import SyntheticRecognizer  # noqa: F401  (registers it)

        if not self.recognizer_weights.is_file():
            raise ConfigError(f"guiding recognizer: no weights at {self.recognizer_weights} "
                              "(table.recognizer_weights=...)")
        if not self.eval_recognizer_weights.is_file():
            raise ConfigError(
                f"evaluation recognizer: no weights at {self.eval_recognizer_weights}; rebuild the dataset "
                "(data_prep/make_synthetic.py trains it) or set table.eval_recognizer_weights=..."
            )
        guide = build_identity_encoder("synthetic_recognizer", weights=str(self.recognizer_weights))
        judge = build_identity_encoder("synthetic_recognizer", weights=str(self.eval_recognizer_weights))
        return guide.to(self.device), judge.to(self.device)

    def _lpips(self) -> tuple[Any, str]:
        if not self.lpips:
            return None, "off"
        from fitdiff.assets import AssetError, require
        from fitdiff.metrics.lpips import PerceptualLoss

        try:
            require("lpips_vgg16")
            state = "VGG-16 backbone of the lpips_vgg16 asset"
        except AssetError:
            state = ("RANDOM VGG-16 backbone (the lpips_vgg16 asset is missing: python -m fitdiff.assets fetch "
                     "lpips_vgg16); not comparable with published LPIPS")
        with torch.random.fork_rng(devices=[]):  # a random backbone is the same whichever tables ran before
            torch.manual_seed(0)
            lpips = PerceptualLoss()
        return lpips.to(self.device), state

    def _rows(self) -> list[tuple[str, Any]]:
        from fitdiff.fitting import load_preset

        rows = []
        if self.mean_face:
            rows.append(("mean face", load_preset("optimize", ["optimize.steps=0"])))
        for preset in self.presets:
            cfg = load_preset(preset, self.preset_overrides.get(preset))
            rows.append((PRESET_LABELS.get(preset, preset), cfg))
        return rows

    def setup(self) -> FitSetup:
        """Load the photos, the checkpoint's pipeline, the scene, both recognizers and LPIPS."""
        from fitdiff.face.scene import FaceScene
        from fitdiff.ldm.module import LatentDiffusionModule

        try:
            manifest = load_manifest(self.data_dir)
        except ManifestError as exc:
            raise ConfigError(f"table.data_dir: {exc}") from exc
        held = load_faces(self.data_dir, self.splits, with_photos=True, manifest=manifest)
        photos = held.subset(select_photos(held, self.n_photos))
        if photos.landmarks is None or photos.landmarks.shape[1] != 68:
            raise ConfigError(f"{self.data_dir}: the reconstruction table needs photos with 68 landmarks")
        module = LatentDiffusionModule.load_checkpoint(self.info.path, map_location=self.device)
        shape_model = module.shape_model()
        if shape_model is None:  # the coefficients are the dataset's
            from fitdiff.synthetic.dataset_model import dataset_shape_model

            shape_model = dataset_shape_model(self.data_dir)
        if manifest.shape_model and manifest.shape_model != shape_model.model_id:
            raise ConfigError(f"shape model {shape_model.model_id!r} of {self.info.path} is not the dataset's "
                              f"({manifest.shape_model!r}, {self.data_dir})")
        scene = FaceScene(shape_model.to(self.device), normal_space="tangent")
        guide, judge = self._encoders()
        lpips, lpips_state = self._lpips()
        return FitSetup(photos=photos, pipeline=module.pipeline(ema=self.ema), scene=scene, guide=guide,
                        metrics=FitMetrics(scene, judge, guide, lpips), lpips_state=lpips_state, info=self.info)

    def fit_row(self, setup: FitSetup, cfg: Any, label: str, bar: Any, corrupt: Any = None,
                condition: str = "clean") -> TableRow:
        """One row: every photo fitted with preset ``cfg`` (``corrupt(part, batch) -> photos`` first, named
        ``condition``; the scores always against the clean photo), reusing an identical earlier fit."""
        outcome = fit_photos(setup, cfg, self.seed, self.batch_size, bar, corrupt, condition, self.landmarks)
        values = dict(outcome.metrics)
        counts = {"n_photos": len(setup.photos)}
        found = values.pop("face_found", None)
        if found is not None:
            counts["faces_found"] = int(round(float(found.sum())))
        return TableRow(label, values, counts)

    @property
    def counts(self) -> list[str]:
        """The count columns of the table."""
        return ["n_photos"] + (["faces_found"] if self.landmarks.detector is not None else [])

    def run(self, out_dir: str | Path, setup: FitSetup | None = None) -> ReconstructionResult:
        """Fit and score every row, write the files into ``out_dir`` and return the result (``setup``: one
        already loaded by :meth:`setup`, shared with other tables)."""
        out_dir = Path(out_dir)
        setup = setup or self.setup()
        rows = self._rows()
        bar = tqdm(total=len(rows) * len(setup.photos), desc="reconstruction table", disable=not self.progress,
                   dynamic_ncols=True)
        table_rows = [self.fit_row(setup, cfg, label, bar) for label, cfg in rows]
        bar.close()
        table = ResultTable(table_rows, [c for c in COLUMNS if c.key in setup.metrics.names], counts=self.counts)
        header = self._header(setup.photos, rows, setup.lpips_state)
        csv_path, md_path, markdown = table.write(out_dir, self.name, title=self.title, header=header)
        log.info("wrote %s, %s", csv_path, md_path)
        return self.result(table, markdown, [csv_path, md_path], out_dir, setup, rows)

    def result(self, table: ResultTable, markdown: str, paths: list[Path], out_dir: Path, setup: FitSetup,
               rows: list[tuple[str, Any]], conditions: Sequence[tuple[str, Any]] = (("clean", None),)
               ) -> ReconstructionResult:
        """The :class:`ReconstructionResult`, with the image grids of the fitted ``rows`` (under each
        ``(condition, corruption)``) written into ``out_dir/images`` when ``images > 0``."""
        images: list[tuple[str, str]] = []
        if self.images > 0:
            from fitdiff.evaluation.images import COLUMNS as GRID_COLUMNS
            from fitdiff.evaluation.images import slug, write_fit_grid

            for label, cfg in rows:
                for condition, corrupt in conditions:
                    outcome = fit_photos(setup, cfg, self.seed, self.batch_size, None, corrupt, condition,
                                         self.landmarks)
                    name = label if condition == "clean" and len(conditions) == 1 else f"{label} / {condition}"
                    path = write_fit_grid(out_dir / "images", f"{self.name}_{slug(name)}", setup.scene, outcome,
                                          self.images)
                    keys = ", ".join(setup.photos.keys[: min(self.images, self.batch_size)])
                    images.append((str(path.relative_to(out_dir)),
                                   f"{self.title}: {name} — {' | '.join(GRID_COLUMNS)} — photos {keys}"))
        return ReconstructionResult(table, markdown, paths, name=self.name, title=self.title,
                                    plot_metrics=self.plot_metrics, images=images)

    def _header(self, photos: FaceSet, rows: list[tuple[str, Any]], lpips_state: str) -> list[str]:
        lines = [
            f"{len(photos)} photos of {len(set(photos.subjects))} held-out subjects ({'+'.join(self.splits)} of "
            f"{self.data_dir}); one fit per photo, seed {self.seed} (per-photo generators), batch {self.batch_size}; "
            f"{'EMA' if self.ema else 'raw'} weights",
            f"dataset manifest sha256: {sha256_file(self.data_dir / MANIFEST_NAME)}",
            f"checkpoint: {self.info.path} (sha256 {self.info.sha256}, step {self.info.global_step}); autoencoder "
            f"sha256: {self.info.autoencoder_sha256}",
            f"identity (eval): evaluation recognizer {self.eval_recognizer_weights.name} (sha256 "
            f"{sha256_file(self.eval_recognizer_weights)}), never used to condition or guide; identity (guide): the "
            f"guiding recognizer {self.recognizer_weights.name} (sha256 {sha256_file(self.recognizer_weights)})",
            self.landmarks.describe(),
            f"photo LPIPS: {lpips_state}",
            f"seconds per photo: wall clock on this machine ({platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads, {self.device}), initialisation included",
        ]
        for label, cfg in rows:
            d = cfg.describe()
            text = f"row {label!r}: preset {d['name']} ({d['method']})"
            if cfg.method != "optimize":
                s = d["sampler"]
                text += f", {s['scheduler']} {s['num_inference_steps']} steps, eta {s['eta']}, CFG s={d['guidance_scale']}"
            if cfg.method == "guided":
                g = d["guidance"]
                text += (f", rule {g['rule']} scale {g['scale']} on steps [{g['start']}, {g['stop']}), recurrence "
                         f"{g['recurrence']}, {g['scene_steps']} camera/light Adam step(s) per guided step")
            if cfg.method == "optimize":
                text += f", {d['optimize']['steps']} Adam steps (lr {d['optimize']['lr']})"
            if cfg.polish.steps:
                text += f", polish {cfg.polish.steps} steps"
            if cfg.method != "optimize" or cfg.optimize.steps:
                w = d["loss"]
                text += "; loss " + ", ".join(f"{k} {v:g}" for k, v in w.items())
            lines.append(text)
        return lines
