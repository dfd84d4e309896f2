"""Sample relightable avatars from a trained diffusion checkpoint.

    python -m fitdiff.sample --ckpt RUN/checkpoints/last.ckpt --n 16 --out samples/
    python -m fitdiff.sample --ckpt CKPT --identity emb.npy --guidance-scale 3 --out samples/
    python -m fitdiff.sample --ckpt CKPT --identity photo.png [--landmarks lmk.npy] \
        --recognizer-weights data/synthetic/recognizer.safetensors --out samples/
    python -m fitdiff.sample --ckpt CKPT --scheduler dpm --steps 25 --seed 3 --out samples/

Without ``--identity`` the samples are unconditional (the learned null embedding). An identity is a
(512,) ``.npy`` embedding or a photo: the photo's 5 landmarks come from ``--landmarks`` (5 or 68 points,
image pixels) or from face detection (the retinaface asset); no face found is an error naming the file.
The photo is loaded as by ``python -m fitdiff.reconstruct`` (:mod:`fitdiff.face.photo`): refused before
decoding above 40 M pixels, downscaled to a longest side of 2048 (``--landmarks`` scaled alike).
The photo is embedded by the recognizer the training embeddings came from (the checkpoint records its
id; its weights file is checked against it).

Written into ``--out``: per sample ``sample_XX.obj`` + ``.mtl`` + ``_diffuse/_specular/_normals.png`` and
``sample_XX.glb`` (binary glTF, PBR), ``grid.png`` (maps and preview renders, a row per sample) and
``samples.json`` (checkpoint sha256, sampler, steps, guidance scale, seed, identity source).

Dataset augmentation: ``--render-dataset OUT --views K`` instead renders each of the ``--n`` avatars
under K random cameras and lights into a new face-shard dataset in ``OUT`` (the project's schema, with a
manifest; identity embeddings recomputed by the checkpoint's recognizer, ``--recognizer-weights``), for
``build_shards``-style training (:mod:`fitdiff.augment.render_dataset`). The avatars are unconditional,
or one per row of ``--identities EMB.npy`` ((N, 512) embeddings)::

    python -m fitdiff.sample --ckpt CKPT --n 200 --render-dataset data/augmented --views 2 \
        --recognizer-weights data/synthetic/recognizer.safetensors
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

from fitdiff.callbacks.sample_grid import render_previews
from fitdiff.config.checkpoint_kind import check_checkpoint_stage
from fitdiff.export import export_avatar
from fitdiff.export.grid import avatar_grid, save_png
from fitdiff.io import atomic_write_text, sha256_file

__all__ = ["checkpoint_recognizer", "load_identity", "main", "sample_avatars"]

log = logging.getLogger("fitdiff.sample")

SCHEDULERS = ("ddim", "dpm", "ddpm")


def _sampler(module: Any, scheduler: str | None, steps: int | None, eta: float | None) -> Any:
    from fitdiff.diffusion import Sampler, ddim_scheduler, ddpm_scheduler, dpm_scheduler

    if scheduler is None:
        overrides = {k: v for k, v in (("num_inference_steps", steps), ("eta", eta)) if v is not None}
        return module.build_sampler(**overrides)
    build = {"ddim": ddim_scheduler, "dpm": dpm_scheduler, "ddpm": ddpm_scheduler}[scheduler]
    default_steps = {"ddim": 50, "dpm": 25, "ddpm": 50}[scheduler]
    return Sampler(build(), num_inference_steps=steps or default_steps,
                   eta=eta if eta is not None else 0.0, progress=True)


def _check_recognizer(recorded: str | None, weights: Path) -> None:
    if recorded and "@sha256:" in recorded:
        expected = recorded.split("@sha256:", 1)[1]
        actual = sha256_file(weights)
        if actual != expected:
            raise ValueError(f"{weights} (sha256 {actual}) is not the recognizer the training embeddings came "
                             f"from ({recorded})")


def checkpoint_recognizer(recorded: str | None, recognizer: str | None = None,
                          weights: str | Path | None = None) -> tuple[Any, str]:
    """The frozen identity encoder ``recognizer`` (default: the one a checkpoint records, ``recorded``, as
    ``name@sha256:...``) and its name; ``weights`` are checked against the recorded sha256.

    Raises:
        ValueError: the weights are not the recorded recognizer's. KeyError: no encoder of that name.
    """
    from fitdiff.face.identity import build_identity_encoder
    from fitdiff.face.synthetic_recognizer import SyntheticRecognizer  # noqa: F401  (registers the encoder)

    name = recognizer or (recorded.split("@", 1)[0] if recorded else "arcface_ir_se50")
    kwargs: dict[str, Any] = {}
    if weights is not None:
        _check_recognizer(recorded, Path(weights))
        kwargs["weights"] = str(weights)
    return build_identity_encoder(name, **kwargs).freeze(), name


def load_identity(path: str | Path, recognizer: str | None = None, weights: str | Path | None = None,
                  landmarks: str | Path | None = None, recorded: str | None = None,
                  detector_weights: str | Path | None = None) -> torch.Tensor:
    """(512,) unit-norm identity embedding from a ``.npy`` embedding or a photo (see the module docstring);
    a photo without ``landmarks`` goes to :func:`fitdiff.face.detectors.face_detector` of ``detector_weights``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--identity: no file at {path}")
    if path.suffix == ".npy":
        emb = np.load(path, allow_pickle=False).astype(np.float32).reshape(-1)
        if emb.shape != (512,) or not np.isfinite(emb).all():
            raise ValueError(f"{path}: an identity embedding must be 512 finite floats, got shape {emb.shape}")
        return torch.nn.functional.normalize(torch.from_numpy(emb), dim=0)
    from fitdiff.data.landmarks import five_point_landmarks
    from fitdiff.face.detection import NoFaceError, landmarks_for
    from fitdiff.face.detectors import face_detector
    from fitdiff.face.photo import read_photo

    photo = read_photo(path, what="--identity")  # PhotoError (a ValueError) names the file
    image = photo.pixels
    points = None
    if landmarks is not None:
        try:
            points = five_point_landmarks(photo.points_from_file(np.load(landmarks, allow_pickle=False)))
        except Exception as exc:
            raise ValueError(f"--landmarks {landmarks} (for {path.name}): expected a .npy of (68, 2) or (5, 2) "
                             f"pixel coordinates ({exc})") from exc
    detector = None
    if points is None:
        try:
            detector = face_detector(detector_weights)
        except Exception as exc:  # the detector's weights are a named asset: say which photo needed them
            raise RuntimeError(f"--identity {path}: no --landmarks given, and face detection is not available: "
                               f"{exc}") from exc
    try:
        points = landmarks_for(image, points, detector, source=str(path))
    except NoFaceError as exc:
        raise RuntimeError(f"--identity: no face found in {path} ({photo.size[0]} x {photo.size[1]} pixels); pass "
                           "its landmarks with --landmarks (a .npy of 5 or 68 points, image pixels)") from exc
    encoder, _ = checkpoint_recognizer(recorded, recognizer, weights)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)[None]
    with torch.no_grad():
        return encoder(tensor, points[None].float())[0]


@torch.no_grad()
def sample_avatars(ckpt: str | Path, out: str | Path, n: int = 16, identity: torch.Tensor | None = None,
                   guidance_scale: float | None = None, scheduler: str | None = None, steps: int | None = None,
                   eta: float | None = None, seed: int = 0, ema: bool = True, device: str = "cpu",
                   formats: tuple[str, ...] = ("obj", "glb"), identity_source: str | None = None) -> dict[str, Any]:
    """Sample ``n`` avatars and write them (see the module docstring); returns the ``samples.json`` record."""
    from fitdiff.ldm.module import LatentDiffusionModule

    out = Path(out)
    if Path(ckpt).is_file():
        check_checkpoint_stage(ckpt, "diffusion", what="--ckpt")
    module = LatentDiffusionModule.load_checkpoint(ckpt, map_location=device)
    pipe = module.pipeline(ema=ema)
    sampler = _sampler(module, scheduler, steps, eta)
    scale = float(module.hparams.guidance_scale if guidance_scale is None else guidance_scale)
    generator = torch.Generator().manual_seed(seed)
    z = pipe.sample(n, sampler, identity=identity, guidance_scale=scale, generator=generator)
    face = pipe.decode(z)
    shape_model = module.shape_model()
    if shape_model is None:
        log.warning("the checkpoint names no shape model (model.shape_model): writing maps only, no meshes")
    written = []
    for i in range(n if shape_model is not None else 0):
        maps = {k: v[i].float().cpu() for k, v in face.maps.items()}
        vertices = shape_model(face.shape[i:i + 1].to(module.device))[0].cpu()
        paths = export_avatar(out, f"sample_{i:02d}", vertices, shape_model.faces.cpu(), shape_model.uvs.cpu(),
                              maps, uv_faces=shape_model.uv_faces.cpu(), formats=formats)
        written.append({k: str(v) for k, v in paths.items()})
    renders = render_previews(shape_model, face) if shape_model is not None else None
    save_png(out / "grid.png", avatar_grid(face.maps, renders))
    record = {
        "checkpoint": str(ckpt), "checkpoint_sha256": sha256_file(ckpt), "weights": "ema" if ema else "raw",
        "autoencoder_sha256": module.hparams.autoencoder_sha256, "n": n, "seed": seed,
        "sampler": sampler.describe(), "guidance_scale": scale if identity is not None else None,
        "identity": identity_source or ("unconditional" if identity is None else "given"),
        "shape": face.shape.cpu().tolist(), "files": written,
    }
    atomic_write_text(out / "samples.json", json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fitdiff.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="diffusion checkpoint (.ckpt)")
    parser.add_argument("--n", type=int, default=16, help="number of samples")
    parser.add_argument("--identity", help="identity: a (512,) .npy embedding or a photo; none = unconditional")
    parser.add_argument("--landmarks", help="the photo's landmarks (.npy, 5 or 68 points, pixels)")
    parser.add_argument("--recognizer", help="identity encoder name (default: the one the checkpoint records)")
    parser.add_argument("--recognizer-weights", help="its weights file (checked against the recorded sha256)")
    parser.add_argument("--detector-weights", help="face detector for a photo without --landmarks: RetinaFace "
                        "weights or DATASET/detector.safetensors (default: the retinaface_resnet50 asset)")
    parser.add_argument("--guidance-scale", type=float, help="CFG scale s (1 = conditional; default: the model's)")
    parser.add_argument("--scheduler", choices=SCHEDULERS, help="sampler (default: the checkpoint's configured one)")
    parser.add_argument("--steps", type=int, help="sampling steps")
    parser.add_argument("--eta", type=float, help="DDIM eta (0 = deterministic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", action="store_true", help="use the raw instead of the EMA weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="output folder (not with --render-dataset)")
    parser.add_argument("--render-dataset", metavar="OUT", help="render the avatars into a new face-shard dataset")
    parser.add_argument("--views", type=int, default=2, help="photos per avatar with --render-dataset")
    parser.add_argument("--image-res", type=int, default=128, help="photo side with --render-dataset, pixels")
    parser.add_argument("--identities", help="(N, 512) .npy: one avatar per embedding (--render-dataset)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.n < 1:
        parser.error("--n must be >= 1")
    if args.render_dataset:
        try:
            report = _render_dataset(args)
        except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{report.subjects} avatars x {report.views} views -> {report.out} ({report.counts})")
        return 0
    if not args.out:
        parser.error("give --out (or --render-dataset OUT)")
    try:
        if Path(args.ckpt).is_file():
            check_checkpoint_stage(args.ckpt, "diffusion", what="--ckpt")
        identity = None
        if args.identity:
            from fitdiff.ldm.module import LatentDiffusionModule

            recorded = None
            if Path(args.identity).suffix != ".npy":
                recorded = LatentDiffusionModule.load_checkpoint(args.ckpt).hparams.get("recognizer")
            identity = load_identity(args.identity, args.recognizer, args.recognizer_weights, args.landmarks,
                                     recorded, args.detector_weights)
        record = sample_avatars(args.ckpt, args.out, n=args.n, identity=identity,
                                guidance_scale=args.guidance_scale, scheduler=args.scheduler, steps=args.steps,
                                eta=args.eta, seed=args.seed, ema=not args.raw, device=args.device,
                                identity_source=args.identity)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{record['n']} avatars in {args.out} (grid.png, samples.json)")
    return 0


def _render_dataset(args: argparse.Namespace) -> Any:
    from fitdiff.augment import render_dataset
    from fitdiff.ldm.module import LatentDiffusionModule

    identities = None
    if args.identities:
        if not Path(args.identities).is_file():
            raise FileNotFoundError(f"--identities: no file at {args.identities}")
        values = np.load(args.identities, allow_pickle=False).astype(np.float32)
        if values.ndim != 2 or values.shape[1] != 512 or not np.isfinite(values).all():
            raise ValueError(f"--identities {args.identities}: expected (N, 512) finite embeddings, got {values.shape}")
        identities = torch.nn.functional.normalize(torch.from_numpy(values), dim=1)
        args.n = len(identities)
    if Path(args.ckpt).is_file():
        check_checkpoint_stage(args.ckpt, "diffusion", what="--ckpt")
    module = LatentDiffusionModule.load_checkpoint(args.ckpt, map_location=args.device)
    shape_model = module.shape_model()
    if shape_model is None:
        raise ValueError(f"{args.ckpt}: the checkpoint names no shape model; avatars cannot be rendered")
    recorded = module.hparams.get("recognizer")
    try:
        encoder, name = checkpoint_recognizer(recorded, args.recognizer, args.recognizer_weights)
    except KeyError as exc:
        raise ValueError(f"{exc.args[0]} (the checkpoint records {recorded!r}; pass --recognizer)") from None
    # the id of the encoder actually used, in the dataset's form (name@sha256:<weights>)
    recognizer_id = f"{name}@sha256:{sha256_file(args.recognizer_weights)}" if args.recognizer_weights else name
    scale = float(module.hparams.guidance_scale if args.guidance_scale is None else args.guidance_scale)
    from rich.progress import Progress

    with Progress() as bar:
        task = bar.add_task("rendering avatars", total=args.n)
        return render_dataset(module.pipeline(ema=not args.raw), shape_model, encoder, recognizer_id,
                              args.render_dataset, args.n, args.views, identities=identities, guidance_scale=scale,
                              sampler=_sampler(module, args.scheduler, args.steps, args.eta), image_size=args.image_res,
                              seed=args.seed, progress=lambda done, total: bar.update(task, completed=done))


if __name__ == "__main__":
    sys.exit(main())
