"""Autoencoder stage: the branched multi-modal VQGAN over diffuse albedo, specular albedo and normal maps.

- :class:`BranchedVQAutoencoder` — encoders, quantiser(s), decoders; ``encode`` / ``decode`` in data space.
- :class:`AutoencoderModule` — the LightningModule (``experiments/model/ae_*.yaml``).
- :func:`load_autoencoder` / :func:`export_safetensors` — what the diffusion stage loads.
"""

from fitdiff.autoencoder.adaptive_weight import adaptive_weight
from fitdiff.autoencoder.branched import (
    DEFAULT_MAPS,
    UNIT_VECTOR_MAPS,
    AutoencoderOutput,
    BranchedVQAutoencoder,
)
from fitdiff.autoencoder.discriminator import PatchDiscriminator
from fitdiff.autoencoder.losses import VQGANLoss, angular_error, hinge_discriminator_loss
from fitdiff.autoencoder.module import AutoencoderModule
from fitdiff.autoencoder.quantizer import Quantized, VectorQuantizer
from fitdiff.autoencoder.weights import build_network, export_safetensors, load_autoencoder
from fitdiff.metrics.lpips import PerceptualLoss, build_lpips

__all__ = [
    "AutoencoderModule",
    "AutoencoderOutput",
    "BranchedVQAutoencoder",
    "DEFAULT_MAPS",
    "PatchDiscriminator",
    "PerceptualLoss",
    "Quantized",
    "UNIT_VECTOR_MAPS",
    "VQGANLoss",
    "VectorQuantizer",
    "adaptive_weight",
    "angular_error",
    "build_lpips",
    "build_network",
    "export_safetensors",
    "hinge_discriminator_loss",
    "load_autoencoder",
]
