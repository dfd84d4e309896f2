"""FitDiff: monocular 3D face shape and reflectance estimation with identity-conditioned latent diffusion.

What exists, lowest layer first (docs/DESIGN.md §2 has the import rules):

- ``io`` (hashing, atomic writes, state-dict loading), ``config`` (schema, validation, instantiation),
  ``optim`` (optimiser and LR-schedule nodes), ``assets`` (named external files), ``loggers``.
- ``data``: sample schema and validation, codecs, tar reader, shard writer, manifest, the fields each
  stage reads, the 68 -> 5 landmark rule, the LightningDataModule.
- ``render``: cameras, rasteriser, mesh normals / tangent frames, shading and lighting, ``Renderer``.
- ``metrics``: LPIPS, angular error, identity similarity, ROC-AUC, shape error.
- ``face``: PCA shape model, procedural template, LSFM converter, the differentiable face scene
  (``FaceScene``, ``camera_from_meta``), identity encoders, alignment, detection.
- ``synthetic``: the embedded synthetic fitted dataset and its recognizer's training.
- ``autoencoder``: the branched VQGAN stage (networks, quantiser, losses, LightningModule, export).
- ``callbacks``: last checkpoint at the end of every run, step progress bar.
- ``export``: OBJ / MTL / PNG avatars. ``tasks``, ``quickstart``, ``smoke``: what the entry points run.

Planned: ``diffusion`` and ``ldm`` (the diffusion stage), ``fitting`` (guided reconstruction),
``evaluation`` (result tables and report).
"""

__version__ = "0.1.0.dev0"
