"""The quickstart's fixed settings: the embedded dataset it builds and the subset of the tables it runs."""

from __future__ import annotations

__all__ = ["SYNTHETIC_SETTINGS", "QUICKSTART_TABLES", "FULL_TABLES"]

#: the embedded dataset's data_prep/make_synthetic.py settings (also checked against an existing build)
SYNTHETIC_SETTINGS: dict[str, int] = {
    "subjects": 400,
    "val_subjects": 40,
    "test_subjects": 40,
    "images_per_subject": 4,
    "uv_res": 64,
    "image_res": 128,
    "seed": 0,
}

#: the quickstart's subset of ``evaluate.py table=all`` (``make tables`` runs the full tables: 40 photos,
#: every preset and corruption); stated in the tables' headers and the README
QUICKSTART_TABLES: list[str] = [
    "table.n_photos=4",  # held-out photos of every table, one fitting batch (full: 40)
    "table.tables.conditioning.scheduler=dpm",  # DPM-Solver++ with 20 steps for the sampled rows
    "table.tables.conditioning.steps=20",
    "table.tables.conditioning.n_samples=2",  # samples per photo and sampled row (full: 4)
    "table.tables.conditioning.diversity_samples=16",  # (full: 64)
    "table.tables.reconstruction.presets=[unguided,guided_eps,optimize]",  # full: also guided_x0
    "table.tables.robustness.corruptions=[occluder]",  # full: also side light, noise and JPEG
]

#: what ``make tables`` sets beyond the tables' defaults: the robustness fits take the landmarks that the
#: dataset's synthetic face detector finds on each (corrupted) photo, so a corruption reaches the landmark
#: term too (the Makefile trains ``data/synthetic/detector.safetensors`` first when it is missing)
FULL_TABLES: list[str] = [
    "table.tables.robustness.landmarks=detected",
]
