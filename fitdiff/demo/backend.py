"""What the demo page does, without the page: reconstruct or sample an avatar, relight it, package files.

:class:`DemoBackend` loads the diffusion checkpoint once (on first use, so the page opens even without
one and says how to make it), keeps one :class:`~fitdiff.reconstruct.ReconstructionSession` per preset
and CFG scale, and writes every result into its own folder of the work directory:

- ``avatar.glb`` (the 3D viewer's model), ``avatar_obj.zip`` (OBJ + MTL + the three UV maps);
- ``render.png`` (the fit over the photo), ``maps.png`` (diffuse | specular | normals UV maps),
  ``fit.json`` (checkpoint sha256, preset, seed, losses, camera and lights), and the relit renders.

Relighting re-renders a kept avatar with the project's renderer under one directional light set in the
camera frame (:func:`fitdiff.fitting.relight.view_light`); nothing is sampled again. Every user-facing
failure is a :class:`DemoError` whose message says what to do.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fitdiff.export.grid import save_png

log = logging.getLogger("fitdiff.demo")

__all__ = ["DemoAvatar", "DemoBackend", "DemoCancelled", "DemoError", "DemoResult", "DemoSettings", "PRESETS"]

#: the page's preset choices -> fitting presets (experiments/fitting/)
PRESETS: dict[str, str] = {"fast (unguided)": "unguided", "guided": "guided_x0"}

Progress = Callable[[float, str], None]


class DemoError(RuntimeError):
    """A request the demo cannot serve; the message is shown in the page as it is."""


class DemoCancelled(DemoError):
    """The user cancelled the request."""


@dataclass
class DemoSettings:
    """Where the demo's inputs are.

    Attributes:
        ckpt: diffusion checkpoint; data_dir: the embedded dataset (held-out example photos, the
            recognizer's and detector's weights); work_dir: where results are written.
        recognizer_weights / detector_weights: default ``DATA/recognizer.safetensors`` /
            ``DATA/detector.safetensors`` when present; recognizer: the identity encoder's name (default:
            the one the checkpoint records).
        device: torch device; examples: how many held-out photos to offer; keep: results kept for relighting.
    """

    ckpt: Path
    data_dir: Path
    work_dir: Path
    recognizer_weights: Path | None = None
    detector_weights: Path | None = None
    recognizer: str | None = None
    device: str = "cpu"
    examples: int = 8
    keep: int = 32

    def __post_init__(self) -> None:
        self.ckpt, self.data_dir, self.work_dir = Path(self.ckpt), Path(self.data_dir), Path(self.work_dir)
        if self.recognizer_weights is None and (self.data_dir / "recognizer.safetensors").is_file():
            self.recognizer_weights = self.data_dir / "recognizer.safetensors"
        if self.detector_weights is None and (self.data_dir / "detector.safetensors").is_file():
            self.detector_weights = self.data_dir / "detector.safetensors"


@dataclass
class DemoAvatar:
    """An avatar kept for relighting: decoded face, camera, exposure and the photo (or plain) background."""

    face: Any
    camera: Any
    exposure: torch.Tensor
    background: torch.Tensor  # (1, 3, H, W) in [0, 1]
    folder: Path


@dataclass
class DemoResult:
    """The files and numbers of one request (paths inside the work directory)."""

    key: str
    folder: Path
    glb: Path
    obj_zip: Path
    render: Path
    maps: Path
    relit: Path
    summary: str
    record: dict[str, Any] = field(default_factory=dict)


def checkpoint_help(ckpt: Path) -> str:
    return (f"No diffusion checkpoint at `{ckpt}`. Make one with `make quickstart` (the whole pipeline on the "
            "embedded dataset, CPU) or `python train.py experiment=quickstart_ldm`, then restart the demo, or "
            "start it with `--ckpt PATH`.")


def _maps_strip(folder: Path, name: str = "avatar") -> Path:
    """``maps.png``: the exported diffuse, specular and normal UV maps side by side."""
    from PIL import Image

    tiles = [Image.open(folder / f"{name}_{m}.png").convert("RGB") for m in ("diffuse", "specular", "normals")]
    strip = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)))
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width
    strip.save(folder / "maps.png")
    return folder / "maps.png"


def _obj_zip(folder: Path, name: str = "avatar") -> Path:
    """``avatar_obj.zip``: the OBJ, its MTL and the UV maps it references."""
    members = [folder / f"{name}.obj", folder / f"{name}.mtl"] + [folder / f"{name}_{m}.png" for m in
                                                                   ("diffuse", "specular", "normals")]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in members:
            if member.is_file():
                archive.write(member, member.name)
    target = folder / f"{name}_obj.zip"
    target.write_bytes(buffer.getvalue())
    return target


class DemoBackend:
    """Serves the demo's requests (see the module docstring)."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        self._sessions: dict[tuple[str, float], Any] = {}
        self._base: Any = None
        self._load_lock = threading.Lock()
        self._avatars: OrderedDict[str, DemoAvatar] = OrderedDict()
        self._cancelled: set[str] = set()

    # ---------------------------------------------------------------- state
    def status(self) -> str:
        """One line for the top of the page: which checkpoint and detector are in use, or what is missing."""
        s = self.settings
        if not s.ckpt.is_file():
            return checkpoint_help(s.ckpt)
        detector = f"face detector `{s.detector_weights}`" if s.detector_weights else \
            "no face detector (give landmarks with each photo, or run `python data_prep/train_detector.py --data DATA`)"
        return f"Checkpoint `{s.ckpt}` on {s.device}; {detector}."

    def cancel(self, client: str) -> None:
        """Ask the running request of ``client`` (a page session) to stop at its next sampler step."""
        self._cancelled.add(client)

    def _session(self, preset: str, cfg_scale: float) -> Any:
        from fitdiff.config.errors import ConfigError
        from fitdiff.reconstruct import ReconstructionError, ReconstructionSession

        s = self.settings
        key = (preset, round(float(cfg_scale), 4))
        with self._load_lock:
            if key in self._sessions:
                return self._sessions[key]
            if not s.ckpt.is_file():
                raise DemoError(checkpoint_help(s.ckpt))
            overrides = [f"guidance_scale={float(cfg_scale)}"]
            try:
                if self._base is None:
                    self._base = ReconstructionSession(
                        s.ckpt, preset, overrides, s.recognizer, str(s.recognizer_weights) if s.recognizer_weights else None,
                        s.device, True, s.detector_weights)
                    session = self._base
                else:
                    session = self._base.with_preset(preset, overrides)
            except (ReconstructionError, ConfigError, ValueError, FileNotFoundError, RuntimeError) as exc:
                raise DemoError(f"The checkpoint cannot be used: {exc}") from exc
            self._sessions[key] = session
            return session

    def _keep(self, avatar: DemoAvatar) -> str:
        key = uuid.uuid4().hex[:12]
        self._avatars[key] = avatar
        while len(self._avatars) > self.settings.keep:
            self._avatars.popitem(last=False)
        return key

    def _folder(self) -> Path:
        folder = self.settings.work_dir / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        return folder

    @staticmethod
    def _stepper(sampler: Any, client: str | None, cancelled: set[str], progress: Progress | None,
                 label: str) -> None:
        def on_step(done: int, total: int) -> None:
            if client is not None and client in cancelled:
                raise DemoCancelled("Cancelled.")
            if progress is not None:
                progress(done / total, f"{label}: step {done}/{total}")

        sampler.on_step = on_step

    # ---------------------------------------------------------------- requests
    def reconstruct(self, photo: str | Path | None, landmarks: str | Path | None = None, preset: str = "unguided",
                    seed: int = 0, cfg_scale: float = 1.0, client: str | None = None,
                    progress: Progress | None = None) -> DemoResult:
        """Fit one photo (optionally with its landmarks .npy) and write its files."""
        from fitdiff.reconstruct import ReconstructionError, fit_photo, write_outputs

        if photo is None:
            raise DemoError("Upload a photo or pick one of the held-out photos first.")
        if client is not None:
            self._cancelled.discard(client)
        if progress is not None:
            progress(0.0, "loading the checkpoint")
        session = self._session(preset, cfg_scale)
        sampler = session.config.sampler
        if sampler is not None:
            self._stepper(sampler, client, self._cancelled, progress, f"sampling ({preset})")
        try:
            if progress is not None:
                progress(0.0, "finding the face")
            fit = fit_photo(session, Path(photo), Path(landmarks) if landmarks else None, seed=int(seed))
        except ReconstructionError as exc:
            raise DemoError(_for_the_page(str(exc), Path(photo), landmarks)) from None
        finally:
            if sampler is not None:
                sampler.on_step = None
        folder = self._folder()
        write_outputs(session, fit, folder / "avatar")
        folder = folder / "avatar"
        camera = fit.result.params.camera()
        avatar = DemoAvatar(face=fit.result.face, camera=camera, exposure=fit.result.params.lights().exposure.detach(),
                            background=fit.photo[None].to(fit.result.target.photo), folder=folder)
        key = self._keep(avatar)
        sim = fit.record.get("identity_similarity")
        summary = (f"Identity similarity {sim:.3f} (cosine between the photo's and the render's embeddings, "
                   f"{session.recognizer.split('@')[0]}); " if sim is not None else "") + \
            f"preset {preset}, CFG {cfg_scale:g}, seed {int(seed)}, {fit.record['seconds']:.1f} s."
        relit = self.relight(key, *self.default_light())
        return DemoResult(key, folder, folder / "avatar.glb", _obj_zip(folder), folder / "render.png",
                          _maps_strip(folder), relit, summary, fit.record)

    def sample(self, seed: int = 0, client: str | None = None, progress: Progress | None = None) -> DemoResult:
        """One unconditional avatar (the learned null embedding), shown under the preview camera."""
        from fitdiff.export import export_avatar
        from fitdiff.face.preview import preview_scene
        from fitdiff.io import sha256_file

        if client is not None:
            self._cancelled.discard(client)
        session = self._session("unguided", 1.0)
        sampler = session.config.sampler
        self._stepper(sampler, client, self._cancelled, progress, "sampling (unconditional)")
        try:
            with torch.no_grad():
                z = session.pipeline.sample(1, sampler, identity=None, generator=torch.Generator().manual_seed(int(seed)))
                face = session.pipeline.decode(z, quantize=True)
        finally:
            sampler.on_step = None
        folder = self._folder() / "avatar"
        folder.mkdir()
        model = session.scene.model
        vertices = model(face.shape[:1])[0].detach().cpu()
        maps = {k: v[0].float().cpu() for k, v in face.maps.items()}
        export_avatar(folder, "avatar", vertices, model.faces.cpu(), model.uvs.cpu(), maps,
                      uv_faces=model.uv_faces.cpu(), normal_space=session.scene.normal_space)
        camera, lights = preview_scene(1, 256, device=face.shape.device)
        background = torch.ones(1, 3, 256, 256, device=face.shape.device)
        render = session.scene(face.shape, face.maps["diffuse"], face.maps["specular"], face.maps["normals"], camera,
                               lights, background=background).image[0]
        save_png(folder / "render.png", render)
        record = {"mode": "unconditional", "checkpoint": str(self.settings.ckpt),
                  "checkpoint_sha256": sha256_file(self.settings.ckpt), "seed": int(seed),
                  "sampler": sampler.describe(), "shape": face.shape[0].tolist()}
        (folder / "fit.json").write_text(json.dumps(record, indent=2) + "\n")
        key = self._keep(DemoAvatar(face=face, camera=camera, exposure=lights.exposure, background=background,
                                    folder=folder))
        relit = self.relight(key, *self.default_light())
        return DemoResult(key, folder, folder / "avatar.glb", _obj_zip(folder), folder / "render.png",
                          _maps_strip(folder), relit, f"Unconditional sample, seed {int(seed)}.", record)

    @staticmethod
    def default_light() -> tuple[float, float, str, float]:
        """Azimuth and elevation (degrees), colour and intensity the light sliders start at."""
        return -40.0, 25.0, "#ffffff", 0.9

    def relight(self, key: str | None, azimuth: float, elevation: float, color: str = "#ffffff",
                intensity: float = 0.9) -> Path:
        """Render avatar ``key`` under one light (camera frame, degrees; colour ``#rrggbb`` or ``rgb(a)``);
        returns the PNG written into the avatar's folder."""
        from fitdiff.fitting.relight import light_direction, view_light

        avatar = self._avatars.get(key or "")
        if avatar is None:
            raise DemoError("Nothing to relight yet: reconstruct a photo or sample an avatar first.")
        rgb = parse_color(color)
        lights = view_light(avatar.camera, light_direction(float(azimuth), float(elevation)), color=rgb,
                            intensity=float(intensity), exposure=avatar.exposure)
        scene = self._base.scene
        face = avatar.face
        with torch.no_grad():
            image = scene(face.shape, face.maps["diffuse"], face.maps["specular"], face.maps["normals"], avatar.camera,
                          lights, background=avatar.background).image[0]
        name = f"relit_{float(azimuth):+.0f}_{float(elevation):+.0f}_{color.strip('#')}_{float(intensity):.2f}"
        path = avatar.folder / f"{''.join(c if c.isalnum() or c in '+-_.' else '_' for c in name)}.png"
        return save_png(path, image)

    # ---------------------------------------------------------------- examples
    def examples(self) -> list[tuple[Path, Path]]:
        """(photo, landmarks .npy) of the first held-out (test split) photos, one per subject, written once
        into ``WORK/examples/``; empty when the dataset is not there."""
        from fitdiff.evaluation.faces import load_faces, select_photos

        out = self.settings.work_dir / "examples"
        if (out / "index.json").is_file():
            return [(out / p, out / q) for p, q in json.loads((out / "index.json").read_text())]
        if not (self.settings.data_dir / "manifest.json").is_file():
            return []
        from PIL import Image

        try:
            faces = load_faces(self.settings.data_dir, ["test"])
        except Exception as exc:  # the demo still works with uploads
            log.warning("no example photos: %s", exc)
            return []
        out.mkdir(parents=True, exist_ok=True)
        index = []
        for i in select_photos(faces.first_per_subject(), self.settings.examples):
            face = faces.first_per_subject().subset([i])
            stem = face.keys[0].replace("/", "_")
            array = (face.image[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(array).save(out / f"{stem}.png")
            np.save(out / f"{stem}.npy", face.landmarks[0].numpy().astype(np.float32))
            index.append((f"{stem}.png", f"{stem}.npy"))
        (out / "index.json").write_text(json.dumps(index))
        return [(out / p, out / q) for p, q in index]


def _for_the_page(message: str, photo: Path, landmarks: str | Path | None) -> str:
    """A reconstruction error as the page says it: file names without the upload folder, and what to
    upload instead of which option to pass."""
    message = message.replace(str(photo), photo.name)
    if landmarks:
        message = message.replace(str(landmarks), Path(landmarks).name)
    message = message.replace("pass --landmarks (68 or 5 points) or --aligned",
                              "upload its landmarks (.npy, 68 or 5 points) or another photo")
    return message.replace("no --landmarks and no --aligned given", "no landmarks uploaded")


def parse_color(color: str) -> tuple[float, float, float]:
    """``#rrggbb``, ``#rgb`` or ``rgb(r, g, b)`` / ``rgba(...)`` (0-255) -> linear-ish RGB in [0, 1]."""
    text = (color or "#ffffff").strip().lower()
    try:
        if text.startswith("#"):
            digits = text[1:]
            if len(digits) == 3:
                digits = "".join(c * 2 for c in digits)
            return tuple(int(digits[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
        if text.startswith("rgb"):
            values = [float(v) for v in text[text.index("(") + 1:text.index(")")].split(",")[:3]]
            return tuple(min(max(v / 255.0, 0.0), 1.0) for v in values)  # type: ignore[return-value]
    except (ValueError, IndexError):
        pass
    raise DemoError(f"Light colour {color!r} is not #rrggbb or rgb(r, g, b).")
