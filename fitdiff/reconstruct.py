"""Reconstruct a relightable avatar from one photo (guided FitDiff, or a baseline preset).

    python -m fitdiff.reconstruct --ckpt RUN/checkpoints/last.ckpt --image face.png --landmarks face.npy \
        --recognizer-weights data/synthetic/recognizer.safetensors --out recon/
    python -m fitdiff.reconstruct --ckpt CKPT --image crop.png --aligned --preset guided_eps --out recon/
    python -m fitdiff.reconstruct --ckpt CKPT --image photos/ --out recon/      # batch: one folder per photo

Landmarks: ``--landmarks`` is a ``.npy`` of 68 points (the shape model's 68-point set) or 5 (ArcFace
order), image pixels; for a folder of photos, a folder holding ``<photo stem>.npy`` per photo (or
``<photo stem>.npy`` files next to the photos). ``--aligned`` takes the photo for a crop aligned to the
ArcFace template. Otherwise faces are detected (the ``retinaface_resnet50`` asset); with several faces
the largest is used and a warning says so.

Written into ``--out`` (batch mode: ``--out/<photo stem>/``), all at once when the fit is done:
``avatar.obj`` + ``avatar.mtl`` + ``avatar_{diffuse,specular,normals}.png`` (the UV maps), ``avatar.glb``,
``render.png`` (the fit over the photo), ``relit_{left,right,top}.png``, ``side_by_side.png`` (photo,
fit, relit) and ``fit.json`` (preset, checkpoint sha256, seed, per-step losses, identity similarity,
camera and lights, seconds). Batch mode adds ``summary.csv``.

Photos: a file of more than 40 M pixels is refused before it is decoded (a decompression bomb never
reaches memory); one whose longest side exceeds 2048 pixels is downscaled to it on load
(:mod:`fitdiff.face.photo`). ``--landmarks`` files hold pixels of the file's image and are scaled by the
same factor. Every output that refers to photo pixels (``render.png``, the relit and side-by-side
images, the camera in ``fit.json``) refers to the photo as fitted: ``fit.json`` records ``photo_size``
(the file's width and height) and ``fit_size`` (the fitted ones).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fitdiff.io import atomic_write_text, sha256_file

if TYPE_CHECKING:
    from fitdiff.face.photo import Photo

__all__ = ["PhotoFit", "ReconstructionError", "ReconstructionSession", "fit_photo", "load_photo", "photo_landmarks",
           "reconstruct_photo", "write_outputs", "main"]

log = logging.getLogger("fitdiff.reconstruct")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ReconstructionError(RuntimeError):
    """A photo, landmarks file, checkpoint or weights file that cannot be used (the message names it)."""


def load_photo(path: Path) -> Photo:
    """A photo as RGB (:func:`fitdiff.face.photo.read_photo`): a clear error for missing, empty, unreadable
    or too large files (refused from the header, before decoding); downscaled to a longest side of
    :data:`~fitdiff.face.photo.MAX_PHOTO_SIDE` pixels."""
    from fitdiff.face.photo import PhotoError, read_photo

    try:
        photo = read_photo(path, what="--image")
    except PhotoError as exc:
        raise ReconstructionError(str(exc)) from None
    if photo.downscaled:
        log.info("%s: %d x %d pixels, fitted at %d x %d (landmark files are scaled alike)", path,
                 *photo.file_size, *photo.size)
    return photo


def _landmarks_file(path: Path, photo: Path) -> np.ndarray:
    try:
        points = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ReconstructionError(f"--landmarks {path} (for {photo.name}): not a readable .npy ({exc})") from exc
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] not in (5, 68) or not np.isfinite(points).all():
        raise ReconstructionError(f"--landmarks {path} (for {photo.name}): expected (68, 2) or (5, 2) finite pixel "
                                  f"coordinates, got shape {points.shape}")
    return points


def photo_landmarks(image: np.ndarray, photo: Path, landmarks: Path | None, aligned: bool, *,
                    scale: tuple[float, float] = (1.0, 1.0), detector_weights: str | Path | None = None
                    ) -> np.ndarray:
    """(68 or 5, 2) pixel landmarks of a photo: a file, the ArcFace template (aligned crop) or detection.

    ``image`` is the photo as loaded; a landmarks file holds pixels of the file's image, multiplied by
    ``scale`` (:attr:`fitdiff.face.photo.Photo.scale`, for a photo downscaled on load). Detection uses
    :func:`fitdiff.face.detectors.face_detector` of ``detector_weights`` (default: the RetinaFace asset).
    """
    from fitdiff.face.detection import NoFaceError, landmarks_for

    if landmarks is not None:
        return (_landmarks_file(landmarks, photo) * np.asarray(scale, dtype=np.float32)).astype(np.float32)
    if aligned:
        try:
            return landmarks_for(image, aligned=True, source=str(photo)).numpy()
        except ValueError as exc:
            raise ReconstructionError(str(exc)) from exc
    from fitdiff.face.detectors import face_detector

    try:
        detector = face_detector(detector_weights)
    except Exception as exc:  # the detector's weights are a named asset
        raise ReconstructionError(f"{photo}: no --landmarks and no --aligned given, and face detection is not "
                                  f"available: {exc}") from exc
    try:
        faces = detector.detect(image)
    except NoFaceError as exc:
        raise ReconstructionError(str(exc)) from exc
    if not faces:
        raise ReconstructionError(f"no face found in {photo}; pass --landmarks (68 or 5 points) or --aligned")
    if len(faces) > 1:
        areas = [float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) for f in faces]
        best = int(np.argmax(areas))
        log.warning("%s: %d faces found; reconstructing the largest (box %s)", photo, len(faces),
                    [round(float(v)) for v in faces[best].box])
        return faces[best].landmarks.numpy()
    return faces[0].landmarks.numpy()


def _png(image: torch.Tensor) -> bytes:
    from PIL import Image

    array = (image.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_outputs(folder: Path, result: Any, scene: Any, photo: torch.Tensor, record: dict[str, Any]) -> None:
    """Every output file of one photo into ``folder`` (a fresh temporary folder)."""
    from fitdiff.export import export_avatar
    from fitdiff.fitting.relight import novel_lights, render_face

    model = scene.model
    maps = {k: v[0].float().cpu() for k, v in result.face.maps.items()}
    vertices = model(result.face.shape[:1])[0].detach().cpu()
    export_avatar(folder, "avatar", vertices, model.faces.cpu(), model.uvs.cpu(), maps,
                  uv_faces=model.uv_faces.cpu(), normal_space=scene.normal_space)
    background = photo[None].to(result.target.photo)
    fitted = render_face(scene, result.face, result.params, background).image[0]
    (folder / "render.png").write_bytes(_png(fitted))
    tiles = [photo, fitted.cpu()]
    for name, lights in novel_lights(result.params).items():
        relit = render_face(scene, result.face, result.params, background, lights).image[0]
        (folder / f"relit_{name}.png").write_bytes(_png(relit))
        tiles.append(relit.cpu())
    (folder / "side_by_side.png").write_bytes(_png(torch.cat([t.cpu() for t in tiles], dim=-1)))
    (folder / "fit.json").write_text(json.dumps(record, indent=2) + "\n")


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished temporary folder to ``out`` (replacing an earlier result there)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)


class ReconstructionSession:
    """Checkpoint, scene, recognizer and reconstructor, loaded once for every photo of a run.

    Args:
        ckpt: diffusion checkpoint; preset / overrides: the fitting preset and Hydra overrides of it.
        recognizer / recognizer_weights: identity encoder (default: the one the checkpoint records).
        device: torch device; ema: use the EMA weights.
        detector_weights: face detector for photos without landmarks (:func:`fitdiff.face.detectors.face_detector`).
    """

    def __init__(self, ckpt: Path, preset: str, overrides: list[str], recognizer: str | None,
                 recognizer_weights: str | None, device: str, ema: bool,
                 detector_weights: str | Path | None = None) -> None:
        from fitdiff.config.checkpoint_kind import check_checkpoint_stage
        from fitdiff.face.identity import build_identity_encoder
        from fitdiff.face.scene import FaceScene
        from fitdiff.face.synthetic_recognizer import SyntheticRecognizer  # noqa: F401  (registers it)
        from fitdiff.fitting import Reconstructor, load_preset
        from fitdiff.ldm.module import LatentDiffusionModule
        from fitdiff.sample import _check_recognizer

        if not ckpt.is_file():
            raise ReconstructionError(f"--ckpt: no checkpoint at {ckpt} (train one: python train.py "
                                      "experiment=quickstart_ldm, or make quickstart)")
        check_checkpoint_stage(ckpt, "diffusion", what="--ckpt")
        self.config = load_preset(preset, overrides)
        module = LatentDiffusionModule.load_checkpoint(ckpt, map_location=device)
        shape_model = module.shape_model()
        if shape_model is None:
            raise ReconstructionError(f"{ckpt}: the checkpoint names no shape model (model.shape_model)")
        recorded = module.hparams.get("recognizer")
        name = recognizer or (recorded.split("@", 1)[0] if recorded else "arcface_ir_se50")
        kwargs: dict[str, Any] = {}
        if recognizer_weights is not None:
            weights = Path(recognizer_weights)
            if not weights.is_file():
                raise ReconstructionError(f"--recognizer-weights: no file at {weights}")
            _check_recognizer(recorded, weights)
            kwargs["weights"] = str(weights)
        try:
            encoder = build_identity_encoder(name, **kwargs).to(device)
        except Exception as exc:
            raise ReconstructionError(f"identity encoder {name!r} (recorded by {ckpt.name}: {recorded}) could not "
                                      f"be loaded: {exc}") from exc
        # the normal maps of the embedded dataset (and of the pipeline's training data) are tangent-space
        self.scene = FaceScene(shape_model.to(device), normal_space="tangent")
        self.pipeline = module.pipeline(ema=ema)
        self.reconstructor = Reconstructor(self.pipeline, self.scene, encoder, self.config)
        self.ckpt, self.ckpt_sha256 = ckpt, sha256_file(ckpt)
        self.recognizer = recorded or name
        self.device = device
        self.detector_weights = detector_weights

    def with_preset(self, preset: str, overrides: list[str] | None = None) -> ReconstructionSession:
        """The same checkpoint, scene and recognizer with another preset (nothing is loaded again)."""
        from fitdiff.fitting import Reconstructor, load_preset

        other = object.__new__(ReconstructionSession)
        other.__dict__.update(self.__dict__)
        other.config = load_preset(preset, overrides or [])
        other.reconstructor = Reconstructor(self.pipeline, self.scene, self.reconstructor.recognizer, other.config)
        return other


@dataclass
class PhotoFit:
    """One fitted photo: the fit, the photo (3, H, W) in [0, 1] as fitted, and its ``fit.json`` record."""

    result: Any
    photo: torch.Tensor
    record: dict[str, Any]


def fit_photo(session: ReconstructionSession, photo_path: Path, landmarks: Path | None = None,
              aligned: bool = False, seed: int = 0) -> PhotoFit:
    """Load and fit one photo (nothing is written)."""
    loaded = load_photo(photo_path)
    image = loaded.pixels
    points = photo_landmarks(image, photo_path, landmarks, aligned, scale=loaded.scale,
                             detector_weights=session.detector_weights)
    photo = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255.0)
    generator = torch.Generator().manual_seed(seed)
    result = session.reconstructor(photo[None], torch.from_numpy(points)[None], generator=[generator])
    with torch.no_grad():
        _, terms = session.reconstructor.loss(result.face.maps, result.face.shape, result.params, result.target)
    record = {
        "photo": str(photo_path), "landmarks": str(landmarks) if landmarks else ("aligned" if aligned else "detected"),
        "photo_size": list(loaded.file_size), "fit_size": list(loaded.size),
        "checkpoint": str(session.ckpt), "checkpoint_sha256": session.ckpt_sha256, "seed": seed,
        "preset": session.config.describe(), "recognizer": session.recognizer,
        "identity_similarity": 1.0 - float(terms["identity"][0]) if "identity" in terms else None,
        "final_losses": {k: float(v[0]) for k, v in terms.items()},
        "seconds": result.seconds, "steps": result.history,
        "shape": result.face.shape[0].tolist(), **result.params.describe()[0],
    }
    return PhotoFit(result, photo, record)


def write_outputs(session: ReconstructionSession, fit: PhotoFit, out: Path) -> None:
    """Every output file of a fit into ``out``, all at once (a temporary folder renamed when complete)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_outputs(tmp, fit.result, session.scene, fit.photo, fit.record)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def reconstruct_photo(session: ReconstructionSession, photo_path: Path, out: Path, landmarks: Path | None = None,
                      aligned: bool = False, seed: int = 0) -> dict[str, Any]:
    """Fit one photo and write its outputs into ``out`` (atomically); returns the ``fit.json`` record."""
    fit = fit_photo(session, photo_path, landmarks, aligned, seed)
    write_outputs(session, fit, out)
    return fit.record


def _photos(image: Path) -> list[Path]:
    if image.is_dir():
        photos = sorted(p for p in image.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            raise ReconstructionError(f"--image {image}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return photos
    return [image]


def _landmarks_for(photo: Path, landmarks: Path | None, batch: bool) -> Path | None:
    if not batch:
        return landmarks
    for folder in ([landmarks] if landmarks is not None else []) + [photo.parent]:
        candidate = folder / f"{photo.stem}.npy"
        if candidate.is_file():
            return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    from fitdiff.fitting import available_presets

    parser = argparse.ArgumentParser(prog="python -m fitdiff.reconstruct", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="diffusion checkpoint (.ckpt)")
    parser.add_argument("--image", required=True, help="a photo, or a folder of photos (batch mode)")
    parser.add_argument("--landmarks", help="landmarks .npy (68 or 5 points, pixels); batch: a folder of <stem>.npy")
    parser.add_argument("--aligned", action="store_true", help="the photo is a crop aligned to the ArcFace template")
    parser.add_argument("--preset", default="guided_x0", help=f"fitting preset ({', '.join(available_presets())})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset value, e.g. --set guidance.scale=0.2 (repeatable)")
    parser.add_argument("--recognizer", help="identity encoder name (default: the one the checkpoint records)")
    parser.add_argument("--recognizer-weights", help="its weights file (checked against the recorded sha256)")
    parser.add_argument("--detector-weights", help="face detector for photos without landmarks: RetinaFace weights "
                        "or DATASET/detector.safetensors (default: the retinaface_resnet50 asset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", action="store_true", help="use the raw instead of the EMA weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out, image = Path(args.out), Path(args.image)
    try:
        photos = _photos(image)
        batch = image.is_dir()
        if batch and args.landmarks and not Path(args.landmarks).is_dir():
            raise ReconstructionError(f"--landmarks {args.landmarks}: with a folder of photos, give a folder of "
                                      "<photo stem>.npy files")
        session = ReconstructionSession(Path(args.ckpt), args.preset, args.set, args.recognizer,
                                        args.recognizer_weights, args.device, not args.raw, args.detector_weights)
        from rich.progress import track

        rows = []
        for photo in track(photos, description=f"reconstructing ({args.preset})", disable=len(photos) == 1):
            target = out / photo.stem if batch else out
            record = reconstruct_photo(session, photo, target, _landmarks_for(photo, Path(args.landmarks)
                                       if args.landmarks else None, batch), args.aligned, args.seed)
            rows.append({"photo": photo.name, "folder": str(target), "identity_similarity":
                         record["identity_similarity"], "seconds": round(record["seconds"], 3),
                         **{f"loss_{k}": v for k, v in record["final_losses"].items()}})
            print(f"{photo.name}: identity similarity {record['identity_similarity']:.3f}, "
                  f"{record['seconds']:.1f} s -> {target}")
        if batch:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(out / "summary.csv", buffer.getvalue())
    except (ReconstructionError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
