"""The quickstart: the whole pipeline end to end, on whatever this machine has.

``make quickstart`` runs ``python -m fitdiff.quickstart``. It needs no data, no GPU and no network:
every stage works on the embedded synthetic dataset and reuses what an earlier run already produced,
so running it twice is cheap. Stages, in order:

1. ``assets``      — list the registered external files (pretrained weights, shape models) and their
   state; none is needed for the quickstart.
2. ``configs``     — compose and validate every experiment in ``experiments/experiment/``.
3. ``dataset``     — build the embedded synthetic fitted dataset in ``data/synthetic`` (400 subjects x 4
   photos, 40 validation and 40 test subjects, 64x64 UV maps, 128x128 photos, with its trained synthetic
   recognizer; about 5 minutes), unless one built with the same settings is there, and print its
   identity-verification ROC-AUC and linear identity probe on held-out subjects.
4. ``autoencoder`` — train ``experiment=quickstart_ae`` for its fixed budget of 500 steps (about 7
   minutes on 2 idle CPU cores; every machine stops at the same step) unless a finished run is there,
   export its weights as safetensors and print its validation metrics.
5. ``latents``     — encode the dataset with the exported autoencoder into ``data/synthetic_latents``
   (``data_prep/encode_latents.py``) unless latents of that very file are there.
6. ``diffusion``   — train ``experiment=quickstart_ldm`` for its fixed step budget unless a finished run
   is there (``--ablations`` also trains ``experiment=ablation_none``).
7. ``samples``     — ``python -m fitdiff.sample``: unconditional avatars and avatars of a held-out identity
   (OBJ + GLB + grid.png).
8. ``reconstruct`` — ``python -m fitdiff.reconstruct``: guided reconstruction (preset ``guided_x0``) of the
   first held-out photo from its landmarks: avatar, render, relit renders, ``fit.json`` in
   ``reconstruct/guided_x0/``.
9. ``evaluate``    — ``python evaluate.py table=all`` on a stated subset (:data:`QUICKSTART_TABLES`: 4
   held-out photos, 2 samples per photo in the conditioning table, the occluder alone in the robustness
   table, no ``guided_x0`` row): the
   conditioning, reconstruction, robustness, reflectance, shape and ablation tables with their plots,
   image grids and ``report.html``, in ``evaluate/``. ``make tables`` runs the full tables (40 photos,
   every preset and corruption; the robustness fits with landmarks detected on the corrupted photos,
   :data:`FULL_TABLES`) into ``tables/``.

Modules: :mod:`~fitdiff.quickstart.stages` (the stages above), :mod:`~fitdiff.quickstart.settings` (the
dataset settings and the tables subset), :mod:`~fitdiff.quickstart.launch` (running the tools in this
process), :mod:`~fitdiff.quickstart.inputs` (held-out files for the tools), :mod:`~fitdiff.quickstart.cli`.
"""

from fitdiff.config.compose import compose_experiment, experiment_names
from fitdiff.quickstart.cli import main, tables_main
from fitdiff.quickstart.settings import FULL_TABLES, QUICKSTART_TABLES, SYNTHETIC_SETTINGS
from fitdiff.quickstart.stages import STAGES

__all__ = ["main", "tables_main", "STAGES", "QUICKSTART_TABLES", "FULL_TABLES", "SYNTHETIC_SETTINGS",
           "compose_experiment", "experiment_names"]
