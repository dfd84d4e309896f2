"""Complete partial reflectance maps with a trained diffusion checkpoint.

    python -m fitdiff.complete --ckpt RUN/checkpoints/last.ckpt --maps partial/ --mask mask.png --out done/
    python -m fitdiff.complete --ckpt CKPT --maps data/synthetic:syn00021_000 --mask mask.png \
        --identity stored --out done/                       # a dataset sample, its own identity embedding
    python -m fitdiff.complete --ckpt CKPT --maps partial/ --mask mask.png --identity emb.npy --resample 3 --out done/
    python -m fitdiff.complete --ckpt CKPT --from-fit recon/ --out done/      # a photo's own visible half, completed

``--maps`` is a folder of UV maps (any subset of ``*diffuse*.png``, ``*specular*.png``,
``*normals*.png``, as ``python -m fitdiff.reconstruct`` and ``fitdiff.sample`` write them: colour maps
sRGB-encoded, normals as ``(n + 1) / 2``), or ``DATASET:KEY`` for a sample of a face-shard dataset.
``--mask`` is an image, white where the maps are known, resized to the maps. ``--shape`` (a ``.npy``
of the K coefficients) fixes the shape; otherwise it is sampled. ``--identity`` conditions on a
``.npy`` embedding, a photo (as ``fitdiff.sample --identity``) or ``stored`` (a dataset sample's own);
none samples unconditionally. How the mask reaches the latent grid and how seams are blended:
:mod:`fitdiff.completion.inpaint`.

``--from-fit RECON_DIR`` takes the output folder of ``python -m fitdiff.reconstruct``: its photo is
unwrapped onto the UV map with the fitted camera, shape and lights (:func:`fitdiff.fitting.unwrap.unwrap_photo`,
visibility from the rasteriser, de-lit to diffuse albedo), and the texels the photo does not show are
completed, conditioned on the photo's identity embedding (the fit's recognizer) and the fitted shape;
``--maps`` and ``--mask`` are then not given (``unwrapped_diffuse.png`` and ``mask.png`` are written too).

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
    parser.add_argument("--maps", help="folder of partial UV maps, or DATASET:KEY")
    parser.add_argument("--mask", help="validity mask image (white = known)")
    parser.add_argument("--from-fit", help="a python -m fitdiff.reconstruct output folder: complete its photo's unwrap")
    parser.add_argument("--identity", help="identity: emb.npy, a photo, or 'stored' (a dataset sample's own)")
    parser.add_argument("--landmarks", help="landmarks of an --identity photo (.npy)")
    parser.add_argument("--recognizer", help="identity encoder name (default: the one the checkpoint records)")
    parser.add_argument("--recognizer-weights", help="recognizer weights for an --identity photo or --from-fit")
    parser.add_argument("--shape", help="known shape coefficients (.npy of K floats); default: sampled")
    parser.add_argument("--guidance-scale", type=float, default=2.0,
                        help="CFG scale with an identity (2 completes held-out maps best, docs/BENCHMARKS.md)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--resample", type=int, default=1, help="runs of every step (RePaint resampling)")
    parser.add_argument("--seam", choices=("harmonic", "feather"), default="harmonic",
                        help="harmonic: offset the sample to meet the known texels; feather: fade them in over --blend")
    parser.add_argument("--blend", type=float, default=1.5, help="feather width (texels, Gaussian sigma), --seam feather")
    parser.add_argument("--erode", type=int, default=0, help="latent cells removed from the known region's edge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    if bool(args.from_fit) == bool(args.maps or args.mask):
        parser.error("give either --maps and --mask, or --from-fit")
    if not args.from_fit and not (args.maps and args.mask):
        parser.error("--maps needs --mask (and --mask needs --maps)")
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
    module = LatentDiffusionModule.load_checkpoint(ckpt, map_location=args.device)
    pipe = module.pipeline(ema=True)
    expected = pipe.decode(torch.zeros(1, *pipe.latent_shape, device=args.device)).maps["diffuse"].shape[-1]
    identity = None
    if args.from_fit:
        known, uv, extra = _from_fit(Path(args.from_fit), module, expected, args)
        identity = extra.get("identity")
    else:
        known, extra = load_partial_maps(args.maps)
        res = next(iter(known.values())).shape[-1]
        if res != expected:
            raise CompletionError(f"--maps {args.maps}: {res} x {res} maps; the checkpoint's are {expected} x {expected}")
        uv = torch.from_numpy(read_mask(args.mask, res))[None]
    if args.identity == "stored":
        if "identity" not in extra:
            raise CompletionError("--identity stored needs --maps DATASET:KEY (a sample with its embedding)")
        identity = extra["identity"]
    elif args.identity:
        from fitdiff.sample import load_identity

        identity = load_identity(args.identity, args.recognizer, args.recognizer_weights, args.landmarks,
                                 module.hparams.get("recognizer"))
    shape = extra.get("fitted_shape")
    if args.shape:
        values = np.load(args.shape, allow_pickle=False).astype(np.float32).reshape(-1)
        if values.shape != (pipe.layout.shape_dim,) or not np.isfinite(values).all():
            raise CompletionError(f"--shape {args.shape}: expected {pipe.layout.shape_dim} finite coefficients, got "
                                  f"shape {values.shape}")
        shape = torch.from_numpy(values)[None]
    sampler = Sampler(ddim_scheduler(), num_inference_steps=args.steps, progress=True)
    done = complete_maps(pipe, known, uv, sampler, shape=shape, identity=identity,
                         guidance_scale=args.guidance_scale, generator=torch.Generator().manual_seed(args.seed),
                         blend=args.blend, resample=args.resample, erode=args.erode, seam=args.seam)
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
    if args.from_fit:
        save_png(out / "mask.png", uv.float().expand(3, -1, -1))
        save_png(out / "unwrapped_diffuse.png", (known["diffuse"][0].clamp(0, 1) ** (1 / 2.2)) * uv.float())
    record = {
        "checkpoint": str(ckpt), "checkpoint_sha256": sha256_file(ckpt), "maps": args.maps or "unwrapped photo",
        "from_fit": args.from_fit, "maps_given": sorted(known), "mask": str(args.mask or out / "mask.png"), "hidden_share": float(1 - uv.float().mean()),
        "known_latent_cells": done.known_cells,
        "identity": args.identity or ("the photo's" if identity is not None else "unconditional"),
        "guidance_scale": args.guidance_scale, "shape_given": shape is not None, "sampler": sampler.describe(),
        "resample": args.resample, "seam": args.seam, "blend": args.blend, "erode": args.erode, "seed": args.seed,
        "shape": done.shape[0].tolist(),
    }
    atomic_write_text(out / "completion.json", json.dumps(record, indent=2) + "\n")
    return record


def _from_fit(folder: Path, module: Any, resolution: int, args: argparse.Namespace
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]:
    """The de-lit unwrap of a reconstruction's photo, its validity mask, and the fitted shape and the
    photo's identity embedding."""
    from fitdiff.face.photo import PhotoError, read_photo
    from fitdiff.face.scene import FaceScene, camera_from_meta
    from fitdiff.fitting.unwrap import unwrap_photo

    record_path = folder / "fit.json"
    if not record_path.is_file():
        raise CompletionError(f"--from-fit {folder}: no fit.json (a python -m fitdiff.reconstruct output folder)")
    fit = json.loads(record_path.read_text())
    try:
        photo = read_photo(fit["photo"], what="the fit's photo")
    except (PhotoError, KeyError) as exc:
        raise CompletionError(f"--from-fit {folder}: the photo it fitted cannot be read ({exc})") from None
    shape_model = module.shape_model()
    if shape_model is None:
        raise CompletionError(f"{args.ckpt}: the checkpoint names no shape model")
    camera, lights = camera_from_meta(fit)
    image = torch.from_numpy(photo.pixels.copy()).permute(2, 0, 1).float().div(255.0)[None]
    if tuple(image.shape[-2:]) != tuple(camera.image_size):
        raise CompletionError(f"--from-fit {folder}: the photo is {tuple(image.shape[-2:])}, the fit's camera "
                              f"{tuple(camera.image_size)}")
    shape = torch.tensor(fit["shape"], dtype=torch.float32)[None]
    scene = FaceScene(shape_model.cpu(), normal_space="tangent")
    unwrapped = unwrap_photo(scene, shape, camera, image, resolution, lights=lights)
    extra: dict[str, Any] = {"fitted_shape": shape}
    if not args.identity:  # the photo's own embedding, by the recognizer the checkpoint was conditioned on
        from fitdiff.data.landmarks import five_point_landmarks
        from fitdiff.sample import checkpoint_recognizer

        recorded = module.hparams.get("recognizer")
        try:
            encoder, _ = checkpoint_recognizer(recorded, args.recognizer, args.recognizer_weights)
        except KeyError as exc:
            raise CompletionError(f"{exc.args[0]} (the checkpoint records {recorded!r}; pass --recognizer)") from None
        points = camera.project(shape_model.cpu()(shape)[:, shape_model.landmarks_5])[0]
        with torch.no_grad():
            extra["identity"] = encoder(image, torch.from_numpy(five_point_landmarks(points.numpy())))[0]
    return {"diffuse": unwrapped.texture.clamp(0, 1)}, unwrapped.valid, extra


if __name__ == "__main__":
    sys.exit(main())
