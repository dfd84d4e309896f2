"""What a synthetic dataset build is asked for (:class:`SyntheticConfig`) and what it reports.

Also the file names and generator tag every build writes, and the shape model a configuration names
(:func:`load_shape_model`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fitdiff.data import Manifest
from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.face.template import make_procedural_shape_model
from fitdiff.synthetic.recognizer_training import RecognizerTrainingConfig
from fitdiff.synthetic.scene import SceneRanges
from fitdiff.synthetic.shape_space import SHAPE_SPACES, observable_shape_model

__all__ = [
    "EVAL_RECOGNIZER_FILE",
    "GENERATOR",
    "RECOGNIZER_FILE",
    "REPORT_FILE",
    "GenerationReport",
    "SyntheticConfig",
    "load_shape_model",
    "shape_model_from_config",
]

GENERATOR = "fitdiff.synthetic/2"
RECOGNIZER_FILE = "recognizer.safetensors"
EVAL_RECOGNIZER_FILE = "eval_recognizer.safetensors"
REPORT_FILE = "synthetic.json"


@dataclass
class SyntheticConfig:
    """What :func:`fitdiff.synthetic.generate.generate_dataset` builds.

    Attributes:
        out: destination folder.
        subjects: number of subjects; images_per_subject: dataset photos per subject.
        uv_res: side of the UV maps; image_res: side of the photos (pixels).
        seed: seed of every random draw (subjects, photos, split, recognizer training).
        workers: processes rendering subjects (1 = in this process).
        val_subjects, test_subjects: held-out subject counts (override the fractions when set).
        val_fraction, test_fraction: held-out subject fractions.
        shape_model: a PCA shape model ``.npz``; None = the model ``shape_space`` names, with
            ``n_vertices``, ``n_components`` and ``shape_model_seed``.
        shape_space: ``"observable"`` (default: the procedural model without its similarity directions,
            :mod:`fitdiff.synthetic.shape_space`) or ``"procedural"`` (the procedural model as it is).
        recognizer: ``"train"`` (train the synthetic recognizer), ``"arcface_random"`` (random ArcFace
            IR-SE50, seeded) or a path to synthetic-recognizer weights.
        recognizer_images: extra renders per training subject for recognizer training.
        recognizer_shared_images: further renders per training subject of its shape wearing a member of
            the shared appearance pool (labelled with the subject: only the shape identifies them).
        appearance_pool: members of the shared appearance pool (appearances of no subject).
        training: recognizer hyper-parameters (its seed is derived from ``seed``).
        eval_recognizer: also train the evaluation recognizer (``recognizer="train"`` only): another
            network that judges identity in the reconstruction tables and never embeds the photos.
        eval_training: its hyper-parameters (default: the ``plain`` architecture, width 12, 4 epochs,
            about a third of the recognizer's training time; its seed is derived from ``seed`` on a
            stream of its own).
        scene: ranges of pose, camera and lighting.
        samples_per_shard: samples per shard.
        threads: torch threads of recognizer training and embedding (part of what makes a run
            reproducible bit for bit).
        overwrite: replace a dataset already in ``out``.
        progress: show progress bars.
    """

    out: str | Path
    subjects: int = 400
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
    shape_space: str = "observable"
    recognizer: str = "train"
    recognizer_images: int = 8
    recognizer_shared_images: int = 12
    appearance_pool: int = 64
    training: RecognizerTrainingConfig = field(default_factory=RecognizerTrainingConfig)
    eval_recognizer: bool = True
    eval_training: RecognizerTrainingConfig = field(
        default_factory=lambda: RecognizerTrainingConfig(arch="plain", epochs=4, width=12))
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
        if self.shape_space not in SHAPE_SPACES:
            raise ValueError(f"shape_space must be one of {', '.join(SHAPE_SPACES)}, got {self.shape_space!r}")
        for name in ("recognizer_images", "recognizer_shared_images"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.recognizer_shared_images and self.appearance_pool < 1:
            raise ValueError(f"appearance_pool must be at least 1, got {self.appearance_pool}")

    def split_fractions(self) -> tuple[float, float]:
        """(val, test) fractions, from the subject counts when those are given."""
        val = self.val_fraction if self.val_subjects is None else self.val_subjects / self.subjects
        test = self.test_fraction if self.test_subjects is None else self.test_subjects / self.subjects
        return val, test

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready configuration without the fields that do not change what is built."""
        data = asdict(self)
        data["out"] = str(self.out)
        data["training"] = self.training.to_dict()
        data["eval_training"] = self.eval_training.to_dict()
        for name in ("progress", "overwrite", "workers"):
            data.pop(name)  # do not change what is built
        return data


@dataclass
class GenerationReport:
    """What a build produced: the manifest, the recognizer id, and wall-clock seconds per phase."""

    manifest: Manifest
    recognizer: str
    recognizer_sha256: str | None
    training_loss: list[float]
    timings: dict[str, float]
    out: Path


def load_shape_model(
    path: str | None, n_vertices: int, n_components: int, seed: int, space: str = "observable"
) -> PCAShapeModel:
    """The shape model of a build: a ``.npz`` file, or the model of shape space ``space``."""
    if path is not None:
        return PCAShapeModel.load(path)
    if space == "observable":
        return observable_shape_model(n_vertices, n_components, seed)
    if space == "procedural":
        return make_procedural_shape_model(n_vertices, n_components, seed)
    raise ValueError(f"unknown shape space {space!r} (expected one of {', '.join(SHAPE_SPACES)})")


def shape_model_from_config(config: Mapping[str, Any]) -> PCAShapeModel:
    """The shape model a build with this ``synthetic.json`` ``config`` used (builds made before
    ``shape_space`` existed used the procedural model)."""
    return load_shape_model(
        config.get("shape_model"),
        int(config["n_vertices"]),
        int(config["n_components"]),
        int(config["shape_model_seed"]),
        str(config.get("shape_space", "procedural")),
    )
