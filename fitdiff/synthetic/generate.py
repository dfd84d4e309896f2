"""Build the embedded synthetic fitted dataset: subjects, photos, recognizer, embeddings, shards, manifest.

Pipeline (:func:`generate_dataset`):

1. Split subjects ``syn00000 ...`` into train / val / test (:func:`fitdiff.data.split.assign_splits`).
2. In a process pool (one torch thread per worker), per subject (:mod:`fitdiff.synthetic.subject_job`):
   shape coefficients and reflectance maps, ``images_per_subject`` dataset photos, and for training
   subjects ``recognizer_images`` extra renders plus ``recognizer_shared_images`` renders of the
   subject's shape wearing appearances of a shared pool; landmarks are the projected landmark vertices;
   every photo is aligned to the ArcFace template (112 px) for recognizer training.
3. Train the synthetic recognizer (:mod:`fitdiff.face.synthetic_recognizer`) on the training subjects'
   crops only, save it as ``OUT/recognizer.safetensors``. Alternatives: a random ArcFace IR-SE50
   (``recognizer="arcface_random"``) or an existing weight file (:mod:`fitdiff.synthetic.embedding`).
4. Embed every dataset photo through :class:`fitdiff.data.embed.IdentityEmbedder` (PNG bytes + 68
   landmarks -> 5 ArcFace points -> ``align_faces`` -> encoder), the code path real photos take.
5. Write the shards with :class:`fitdiff.data.DatasetWriter` (validated; manifest with counts, sha256,
   statistics; recognizer ``synthetic_recognizer@sha256:<hex>``) and ``OUT/synthetic.json`` (the
   configuration, the subjects of each split and the recognizer's training record).

Every random draw is seeded by (seed, stream, subject, image) (:func:`fitdiff.synthetic.subjects.rng_for`),
workers render with one thread, and recognizer training and embedding run with a fixed thread count
(``threads``), so re-running with the same arguments gives byte-identical shards whatever ``workers`` is.
The configuration and report live in :mod:`fitdiff.synthetic.config`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fitdiff.data import DatasetWriter, FaceSample, SampleSpec
from fitdiff.data.embed import IdentityEmbedder
from fitdiff.data.manifest import MANIFEST_NAME, SPLITS
from fitdiff.data.split import assign_splits
from fitdiff.synthetic.config import (
    GENERATOR,
    RECOGNIZER_FILE,
    REPORT_FILE,
    GenerationReport,
    SyntheticConfig,
    load_shape_model,
)
from fitdiff.synthetic.embedding import build_encoder, build_eval_recognizer, embed_all, recognizer_id
from fitdiff.synthetic.subject_job import SubjectJob, SubjectResult, generate_subject
from fitdiff.synthetic.subjects import subject_id

if TYPE_CHECKING:
    from rich.progress import Progress

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


def _init_worker() -> None:
    """Process-pool initializer: one torch thread per rendering worker."""
    torch.set_num_threads(1)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(enabled: bool) -> Progress:
    """The build's progress bars (hidden when ``enabled`` is false)."""
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


def _run_jobs(jobs: list[SubjectJob], workers: int, progress: Progress) -> list[SubjectResult]:
    """Build every subject, in this process (``workers <= 1``) or a spawned process pool, in job order."""
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


def _meta(
    cfg: SyntheticConfig, result: SubjectResult, j: int, recognizer: str, model_id: str
) -> dict[str, Any]:
    """``meta.json`` of dataset photo ``j`` of ``result``."""
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
    model = load_shape_model(
        cfg.shape_model, cfg.n_vertices, cfg.n_components, cfg.shape_model_seed, cfg.shape_space
    )
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
            n_shared=cfg.recognizer_shared_images if cfg.recognizer == "train" else 0,
            appearance_pool=cfg.appearance_pool,
            uv_res=cfg.uv_res,
            image_res=cfg.image_res,
            shape_model=cfg.shape_model,
            n_vertices=cfg.n_vertices,
            n_components=cfg.n_components,
            shape_model_seed=cfg.shape_model_seed,
            shape_space=cfg.shape_space,
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
            encoder, recognizer, record = build_encoder(cfg, results, progress)
        timings["recognizer"] = time.perf_counter() - mark
        mark = time.perf_counter()
        with _threads(cfg.threads):
            eval_record = build_eval_recognizer(cfg, results, progress)
        timings["eval_recognizer"] = time.perf_counter() - mark

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
            embeddings = embed_all(embedder, ordered, lambda n: progress.advance(task, n))
        task = progress.add_task("writing shards", total=len(ordered) * cfg.images_per_subject, info="")
        with DatasetWriter(out, spec, cfg.samples_per_shard, overwrite=cfg.overwrite) as writer:
            for result in ordered:
                for j in range(len(result.images)):
                    writer.write(
                        result.split,
                        FaceSample(
                            key=result.key(j),
                            image=result.images[j],
                            diffuse=result.diffuse,
                            specular=result.specular,
                            normals=result.normals,
                            shape=result.shape,
                            identity=embeddings[result.key(j)],
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
        "eval_recognizer": eval_record,
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
