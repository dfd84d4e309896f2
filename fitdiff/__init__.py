"""FitDiff: monocular 3D face shape and reflectance estimation with identity-conditioned latent diffusion.

Sub-packages follow the data flow (see README): ``data`` (samples, shards, DataModule), ``face`` (shape
model, identity encoder, detection), ``render`` (differentiable rasteriser and shading), ``autoencoder``
and ``ldm`` (the two trained stages), ``diffusion`` (schedules and samplers, no network state),
``fitting`` (guided reconstruction), ``metrics`` and ``callbacks``.
"""

__version__ = "0.1.0.dev0"
