"""Complete partial reflectance maps with a trained diffusion checkpoint.

    python -m fitdiff.complete --ckpt RUN/checkpoints/last.ckpt --maps partial/ --mask mask.png --out done/
    python -m fitdiff.complete --ckpt CKPT --maps data/synthetic:syn00021_000 --mask mask.png \
        --identity stored --out done/                       # a dataset sample, its own identity embedding
    python -m fitdiff.complete --ckpt CKPT --maps partial/ --mask mask.png --identity emb.npy --resample 3 --out done/

``--maps`` is a folder of UV maps (any subset of ``*diffuse*.png``, ``*specular*.png``,
``*normals*.png``, as ``python -m fitdiff.reconstruct`` and ``fitdiff.sample`` write them: colour maps
sRGB-encoded, normals as ``(n + 1) / 2``), or ``DATASET:KEY`` for a sample of a face-shard dataset.
``--mask`` is an image, white where the maps are known, resized to the maps. ``--shape`` (a ``.npy``
of the K coefficients) fixes the shape; otherwise it is sampled. ``--identity`` conditions on a
``.npy`` embedding, a photo (as ``fitdiff.sample --identity``) or ``stored`` (a dataset sample's own);
none samples unconditionally. How the mask reaches the latent grid and how seams are blended:
:mod:`fitdiff.completion.inpaint`.

Written into ``--out``: ``completed_{diffuse,specular,normals}.png``, the avatar (``completed.obj`` +
``.mtl``, ``completed.glb``) when the checkpoint names a shape model, ``comparison.png`` (per map: the
known part over grey, the completion) and ``completion.json`` (checkpoint sha256, sampler, seed, mask
shares).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fitdiff.io import atomic_write_text, sha256_file

__all__ = ["CompletionError", "load_partial_maps", "main"]

log = logging.getLogger("fitdiff.complete")

MAP_NAMES = ("diffuse", "specular", "normals")


class CompletionError(ValueError):
    """An input of ``fitdiff.complete`` that cannot be used (the message names it)."""


def load_partial_maps(source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Maps name -> (1, C, R, R) data-space tensors from a folder or ``DATASET:KEY``, and what else the
    source holds (``identity`` and ``shape`` of a dataset sample)."""
    from fitdiff.export.images import read_normal_map, read_texture

    folder = Path(source)
    if folder.is_dir():
        maps: dict[str, torch.Tensor] = {}
        for name in MAP_NAMES:
            found = sorted(folder.glob(f"*{name}*.png"))
            if len(found) > 1:
                raise CompletionError(f"--maps {folder}: several {name} maps ({', '.join(p.name for p in found)})")
            if found:
                try:
                    array = read_normal_map(found[0]) if name == "normals" else read_texture(found[0], srgb=True)
                except OSError as exc:
                    raise CompletionError(f"--maps {found[0]}: {exc}") from None
                if name == "diffuse":
                    array = array[:3]
                if name == "specular":
                    array = array[:1]
                maps[name] = torch.from_numpy(np.ascontiguousarray(array)).float()[None]
        if not maps:
            raise CompletionError(f"--maps {folder}: no *diffuse*.png, *specular*.png or *normals*.png in the folder")
        sizes = {tuple(m.shape[-2:]) for m in maps.values()}
        if len(sizes) > 1:
            raise CompletionError(f"--maps {folder}: the maps differ in size ({sorted(sizes)})")
        return maps, {}
    if ":" in source:
        data, key = source.rsplit(":", 1)
        from fitdiff.data.manifest import load_manifest
        from fitdiff.evaluation.faces import load_faces

        try:
            manifest = load_manifest(Path(data))
            faces = load_faces(data, [s for s, n in manifest.counts.items() if n], with_photos=False,
                               manifest=manifest)
        except Exception as exc:
            raise CompletionError(f"--maps {source}: cannot read the dataset {data} ({exc})") from None
        if key not in faces.keys:
            raise CompletionError(f"--maps {source}: no sample {key!r} in {data} ({len(faces)} samples)")
        face = faces.subset([faces.keys.index(key)])
        return {n: face.maps[n] for n in MAP_NAMES}, {"identity": face.identity[0], "shape": face.shape}
    raise CompletionError(f"--maps {source}: neither a folder nor DATASET:KEY")


def _comparison(known: dict[str, torch.Tensor], uv: torch.Tensor, done: dict[str, torch.Tensor]) -> torch.Tensor:
    """(3, 2R, nR) image: per given map, the known part over grey (top) and the completion (bottom)."""
    def show(x: torch.Tensor, name: str) -> torch.Tensor:
        x = x[0].detach().cpu()
        x = (x + 1) / 2 if name == "normals" else x.clamp(0, 1) ** (1 / 2.2)
        return x.expand(3, -1, -1) if x.shape[0] == 1 else x

    columns = []
    for name in (n for n in MAP_NAMES if n in known):
        given = show(known[name], name)
        top = torch.where(uv[0].cpu(), given, torch.full_like(given, 0.5))
        columns.append(torch.cat([top, show(done[name], name)], dim=1))
    return torch.cat(columns, dim=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fitdiff.complete", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="diffusion checkpoint (.ckpt)")
    parser.add_argument("--maps", required=True, help="folder of partial UV maps, or DATASET:KEY")
    parser.add_argument("--mask", required=True, help="validity mask image (white = known)")
    parser.add_argument("--identity", help="identity: emb.npy, a photo, or 'stored' (a dataset sample's own)")
    parser.add_argument("--landmarks", help="landmarks of an --identity photo (.npy)")
    parser.add_argument("--recognizer-weights", help="recognizer weights for an --identity photo")
    parser.add_argument("--shape", help="known shape coefficients (.npy of K floats); default: sampled")
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="CFG scale with an identity")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--resample", type=int, default=1, help="runs of every step (RePaint resampling)")
    parser.add_argument("--blend", type=float, default=1.5, help="seam blending width (texels, Gaussian sigma)")
    parser.add_argument("--erode", type=int, default=0, help="latent cells removed from the known region's edge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        record = _run(args)
    except (CompletionError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"completed {', '.join(record['maps_given'])} ({100 * record['hidden_share']:.0f}% of the texels missing) "
          f"-> {args.out}")
    return 0


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from fitdiff.completion import complete_maps, read_mask
    from fitdiff.config.checkpoint_kind import check_checkpoint_stage
    from fitdiff.diffusion import Sampler, ddim_scheduler
    from fitdiff.export import export_avatar
    from fitdiff.export.grid import save_png
    from fitdiff.ldm.module import LatentDiffusionModule

    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        raise CompletionError(f"--ckpt: no checkpoint at {ckpt} (train one: make quickstart)")
    check_checkpoint_stage(ckpt, "diffusion", what="--ckpt")
    known, extra = load_partial_maps(args.maps)
    res = next(iter(known.values())).shape[-1]
    uv = torch.from_numpy(read_mask(args.mask, res))[None]
    module = LatentDiffusionModule.load_checkpoint(ckpt, map_location=args.device)
    pipe = module.pipeline(ema=True)
    expected = pipe.decode(torch.zeros(1, *pipe.latent_shape, device=args.device)).maps["diffuse"].shape[-1]
    if res != expected:
        raise CompletionError(f"--maps {args.maps}: {res} x {res} maps; the checkpoint's are {expected} x {expected}")
    identity = None
    if args.identity == "stored":
        if "identity" not in extra:
            raise CompletionError("--identity stored needs --maps DATASET:KEY (a sample with its embedding)")
        identity = extra["identity"]
    elif args.identity:
        from fitdiff.sample import load_identity

        identity = load_identity(args.identity, None, args.recognizer_weights, args.landmarks,
                                 module.hparams.get("recognizer"))
    shape = None
    if args.shape:
        values = np.load(args.shape, allow_pickle=False).astype(np.float32).reshape(-1)
        if values.shape != (pipe.layout.shape_dim,) or not np.isfinite(values).all():
            raise CompletionError(f"--shape {args.shape}: expected {pipe.layout.shape_dim} finite coefficients, got "
                                  f"shape {values.shape}")
        shape = torch.from_numpy(values)[None]
    sampler = Sampler(ddim_scheduler(), num_inference_steps=args.steps, progress=True)
    done = complete_maps(pipe, known, uv, sampler, shape=shape, identity=identity,
                         guidance_scale=args.guidance_scale, generator=torch.Generator().manual_seed(args.seed),
                         blend=args.blend, resample=args.resample, erode=args.erode)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape_model = module.shape_model()
    maps = {k: v[0].float().cpu() for k, v in done.maps.items()}
    if shape_model is not None:
        vertices = shape_model(done.shape[:1].to(module.device))[0].detach().cpu()
        export_avatar(out, "completed", vertices, shape_model.faces.cpu(), shape_model.uvs.cpu(), maps,
                      uv_faces=shape_model.uv_faces.cpu())
    else:  # maps only
        from fitdiff.export.images import encode_png, linear_to_srgb

        for name, value in maps.items():
            array = value.numpy()
            array = (array + 1) / 2 if name == "normals" else linear_to_srgb(array)
            (out / f"completed_{name}.png").write_bytes(encode_png(array))
    save_png(out / "comparison.png", _comparison(known, uv, done.maps))
    record = {
        "checkpoint": str(ckpt), "checkpoint_sha256": sha256_file(ckpt), "maps": args.maps,
        "maps_given": sorted(known), "mask": str(args.mask), "hidden_share": float(1 - uv.float().mean()),
        "known_latent_cells": done.known_cells, "identity": args.identity or "unconditional",
        "guidance_scale": args.guidance_scale, "shape_given": shape is not None, "sampler": sampler.describe(),
        "resample": args.resample, "blend": args.blend, "erode": args.erode, "seed": args.seed,
        "shape": done.shape[0].tolist(),
    }
    atomic_write_text(out / "completion.json", json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    sys.exit(main())
