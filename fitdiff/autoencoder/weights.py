"""Load a trained autoencoder for later stages, and export its weights as safetensors.

The diffusion stage calls :func:`load_autoencoder` with a Lightning checkpoint (``.ckpt``, read with
``torch.load(weights_only=True)``) or an exported ``.safetensors`` file, and gets the frozen
:class:`~fitdiff.autoencoder.branched.BranchedVQAutoencoder` (``encode`` / ``decode``)::

    python -m fitdiff.autoencoder RUN/checkpoints/last.ckpt autoencoder.safetensors

The safetensors file holds the generator only (no discriminators, no LPIPS) and its constructor
arguments as JSON in the metadata key ``config``. It is written atomically: an interrupted export leaves
no partial file behind, and an existing file is replaced only by a complete one.
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
from fitdiff.config.checkpoint_kind import check_checkpoint_stage, checkpoint_stage
from fitdiff.io import atomic_write_bytes, load_state_dict, safetensors_metadata

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
    """Write the generator's weights and constructor arguments to ``path`` (``.safetensors``), atomically.

    Returns:
        ``path``.
    """
    from safetensors.torch import save

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"format": FORMAT, "config": json.dumps(net.config)}))
    log.info("exported %d tensors to %s", len(state), path)
    return path


def _network_from_hparams(hp: Mapping[str, Any], path: Path) -> BranchedVQAutoencoder:
    """The (untrained) network an ``AutoencoderModule`` checkpoint's hyperparameters describe.

    Reads the ``net`` config node (a ``_target_`` that is not BranchedVQAutoencoder or a subclass is
    refused before anything is built), or the flat ``maps`` / ``branches`` / ``network`` / ``quantizer``
    keys of checkpoints written before the parts became config nodes.
    """
    node = hp.get("net")
    if node is None:
        return build_network({"maps": hp.get("maps"), "branches": hp.get("branches"),
                              "quantizer": hp.get("quantizer"), **dict(hp.get("network") or {})})
    from hydra.utils import get_class

    target = node.get("_target_", f"{BranchedVQAutoencoder.__module__}.{BranchedVQAutoencoder.__name__}")
    try:
        cls = get_class(str(target))
    except Exception as exc:
        raise ValueError(f"{path}: the network target {target!r} does not import ({exc})") from exc
    if not (isinstance(cls, type) and issubclass(cls, BranchedVQAutoencoder)):
        raise ValueError(f"{path}: the network target {target!r} is not a BranchedVQAutoencoder")
    return cls(**{k: v for k, v in node.items() if not (k.startswith("_") and k.endswith("_"))})


def load_autoencoder(path: str | Path, map_location: str | torch.device = "cpu", freeze: bool = True, *,
                     what: str = "autoencoder (model.autoencoder / --autoencoder)") -> BranchedVQAutoencoder:
    """The autoencoder in a ``.safetensors`` export or an ``AutoencoderModule`` checkpoint.

    Args:
        path: the file.
        map_location: device of the returned network.
        freeze: eval mode and ``requires_grad=False`` (what a later stage wants).
        what: how errors name the input.

    Raises:
        CheckpointStageError: ``path`` is a checkpoint of the diffusion stage.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no autoencoder weights at {path}")
    if path.suffix == ".safetensors":
        metadata = safetensors_metadata(path, what="autoencoder export")
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path} is not an autoencoder export (format {metadata.get('format')!r})")
        net = build_network(json.loads(metadata["config"]))
        net.load_state_dict(load_state_dict(path, what="autoencoder export"))
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
            raise ValueError(f"{path} is not a Lightning checkpoint of fitdiff.autoencoder.AutoencoderModule")
        if checkpoint_stage(ckpt) == "diffusion":
            check_checkpoint_stage(path, "autoencoder", what=what, checkpoint=ckpt)
        net = _network_from_hparams(ckpt["hyper_parameters"], path)
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
