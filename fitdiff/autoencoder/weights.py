"""Load a trained autoencoder for later stages, and export its weights as safetensors.

The diffusion stage calls :func:`load_autoencoder` with a Lightning checkpoint (``.ckpt``, read with
``torch.load(weights_only=True)``) or an exported ``.safetensors`` file, and gets the frozen
:class:`~fitdiff.autoencoder.branched.BranchedVQAutoencoder` (``encode`` / ``decode``)::

    python -m fitdiff.autoencoder RUN/checkpoints/last.ckpt autoencoder.safetensors

The safetensors file holds the generator only (no discriminators, no LPIPS) and its constructor
arguments as JSON in the metadata key ``config``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fitdiff.autoencoder.branched import BranchedVQAutoencoder

__all__ = ["build_network", "export_safetensors", "load_autoencoder", "main"]

log = logging.getLogger(__name__)

FORMAT = "fitdiff.autoencoder/1"


def build_network(config: Mapping[str, Any]) -> BranchedVQAutoencoder:
    """A network from :attr:`BranchedVQAutoencoder.config` (or the same keys from module hyperparameters)."""
    return BranchedVQAutoencoder(**dict(config))


def _freeze(net: BranchedVQAutoencoder) -> BranchedVQAutoencoder:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def export_safetensors(net: BranchedVQAutoencoder, path: str | Path) -> Path:
    """Write the generator's weights and config to ``path`` (``.safetensors``); return the path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"format": FORMAT, "config": json.dumps(net.config)})
    log.info("exported %d tensors to %s", len(state), path)
    return path


def _network_config_from_hparams(hp: Mapping[str, Any]) -> dict[str, Any]:
    return {"maps": hp.get("maps"), "branches": hp.get("branches"), "quantizer": hp.get("quantizer"),
            **dict(hp.get("network") or {})}


def load_autoencoder(path: str | Path, map_location: str | torch.device = "cpu", freeze: bool = True
                     ) -> BranchedVQAutoencoder:
    """The autoencoder in a ``.safetensors`` export or an ``AutoencoderModule`` checkpoint.

    Args:
        path: the file.
        map_location: device of the returned network.
        freeze: eval mode and ``requires_grad=False`` (what a later stage wants).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no autoencoder weights at {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path} is not an autoencoder export (format {metadata.get('format')!r})")
        net = build_network(json.loads(metadata["config"]))
        net.load_state_dict(load_file(str(path), device="cpu"))
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
            raise ValueError(f"{path} is not a Lightning checkpoint of fitdiff.autoencoder.AutoencoderModule")
        net = build_network(_network_config_from_hparams(ckpt["hyper_parameters"]))
        prefix = "net."
        net.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)})
    net = net.to(map_location)
    return _freeze(net) if freeze else net


def main(argv: list[str] | None = None) -> int:
    """Command line: export a checkpoint's generator as safetensors."""
    parser = argparse.ArgumentParser(
        prog="python -m fitdiff.autoencoder", description="Export an autoencoder checkpoint's weights as safetensors."
    )
    parser.add_argument("checkpoint", help="AutoencoderModule .ckpt")
    parser.add_argument("output", help="destination .safetensors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    net = load_autoencoder(args.checkpoint)
    export_safetensors(net, args.output)
    n = sum(p.numel() for p in net.parameters())
    log.info("%s: %d branches, %.2f M parameters, latent %d channels at factor %d", args.output,
             len(net.branches), n / 1e6, net.latent_channels, net.downsampling_factor)
    return 0
