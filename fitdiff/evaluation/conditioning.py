"""The conditioning table: does the identity embedding steer the diffusion model towards the right face?

``python evaluate.py table=conditioning ckpts=[SPADE.ckpt,NONE.ckpt]`` (``experiments/table/conditioning.yaml``)
measures, on held-out photos of the face shards (default: the val and test splits, 40 photos spread over
subjects, 4 samples each), the errors of :mod:`fitdiff.evaluation.face_metrics` for these rows:

=================================  ===================================================================
``mean face``                      zero shape coefficients, per-texel mean training maps
``nearest training identity``      ground truth of the training sample with the most similar embedding
``linear probe``                   ridge regression embedding -> shape / maps, fitted on the train split
``unconditional``                  samples with the null embedding (first checkpoint)
``conditional <variant> s=<s>``    samples conditioned on the photo's ``id.npy``, CFG scale s, for every
                                   checkpoint and scale (default: 1 and the checkpoint's own scale)
``<sample row> (mean of k)``       the average of the k samples' coefficients and maps, scored once
=================================  ===================================================================

A sampled row's per-photo value is the mean over the photo's k samples; ``_mean`` / ``_std`` are over
photos. Sample ``j`` of photo ``i`` starts from the same noise in every sampled row
(:mod:`fitdiff.evaluation.sampling`). The same run writes the diversity report of unconditional samples
(:mod:`fitdiff.evaluation.diversity`). Files in the run dir: ``conditioning.csv``, ``conditioning.md``
(header: counts, sampler, seed, checkpoint / autoencoder / manifest hashes; the diversity report and the
acceptance checks as sections), ``diversity.csv``, ``diversity.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fitdiff.config.errors import ConfigError
from fitdiff.data.errors import ManifestError
from fitdiff.data.manifest import load_manifest
from fitdiff.diffusion import Sampler, check_same_schedule, ddim_scheduler, ddpm_scheduler, dpm_scheduler
from fitdiff.evaluation.baselines import LinearProbe, mean_face, nearest_identity
from fitdiff.evaluation.checkpoints import CheckpointInfo, inspect_checkpoints
from fitdiff.evaluation.checks import acceptance_checks
from fitdiff.evaluation.conditioning_header import conditioning_header, describe_sampler
from fitdiff.evaluation.diversity import closest_note, diversity_report
from fitdiff.evaluation.face_metrics import FaceMetrics, FacePrediction, mean_prediction
from fitdiff.evaluation.faces import FaceSet, load_faces, select_photos
from fitdiff.evaluation.sampling import resolve_device, sample_faces, sample_generators
from fitdiff.evaluation.table import Column, ResultTable, RowAccumulator, TableRow, format_value
from fitdiff.io import sha256_file

__all__ = ["ConditioningTable", "ConditioningResult", "COLUMNS"]

log = logging.getLogger(__name__)

COLUMNS: tuple[Column, ...] = (
    Column("shape_rmse_mm", "shape (mm)", "{:.2f}"),
    Column("shape_coef_rms", "shape coef RMS", "{:.3f}"),
    Column("diffuse_rmse", "diffuse RMSE", "{:.4f}"),
    Column("diffuse_psnr", "diffuse PSNR (dB)", "{:.2f}"),
    Column("specular_psnr", "specular PSNR (dB)", "{:.2f}"),
    Column("normals_angle_deg", "normals (deg)", "{:.2f}"),
    Column("identity_cos", "identity cos", "{:.3f}"),
)
_SCHEDULERS = {"ddim": ddim_scheduler, "ddpm": ddpm_scheduler, "dpm": dpm_scheduler}


@dataclass
class ConditioningResult:
    """What :meth:`ConditioningTable.run` produced: the two tables, the Markdown, the written files."""

    table: ResultTable
    diversity: ResultTable | None
    markdown: str
    paths: list[Path] = field(default_factory=list)
    name: str = "conditioning"
    title: str = "Conditioning"
    plot_metrics: tuple[tuple[str, bool], ...] = (("shape_rmse_mm", False), ("diffuse_psnr", True),
                                                  ("normals_angle_deg", False), ("identity_cos", True))
    images: list[tuple[str, str]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """``conditioning/<method>/<metric>_<mean|std>`` and ``diversity/<set>/...`` as floats."""
        out = self.table.metrics("conditioning/")
        if self.diversity is not None:
            out.update(self.diversity.metrics("diversity/"))
        return out



class ConditioningTable:
    """The conditioning table and the diversity report (a ``_target_`` node: ``experiments/table/``).

    Args:
        ckpts: diffusion checkpoints; the first also gives the unconditional rows and the diversity report.
        data_dir: the face-shard dataset (``manifest.json``; its train split fits the baselines).
        splits: held-out splits the photos come from.
        n_photos: photos evaluated (spread over subjects; None = every photo of ``splits``).
        n_samples: samples per photo and sampled row (k).
        guidance_scales: CFG scales of the conditional rows; None = 1 and each checkpoint's default.
        scheduler: ``ddim``, ``ddpm`` or ``dpm`` (the presets of :mod:`fitdiff.diffusion.schedule`), or
            None for each checkpoint's configured sampler.
        steps, eta: sampler overrides (None = the sampler's own).
        seed: base seed of every sample's generator (None = 0).
        batch_size: photos per sampler call (``batch_size * n_samples`` latents, twice that with CFG).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda:1``...
        ema: sample with the EMA weights (else the raw ones).
        labels: row names of the checkpoints (default: the net's conditioning, ``+aux`` with aux losses).
        shape_model: PCA model ``.npz`` of the coefficients; None = rebuilt from the synthetic dataset.
        recognizer, recognizer_weights: identity encoder of the identity column (registry name and
            weights; default weights ``<data_dir>/recognizer.safetensors``); ``identity: false`` drops the column.
        diversity_samples: unconditional samples of the diversity report (0 = no report).
        mean_shape_rows: add the unconditional row and each checkpoint's s=1 row sampled with shape
            temperature 0 (the shape channels start from zero noise: DDIM's conditional mean shape,
            the maps sampled as usual), without a mean-of-k twin.
        probe_folds: cross-validation folds of the linear probe (by training subject).
        progress: show a progress bar.
        name: file stem of the table.
    """

    def __init__(
        self,
        ckpts: Sequence[str],
        data_dir: str,
        splits: Sequence[str] = ("val", "test"),
        n_photos: int | None = 40,
        n_samples: int = 4,
        guidance_scales: Sequence[float] | None = None,
        scheduler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        seed: int | None = 0,
        batch_size: int = 8,
        device: str = "auto",
        ema: bool = True,
        labels: Sequence[str] | None = None,
        shape_model: str | None = None,
        identity: bool = True,
        recognizer: str = "synthetic_recognizer",
        recognizer_weights: str | None = None,
        diversity_samples: int = 64,
        mean_shape_rows: bool = True,
        probe_folds: int = 5,
        progress: bool = True,
        name: str = "conditioning",
    ) -> None:
        if n_samples < 1 or batch_size < 1 or (n_photos is not None and n_photos < 1):
            raise ConfigError("table: n_samples, batch_size and n_photos must be >= 1")
        if scheduler is not None and scheduler not in _SCHEDULERS:
            raise ConfigError(f"table.scheduler={scheduler!r}: one of {', '.join(_SCHEDULERS)} or null")
        self.infos = inspect_checkpoints(list(ckpts), labels)
        self.data_dir = Path(data_dir)
        self.splits = list(splits)
        self.n_photos, self.n_samples = n_photos, int(n_samples)
        self.guidance_scales = None if guidance_scales is None else [float(s) for s in guidance_scales]
        self.scheduler, self.steps, self.eta = scheduler, steps, eta
        self.seed, self.batch_size, self.device = int(seed or 0), int(batch_size), resolve_device(device)
        self.ema = ema
        self.shape_model_path = shape_model
        self.identity = identity
        self.recognizer_name = recognizer
        self.recognizer_weights = recognizer_weights
        self.diversity_samples = int(diversity_samples)
        self.mean_shape_rows = bool(mean_shape_rows)
        self.probe_folds = int(probe_folds)
        self.progress = progress
        self.name = name

    # ------------------------------------------------------------------------------------------ parts

    def _shape_model(self, manifest: Any) -> Any:
        from fitdiff.face.shape_model import PCAShapeModel

        if self.shape_model_path is not None:
            model = PCAShapeModel.load(self.shape_model_path)
        else:
            from fitdiff.synthetic.dataset_model import dataset_shape_model

            model = dataset_shape_model(self.data_dir)
        recorded = manifest.shape_model
        if recorded and recorded != model.model_id:
            raise ConfigError(
                f"shape model {model.model_id!r} is not the dataset's ({recorded!r}, {self.data_dir})"
            )
        return model

    def _recognizer(self) -> tuple[Any, str | None]:
        if not self.identity:
            return None, None
        from fitdiff.face.identity import build_identity_encoder

        weights = Path(self.recognizer_weights or self.data_dir / "recognizer.safetensors")
        if not weights.is_file():
            raise ConfigError(
                f"identity column: no recognizer weights at {weights} (table.recognizer_weights=..., "
                "or table.identity=false to drop the column)"
            )
        encoder = build_identity_encoder(self.recognizer_name, weights=str(weights)).to(self.device)
        return encoder, sha256_file(weights)

    def _sampler(self, module: Any) -> Sampler:
        if self.scheduler is None:
            overrides = {
                k: v for k, v in (("num_inference_steps", self.steps), ("eta", self.eta)) if v is not None
            }
            sampler = module.build_sampler(**overrides)
        else:
            sampler = Sampler(
                _SCHEDULERS[self.scheduler](), num_inference_steps=self.steps or 50, eta=self.eta or 0.0
            )
        try:
            check_same_schedule(sampler.scheduler, module.noise_scheduler)
        except ValueError as exc:
            raise ConfigError(f"table.scheduler: {exc}") from exc
        sampler.progress = False
        return sampler

    def _scales(self, info: CheckpointInfo) -> list[float]:
        scales = self.guidance_scales if self.guidance_scales is not None else [1.0, info.guidance_scale]
        return list(dict.fromkeys(float(s) for s in scales))

    # ------------------------------------------------------------------------------------------ run

    def run(self, out_dir: str | Path) -> ConditioningResult:
        """Measure every row, write the files into ``out_dir`` and return the result."""
        out_dir = Path(out_dir)
        try:
            manifest = load_manifest(self.data_dir)
        except ManifestError as exc:
            raise ConfigError(f"table.data_dir: {exc}") from exc
        held = load_faces(self.data_dir, self.splits, with_photos=True, manifest=manifest)
        train = load_faces(self.data_dir, ["train"], with_photos=False, manifest=manifest)
        for info in self.infos:
            if info.shape_dim != manifest.spec.shape_dim:
                raise ConfigError(
                    f"{info.path} samples {info.shape_dim} shape coefficients, the dataset "
                    f"{self.data_dir} has {manifest.spec.shape_dim}"
                )
        index = select_photos(held, self.n_photos)
        if self.n_photos is not None and len(index) < self.n_photos:
            log.warning(
                "%s: only %d photos in %s (asked for %d)",
                self.data_dir,
                len(index),
                "+".join(self.splits),
                self.n_photos,
            )
        photos = held.subset(index)
        shape_model = self._shape_model(manifest)
        recognizer, recognizer_sha = self._recognizer()
        metrics = FaceMetrics(shape_model, recognizer, self.device)
        batches = [
            list(range(i, min(i + self.batch_size, len(photos))))
            for i in range(0, len(photos), self.batch_size)
        ]

        probe = LinearProbe(train, shape_model.std, folds=self.probe_folds, seed=self.seed)
        rows, reference = self._baseline_rows(photos, batches, train, probe, metrics)
        sampled, samplers, diversity = self._sampled_rows(photos, index, batches, metrics, held, train)
        rows += sampled

        table = ResultTable(
            rows, [c for c in COLUMNS if c.key in metrics.names], counts=["n_photos", "n_samples"]
        )
        header = conditioning_header(
            infos=self.infos,
            data_dir=self.data_dir,
            splits=self.splits,
            photos=photos,
            n_samples=self.n_samples,
            seed=self.seed,
            ema=self.ema,
            samplers=samplers,
            train_samples=manifest.counts.get("train", 0),
            recognizer=self.recognizer_name,
            recognizer_sha256=recognizer_sha,
            probe_alphas=probe.alphas,
            reference_identity=np.concatenate(reference.values["identity_cos"]) if recognizer_sha else None,
        )
        sections = []
        if diversity is not None:
            sections.append(
                "### Diversity of unconditional samples\n\n"
                + diversity.to_markdown()
                + closest_note(diversity)
            )
        checks = acceptance_checks(table)
        if checks:
            sections.append("### Acceptance checks\n\n" + "\n".join(f"- {line}" for line in checks) + "\n")
        csv_path, md_path, markdown = table.write(
            out_dir, self.name, title="Conditioning", header=header, sections=sections
        )
        paths = [csv_path, md_path]
        if diversity is not None:
            d_csv, d_md, _ = diversity.write(
                out_dir, "diversity", title="Diversity of unconditional samples", header=header[:3]
            )
            paths += [d_csv, d_md]
        log.info("wrote %s", ", ".join(str(p) for p in paths))
        return ConditioningResult(table, diversity, markdown, paths, name=self.name)

    def _baseline_rows(
        self,
        photos: FaceSet,
        batches: list[list[int]],
        train: FaceSet,
        probe: LinearProbe,
        metrics: FaceMetrics,
    ) -> tuple[list[TableRow], RowAccumulator]:
        """The mean-face, nearest-identity and linear-probe rows, and the ground truth's identity scores."""
        reference = RowAccumulator()
        baselines = {
            "mean face": RowAccumulator(),
            "nearest training identity": RowAccumulator(),
            "linear probe": RowAccumulator(),
        }
        for b in batches:
            faces = photos.subset(b)
            if (
                metrics.recognizer is not None
            ):  # the identity column's ceiling: the ground truth rendered alike
                truth = FacePrediction(faces.shape, faces.diffuse, faces.specular, faces.normals)
                reference.add({"identity_cos": metrics(truth, faces)["identity_cos"]})
            baselines["mean face"].add(metrics(mean_face(train, len(b)), faces))
            baselines["nearest training identity"].add(
                metrics(nearest_identity(train, faces.identity)[0], faces)
            )
            baselines["linear probe"].add(metrics(probe.predict(faces.identity), faces))
        return [acc.row(name, 1) for name, acc in baselines.items()], reference

    def _sampled_rows(
        self,
        photos: FaceSet,
        index: list[int],
        batches: list[list[int]],
        metrics: FaceMetrics,
        held: FaceSet,
        train: FaceSet,
    ) -> tuple[list[TableRow], dict[int, str], ResultTable | None]:
        """The unconditional and conditional rows (each with its mean-of-k row), the sampler description per
        checkpoint, and the diversity report of the first checkpoint."""
        from fitdiff.ldm.module import LatentDiffusionModule

        plan = []  # (checkpoint index, row name, guidance scale or None for unconditional, shape temperature)
        zero = ", shape temperature 0"
        for c, info in enumerate(self.infos):
            if c == 0:
                plan.append((c, "unconditional", None, 1.0))
                plan += [(c, "unconditional" + zero, None, 0.0)] if self.mean_shape_rows else []
            for s in self._scales(info):
                name = f"conditional {info.label} s={format_value(s, '{:g}')}"
                plan.append((c, name, s, 1.0))
                plan += [(c, name + zero, s, 0.0)] if self.mean_shape_rows and s == 1.0 else []
        rows: list[TableRow] = []
        samplers: dict[int, str] = {}
        diversity = None
        bar = tqdm(
            total=len(plan) * len(photos),
            desc="conditioning table",
            unit="photo",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        with bar:
            for c, info in enumerate(self.infos):
                module = LatentDiffusionModule.load_checkpoint(info.path).to(self.device)
                pipeline = module.pipeline(ema=self.ema)
                sampler = self._sampler(module)
                samplers[c] = describe_sampler(sampler)
                for _, row_name, scale, temperature in (p for p in plan if p[0] == c):
                    bar.set_postfix_str(row_name)
                    each, mean = RowAccumulator(), RowAccumulator()
                    for b in batches:
                        faces = photos.subset(b)
                        gens = sample_generators(self.seed, [index[i] for i in b], self.n_samples)
                        ident = None if scale is None else faces.identity.repeat_interleave(self.n_samples, 0)
                        pred = sample_faces(pipeline, sampler, gens, ident, 1.0 if scale is None else scale,
                                            shape_temperature=temperature)
                        _check_resolution(pred, faces, info)
                        each.add(metrics(pred, _repeat(faces, self.n_samples)), self.n_samples)
                        mean.add(metrics(mean_prediction(pred, self.n_samples), faces))
                        bar.update(len(b))
                    rows.append(each.row(row_name, self.n_samples))
                    if temperature == 1.0:
                        rows.append(mean.row(f"{row_name} (mean of {self.n_samples})", self.n_samples))
                if c == 0 and self.diversity_samples > 0:
                    diversity = diversity_report(
                        pipeline,
                        sampler,
                        metrics.vertices,
                        held,
                        train,
                        self.diversity_samples,
                        self.seed,
                        self.batch_size * self.n_samples,
                        self.progress,
                    )
                del module, pipeline
        return rows, samplers, diversity


def _repeat(faces: FaceSet, k: int) -> FaceSet:
    """Every photo repeated k times in place (photo-major), to score k samples per photo."""
    return faces.subset(np.repeat(np.arange(len(faces)), k))


def _check_resolution(pred: FacePrediction, faces: FaceSet, info: CheckpointInfo) -> None:
    if pred.diffuse.shape[-2:] != faces.diffuse.shape[-2:]:
        raise ConfigError(
            f"{info.path} decodes {tuple(pred.diffuse.shape[-2:])} maps, the dataset has "
            f"{tuple(faces.diffuse.shape[-2:])}"
        )
