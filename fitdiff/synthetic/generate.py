"""Build the embedded synthetic fitted dataset: subjects, photos, recognizer, embeddings, shards, manifest.

Pipeline (:func:`generate_dataset`):

1. Split subjects ``syn00000 ...`` into train / val / test (:func:`fitdiff.data.split.assign_splits`).
2. In a process pool (one torch thread per worker), per subject: shape coefficients and reflectance
   maps, ``images_per_subject`` dataset photos, and for training subjects ``recognizer_images`` extra
   renders; landmarks are the projected landmark vertices; every photo is aligned to the ArcFace template
   (112 px) for recognizer training.
3. Train the synthetic recognizer (:mod:`fitdiff.face.synthetic_recognizer`) on the training subjects'
   crops only, save it as ``OUT/recognizer.safetensors``. Alternatives: a random ArcFace IR-SE50
   (``recognizer="arcface_random"``) or an existing weight file.
4. Embed every dataset photo through :class:`fitdiff.data.embed.IdentityEmbedder` (PNG bytes + 68
   landmarks -> 5 ArcFace points -> ``align_faces`` -> encoder), the code path real photos take.
5. Write the shards with :class:`fitdiff.data.DatasetWriter` (validated; manifest with counts, sha256,
   statistics; recognizer ``synthetic_recognizer@sha256:<hex>``) and ``OUT/synthetic.json`` (the
   configuration, the subjects of each split and the recognizer's training record).

Every random draw is seeded by (seed, stream, subject, image) (:func:`fitdiff.synthetic.subjects.rng_for`),
workers render with one thread, and recognizer training and embedding run with a fixed thread count
(``threads``), so re-running with the same arguments gives byte-identical shards whatever ``workers`` is.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fitdiff.data import DatasetWriter, FaceSample, Manifest, SampleSpec, make_key
from fitdiff.data.codecs import encode_npy, encode_png
from fitdiff.data.embed import IdentityEmbedder
from fitdiff.data.landmarks import five_point_landmarks
from fitdiff.data.manifest import MANIFEST_NAME, SPLITS
from fitdiff.data.split import assign_splits
from fitdiff.face.alignment import align_faces
from fitdiff.face.identity import IdentityEncoder
from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.face.synthetic_recognizer import SyntheticRecognizer
from fitdiff.face.template import make_procedural_shape_model
from fitdiff.io import sha256_file as file_sha256
from fitdiff.synthetic.photo import PhotoRenderer, lighting_meta
from fitdiff.synthetic.recognizer_training import (
    RecognizerTrainingConfig,
    save_recognizer_weights,
    train_recognizer,
)
from fitdiff.synthetic.scene import SceneRanges, sample_scene
from fitdiff.synthetic.subjects import Stream, make_subject, rng_for, subject_id
from fitdiff.synthetic.uv_layout import UVLayout, uv_layout

__all__ = [
    "GENERATOR",
    "RECOGNIZER_FILE",
    "REPORT_FILE",
    "SyntheticConfig",
    "SubjectJob",
    "SubjectResult",
    "GenerationReport",
    "generate_subject",
    "generate_dataset",
    "load_shape_model",
    "recognizer_id",
]

log = logging.getLogger(__name__)

GENERATOR = "fitdiff.synthetic/1"
RECOGNIZER_FILE = "recognizer.safetensors"
REPORT_FILE = "synthetic.json"
RECOGNIZER_NAME = "synthetic_recognizer"
CROP_SIZE = 112
EMBED_BATCH = 64  # photos per identity-encoder call
# The camera centres on the mean of the 5 ArcFace landmark vertices raised by this much (mm, +y).
_CENTRE_LIFT = np.array([0.0, 8.0, 0.0])


@dataclass
class SyntheticConfig:
    """What :func:`generate_dataset` builds.

    Attributes:
        out: destination folder.
        subjects: number of subjects; images_per_subject: dataset photos per subject.
        uv_res: side of the UV maps; image_res: side of the photos (pixels).
        seed: seed of every random draw (subjects, photos, split, recognizer training).
        workers: processes rendering subjects (1 = in this process).
        val_subjects, test_subjects: held-out subject counts (override the fractions when set).
        val_fraction, test_fraction: held-out subject fractions.
        shape_model: a PCA shape model ``.npz``; None = the procedural model with ``n_vertices``,
            ``n_components`` and ``shape_model_seed``.
        recognizer: ``"train"`` (train the synthetic recognizer), ``"arcface_random"`` (random ArcFace
            IR-SE50, seeded) or a path to synthetic-recognizer weights.
        recognizer_images: extra renders per training subject for recognizer training.
        training: recognizer hyper-parameters (its seed is derived from ``seed``).
        scene: ranges of pose, camera and lighting.
        samples_per_shard: samples per shard.
        threads: torch threads of recognizer training and embedding (part of what makes a run
            reproducible bit for bit).
        overwrite: replace a dataset already in ``out``.
        progress: show progress bars.
    """

    out: str | Path
    subjects: int = 200
    images_per_subject: int = 4
    uv_res: int = 64
    image_res: int = 128
    seed: int = 0
    workers: int = 2
    val_subjects: int | None = None
    test_subjects: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    shape_model: str | None = None
    n_vertices: int = 5000
    n_components: int = 50
    shape_model_seed: int = 0
    recognizer: str = "train"
    recognizer_images: int = 12
    training: RecognizerTrainingConfig = field(default_factory=RecognizerTrainingConfig)
    scene: SceneRanges = field(default_factory=SceneRanges)
    samples_per_shard: int = 256
    threads: int = 2
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in (
            "subjects",
            "images_per_subject",
            "uv_res",
            "image_res",
            "workers",
            "samples_per_shard",
            "threads",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.image_res < 16:
            raise ValueError(f"image_res must be at least 16 pixels, got {self.image_res}")
        if self.recognizer_images < 0:
            raise ValueError(f"recognizer_images must be >= 0, got {self.recognizer_images}")

    def split_fractions(self) -> tuple[float, float]:
        """(val, test) fractions, from the subject counts when those are given."""
        val = self.val_fraction if self.val_subjects is None else self.val_subjects / self.subjects
        test = self.test_fraction if self.test_subjects is None else self.test_subjects / self.subjects
        return val, test

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        for name in ("progress", "overwrite", "workers"):
            data.pop(name)  # do not change what is built
        return data


def load_shape_model(path: str | None, n_vertices: int, n_components: int, seed: int) -> PCAShapeModel:
    """The shape model of a build: a ``.npz`` file, or the procedural model."""
    if path is not None:
        return PCAShapeModel.load(path)
    return make_procedural_shape_model(n_vertices, n_components, seed)


def recognizer_id(sha256: str) -> str:
    """Recognizer id recorded in ``meta.json`` and the manifest: ``synthetic_recognizer@sha256:<hex>``."""
    return f"{RECOGNIZER_NAME}@sha256:{sha256}"


# -------------------------------------------------------------------------------------- per-subject work
@dataclass(frozen=True)
class SubjectJob:
    """Everything a worker needs to build one subject."""

    seed: int
    index: int
    split: str
    n_photos: int
    n_extra: int
    uv_res: int
    image_res: int
    shape_model: str | None
    n_vertices: int
    n_components: int
    shape_model_seed: int
    scene: SceneRanges


@dataclass
class SubjectResult:
    """A built subject: ground truth, its photos, and recognizer training crops.

    Attributes:
        images: (M, H, W, 3) uint8 dataset photos; landmarks: (M, 68, 2) float32 pixels.
        cameras, lightings: JSON-ready per-photo descriptions.
        crops: (M + E, 112, 112, 3) uint8 aligned crops of the dataset photos and the E extra renders
            (training subjects only, else empty).
    """

    index: int
    id: str
    split: str
    diffuse: np.ndarray
    specular: np.ndarray
    normals: np.ndarray
    shape: np.ndarray
    appearance: dict[str, Any]
    images: np.ndarray
    landmarks: np.ndarray
    cameras: list[dict[str, Any]]
    lightings: list[dict[str, Any]]
    crops: np.ndarray


_CONTEXT: dict[tuple, tuple[PCAShapeModel, UVLayout, PhotoRenderer]] = {}


def _context(job: SubjectJob) -> tuple[PCAShapeModel, UVLayout, PhotoRenderer]:
    key = (job.shape_model, job.n_vertices, job.n_components, job.shape_model_seed, job.uv_res, job.image_res)
    if key not in _CONTEXT:
        model = load_shape_model(job.shape_model, job.n_vertices, job.n_components, job.shape_model_seed)
        layout = uv_layout(model, job.uv_res)
        centre = model.mean[model.landmarks_5].double().mean(0).numpy() + _CENTRE_LIFT
        _CONTEXT.clear()
        _CONTEXT[key] = (model, layout, PhotoRenderer(model, job.image_res, centre))
    return _CONTEXT[key]


def _align(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) uint8 ArcFace-aligned crops of (N, H, W, 3) uint8 photos with 68 landmarks."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    points = torch.from_numpy(five_point_landmarks(landmarks))
    crops = align_faces(batch, points, CROP_SIZE)
    return (crops.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def generate_subject(job: SubjectJob) -> SubjectResult:
    """Build one subject (deterministic in ``job``; thread count fixed to 1 by the caller)."""
    model, layout, renderer = _context(job)
    subject = make_subject(job.seed, job.index, layout, model.n_components)
    scenes = [
        sample_scene(rng_for(job.seed, Stream.PHOTO, job.index, j), job.scene) for j in range(job.n_photos)
    ]
    photos = renderer.render(subject.shape, subject.maps, scenes)
    images = np.stack([p.image for p in photos])
    landmarks = np.stack([p.landmarks for p in photos])
    crops = np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    if job.split == "train":
        extra_scenes = [
            sample_scene(rng_for(job.seed, Stream.RECOGNIZER_PHOTO, job.index, j), job.scene)
            for j in range(job.n_extra)
        ]
        extra = renderer.render(subject.shape, subject.maps, extra_scenes) if extra_scenes else []
        all_images = np.concatenate([images, np.stack([p.image for p in extra])]) if extra else images
        all_landmarks = (
            np.concatenate([landmarks, np.stack([p.landmarks for p in extra])]) if extra else landmarks
        )
        crops = _align(all_images, all_landmarks)
    diffuse, specular, normals = subject.maps.to_uint8()
    return SubjectResult(
        index=job.index,
        id=subject.id,
        split=job.split,
        diffuse=diffuse,
        specular=specular,
        normals=normals,
        shape=subject.shape,
        appearance=subject.appearance.to_dict(),
        images=images,
        landmarks=landmarks,
        cameras=[p.camera for p in photos],
        lightings=[lighting_meta(s) for s in scenes],
        crops=crops,
    )


def _init_worker() -> None:
    torch.set_num_threads(1)


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled,
    )


def _run_jobs(jobs: list[SubjectJob], workers: int, progress) -> list[SubjectResult]:
    task = progress.add_task("rendering subjects", total=len(jobs), info="")
    results: list[SubjectResult] = []
    if workers <= 1:
        with _threads(1):
            for job in jobs:
                results.append(generate_subject(job))
                progress.advance(task)
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        for result in pool.map(generate_subject, jobs, chunksize=1):
            results.append(result)
            progress.advance(task)
    return results


# -------------------------------------------------------------------------------------- the whole build
@dataclass
class GenerationReport:
    """What a build produced: the manifest, the recognizer id, and wall-clock seconds per phase."""

    manifest: Manifest
    recognizer: str
    recognizer_sha256: str | None
    training_loss: list[float]
    timings: dict[str, float]
    out: Path


def _build_encoder(
    cfg: SyntheticConfig, results: list[SubjectResult], progress
) -> tuple[IdentityEncoder, str, dict]:
    """The recognizer that embeds the photos, its id and a JSON record of how it was made."""
    out = Path(cfg.out)
    if cfg.recognizer == "arcface_random":
        from fitdiff.face.identity import ArcFaceEncoder

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            encoder = ArcFaceEncoder(weights="random")
        name = f"arcface_ir_se50-random-s{cfg.seed}"
        return encoder, name, {"kind": "arcface_random", "id": name}
    if cfg.recognizer != "train":
        path = Path(cfg.recognizer)
        sha = file_sha256(path)
        name = recognizer_id(sha)
        return (
            SyntheticRecognizer(path, name=name),
            name,
            {"kind": "file", "id": name, "source": str(path), "sha256": sha},
        )
    train = [r for r in results if r.split == "train"]
    crops = np.concatenate([r.crops for r in train])
    labels = np.concatenate([np.full(len(r.crops), i) for i, r in enumerate(train)])
    seed = int(rng_for(cfg.seed, Stream.RECOGNIZER_TRAINING).integers(0, 2**31 - 1))
    training = RecognizerTrainingConfig(**{**cfg.training.to_dict(), "seed": seed})
    task = progress.add_task(
        "training recognizer", total=training.epochs * max(1, len(crops) // training.batch_size), info=""
    )

    def report(step: int, total: int, loss: float) -> None:
        progress.update(task, completed=step, info=f"loss {loss:.3f}")

    net, history = train_recognizer(crops, labels, training, progress=report)
    sha = save_recognizer_weights(net, out / RECOGNIZER_FILE, {"generator": GENERATOR})
    name = recognizer_id(sha)
    record = {
        "kind": "trained",
        "id": name,
        "file": RECOGNIZER_FILE,
        "sha256": sha,
        "training": training.to_dict(),
        "train_subjects": len(train),
        "train_crops": int(len(crops)),
        "loss_per_epoch": history,
    }
    return SyntheticRecognizer(out / RECOGNIZER_FILE, name=name), name, record


def _meta(
    cfg: SyntheticConfig, result: SubjectResult, j: int, recognizer: str, model_id: str
) -> dict[str, Any]:
    return {
        "subject": result.id,
        "source": "synthetic",
        "generator": GENERATOR,
        "seed": cfg.seed,
        "image": j,
        "recognizer": recognizer,
        "shape_model": model_id,
        "uv_resolution": cfg.uv_res,
        "normal_space": "tangent",
        "landmarks": "ibug68, projected mesh landmark vertices",
        "camera": result.cameras[j],
        "lighting": result.lightings[j],
        "appearance": result.appearance,
    }


def _key(result: SubjectResult, j: int) -> str:
    return make_key(result.id, f"{j:03d}")


def _embed_all(
    embedder: IdentityEmbedder, results: list[SubjectResult], advance, batch_size: int = EMBED_BATCH
) -> dict[str, np.ndarray]:
    """Identity embeddings of every dataset photo by key, in fixed batches of ``batch_size`` (the batch
    composition only depends on the results' order, which keeps the numbers reproducible)."""
    members = [
        {"__key__": _key(r, j), "image.png": encode_png(img), "landmarks.npy": encode_npy(lm)}
        for r in results
        for j, (img, lm) in enumerate(zip(r.images, r.landmarks))
    ]
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(members), batch_size):
        batch = members[start : start + batch_size]
        out.update((m["__key__"], e) for m, e in zip(batch, embedder(batch)))
        advance(len(batch))
    return out


def generate_dataset(cfg: SyntheticConfig) -> GenerationReport:
    """Build the dataset described by ``cfg`` into ``cfg.out``; see the module docstring."""
    out = Path(cfg.out)
    if (out / MANIFEST_NAME).exists() and not cfg.overwrite:
        raise FileExistsError(
            f"{out / MANIFEST_NAME} exists: pass overwrite (--overwrite) to replace the dataset"
        )
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    model = load_shape_model(cfg.shape_model, cfg.n_vertices, cfg.n_components, cfg.shape_model_seed)
    ids = [subject_id(i) for i in range(cfg.subjects)]
    val_fraction, test_fraction = cfg.split_fractions()
    splits = assign_splits(ids, val_fraction, test_fraction, cfg.seed)
    jobs = [
        SubjectJob(
            seed=cfg.seed,
            index=i,
            split=splits[sid],
            n_photos=cfg.images_per_subject,
            n_extra=cfg.recognizer_images if cfg.recognizer == "train" else 0,
            uv_res=cfg.uv_res,
            image_res=cfg.image_res,
            shape_model=cfg.shape_model,
            n_vertices=cfg.n_vertices,
            n_components=cfg.n_components,
            shape_model_seed=cfg.shape_model_seed,
            scene=cfg.scene,
        )
        for i, sid in enumerate(ids)
    ]
    progress = _progress(cfg.progress)
    with progress:
        results = _run_jobs(jobs, cfg.workers, progress)
        timings["render"] = time.perf_counter() - start

        mark = time.perf_counter()
        with _threads(cfg.threads):
            encoder, recognizer, record = _build_encoder(cfg, results, progress)
        timings["recognizer"] = time.perf_counter() - mark

        mark = time.perf_counter()
        spec = SampleSpec(
            image_resolution=cfg.image_res,
            uv_resolution=cfg.uv_res,
            shape_dim=model.n_components,
            num_landmarks=68,
            specular_channels=1,
            recognizer=recognizer,
            shape_model=model.model_id,
        )
        embedder = IdentityEmbedder(encoder, recognizer)
        ordered = [r for split in SPLITS for r in results if r.split == split]
        task = progress.add_task("embedding", total=len(ordered) * cfg.images_per_subject, info="")
        with _threads(cfg.threads):
            embeddings = _embed_all(embedder, ordered, lambda n: progress.advance(task, n))
        task = progress.add_task("writing shards", total=len(ordered) * cfg.images_per_subject, info="")
        with DatasetWriter(out, spec, cfg.samples_per_shard, overwrite=cfg.overwrite) as writer:
            for result in ordered:
                for j in range(len(result.images)):
                    writer.write(
                        result.split,
                        FaceSample(
                            key=_key(result, j),
                            image=result.images[j],
                            diffuse=result.diffuse,
                            specular=result.specular,
                            normals=result.normals,
                            shape=result.shape,
                            identity=embeddings[_key(result, j)],
                            landmarks=result.landmarks[j],
                            meta=_meta(cfg, result, j, recognizer, model.model_id),
                        ),
                    )
                progress.advance(task, len(result.images))
        manifest = writer.manifest
        assert manifest is not None
        timings["embed_write"] = time.perf_counter() - mark
    report_data = {
        "generator": GENERATOR,
        "config": cfg.to_dict(),
        "shape_model": model.model_id,
        "recognizer": record,
        "counts": manifest.counts,
        "subjects": {split: sorted(s for s, v in splits.items() if v == split) for split in SPLITS},
    }
    (out / REPORT_FILE).write_text(json.dumps(report_data, indent=2, sort_keys=True) + "\n")
    timings["total"] = time.perf_counter() - start
    log.info("synthetic dataset %s: %s in %.1f s", out, manifest.counts, timings["total"])
    return GenerationReport(
        manifest=manifest,
        recognizer=recognizer,
        recognizer_sha256=record.get("sha256"),
        training_loss=list(record.get("loss_per_epoch", [])),
        timings=timings,
        out=out,
    )
