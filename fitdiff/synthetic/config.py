"""What a synthetic dataset build is asked for (:class:`SyntheticConfig`) and what it reports.

Also the file names and generator tag every build writes, and the shape model a configuration names
(:func:`load_shape_model`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fitdiff.data import Manifest
from fitdiff.face.shape_model import PCAShapeModel
from fitdiff.face.template import make_procedural_shape_model
from fitdiff.synthetic.recognizer_training import RecognizerTrainingConfig
from fitdiff.synthetic.scene import SceneRanges

__all__ = [
    "GENERATOR",
    "RECOGNIZER_FILE",
    "REPORT_FILE",
    "GenerationReport",
    "SyntheticConfig",
    "load_shape_model",
]

GENERATOR = "fitdiff.synthetic/1"
RECOGNIZER_FILE = "recognizer.safetensors"
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
        """JSON-ready configuration without the fields that do not change what is built."""
        data = asdict(self)
        data["out"] = str(self.out)
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


def load_shape_model(path: str | None, n_vertices: int, n_components: int, seed: int) -> PCAShapeModel:
    """The shape model of a build: a ``.npz`` file, or the procedural model."""
    if path is not None:
        return PCAShapeModel.load(path)
    return make_procedural_shape_model(n_vertices, n_components, seed)
