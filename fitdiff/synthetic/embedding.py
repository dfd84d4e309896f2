"""The identity stage of a synthetic build: the recognizer that embeds the photos, and their embeddings.

:func:`build_encoder` trains the synthetic recognizer on the training subjects' crops (or takes a random
ArcFace IR-SE50, or an existing weight file); :func:`embed_all` embeds every dataset photo through
:class:`fitdiff.data.embed.IdentityEmbedder`, the code path real photos take.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fitdiff.data.codecs import encode_npy, encode_png
from fitdiff.data.embed import IdentityEmbedder
from fitdiff.face.identity import IdentityEncoder
from fitdiff.face.synthetic_recognizer import SyntheticRecognizer
from fitdiff.io import sha256_file
from fitdiff.synthetic.config import EVAL_RECOGNIZER_FILE, GENERATOR, RECOGNIZER_FILE, SyntheticConfig
from fitdiff.synthetic.recognizer_training import (
    RecognizerTrainingConfig,
    save_recognizer_weights,
    train_recognizer,
)
from fitdiff.synthetic.subject_job import SubjectResult
from fitdiff.synthetic.subjects import Stream, rng_for

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["EMBED_BATCH", "RECOGNIZER_NAME", "build_encoder", "build_eval_recognizer", "embed_all", "recognizer_id"]

RECOGNIZER_NAME = "synthetic_recognizer"
EMBED_BATCH = 64  # photos per identity-encoder call


def recognizer_id(sha256: str) -> str:
    """Recognizer id recorded in ``meta.json`` and the manifest: ``synthetic_recognizer@sha256:<hex>``."""
    return f"{RECOGNIZER_NAME}@sha256:{sha256}"


def build_encoder(
    cfg: SyntheticConfig, results: list[SubjectResult], progress: Progress
) -> tuple[IdentityEncoder, str, dict[str, Any]]:
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
        sha = sha256_file(path)
        name = recognizer_id(sha)
        return (
            SyntheticRecognizer(path, name=name),
            name,
            {"kind": "file", "id": name, "source": str(path), "sha256": sha},
        )
    sha, record = _train(cfg, results, progress, cfg.training, Stream.RECOGNIZER_TRAINING, RECOGNIZER_FILE,
                         "training recognizer")
    name = record["id"]
    return SyntheticRecognizer(out / RECOGNIZER_FILE, name=name), name, record


def build_eval_recognizer(cfg: SyntheticConfig, results: list[SubjectResult], progress: Progress
                          ) -> dict[str, Any] | None:
    """Train the evaluation recognizer (``cfg.eval_training``: another architecture and seed, the same
    training subjects' crops) into ``OUT/eval_recognizer.safetensors``; its JSON record, or None when the
    build trains no recognizer or ``cfg.eval_recognizer`` is off. It never embeds dataset photos: it
    only judges identity (guided reconstruction's tables), so guidance cannot overfit the judge."""
    if cfg.recognizer != "train" or not cfg.eval_recognizer:
        return None
    _, record = _train(cfg, results, progress, cfg.eval_training, Stream.EVAL_RECOGNIZER_TRAINING,
                       EVAL_RECOGNIZER_FILE, "training evaluation recognizer")
    return record


def _train(cfg: SyntheticConfig, results: list[SubjectResult], progress: Progress,
           config: RecognizerTrainingConfig, stream: Stream, file: str, label: str) -> tuple[str, dict[str, Any]]:
    """Train a recognizer on the training subjects' crops, save it to ``OUT/file``; (sha256, record)."""
    train = [r for r in results if r.split == "train"]
    crops = np.concatenate([r.crops for r in train])
    labels = np.concatenate([np.full(len(r.crops), i) for i, r in enumerate(train)])
    seed = int(rng_for(cfg.seed, stream).integers(0, 2**31 - 1))
    training = RecognizerTrainingConfig(**{**config.to_dict(), "seed": seed})
    task = progress.add_task(label, total=training.epochs * max(1, len(crops) // training.batch_size), info="")

    def report(step: int, total: int, loss: float) -> None:
        progress.update(task, completed=step, info=f"loss {loss:.3f}")

    net, history = train_recognizer(crops, labels, training, progress=report)
    sha = save_recognizer_weights(net, Path(cfg.out) / file, {"generator": GENERATOR})
    record = {
        "kind": "trained",
        "id": recognizer_id(sha),
        "file": file,
        "sha256": sha,
        "training": training.to_dict(),
        "train_subjects": len(train),
        "train_crops": int(len(crops)),
        "shared_appearance_crops": int(sum((r.crop_appearance >= 0).sum() for r in train)),
        "loss_per_epoch": history,
    }
    return sha, record


def embed_all(
    embedder: IdentityEmbedder,
    results: list[SubjectResult],
    advance: Callable[[int], None],
    batch_size: int = EMBED_BATCH,
) -> dict[str, np.ndarray]:
    """Identity embeddings of every dataset photo by key, in fixed batches of ``batch_size`` (the batch
    composition only depends on the results' order, which keeps the numbers reproducible)."""
    members = [
        {"__key__": r.key(j), "image.png": encode_png(img), "landmarks.npy": encode_npy(lm)}
        for r in results
        for j, (img, lm) in enumerate(zip(r.images, r.landmarks))
    ]
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(members), batch_size):
        batch = members[start : start + batch_size]
        out.update((m["__key__"], e) for m, e in zip(batch, embedder(batch)))
        advance(len(batch))
    return out
