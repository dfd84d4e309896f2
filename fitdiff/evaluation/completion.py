"""The completion table: partial reflectance maps filled by the diffusion model against two baselines.

``python evaluate.py table=completion ckpts=[CKPT]`` (``experiments/table/completion.yaml``) takes the
ground-truth maps of held-out subjects (one sample per subject), hides a share of the face region with
each mask kind (:mod:`fitdiff.completion.masks`: ``left_half``, ``blobs``; 30, 50 and 70 % by default;
``photo``: what the sample's own photo does not show, by :func:`fitdiff.fitting.unwrap.unwrap_photo` with
the photo's camera from its ``meta.json``, one share per photo) in all three maps at once, and fills the
hidden texels with

- ``completion``: :func:`fitdiff.completion.complete_maps`, conditioned on the sample's identity
  embedding (``identity: stored``) or unconditional (``identity: none``);
- ``mean fill``: the mean face's reflectance (the decoded zero latent);
- ``OpenCV inpainting``: ``cv2.inpaint`` (Telea) of each 8-bit map, normals renormalised.

Scored on the hidden face texels only: PSNR of the diffuse and specular albedo, mean angular error of
the normals (degrees) and LPIPS of the diffuse map (the whole map, whose known part all methods share;
a random VGG without the ``lpips_vgg16`` asset, said in the header). The ``completion`` rows also report
the RMS change of the known diffuse texels against the ground truth (``known_rmse``), beside the
autoencoder's own reconstruction RMS there (``ae_known_rmse``): the known part is kept within the
autoencoder's error when the first is at most the second. A reference row, ``autoencoder
(reference)``, scores the autoencoder's reconstruction of the whole ground truth on the same texels:
the error floor of anything decoded from the latent space. Writes ``completion.{csv,md}``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fitdiff.evaluation.reconstruction import ReconstructionResult
from fitdiff.evaluation.table import Column, ResultTable, RowAccumulator

__all__ = ["CompletionTable", "COLUMNS", "opencv_inpaint"]

log = logging.getLogger(__name__)

COLUMNS: tuple[Column, ...] = (
    Column("diffuse_psnr", "diffuse PSNR (dB)", "{:.2f}"),
    Column("specular_psnr", "specular PSNR (dB)", "{:.2f}"),
    Column("normals_angle_deg", "normals (deg)", "{:.2f}"),
    Column("diffuse_lpips", "diffuse LPIPS", "{:.3f}"),
    Column("known_rmse", "known diffuse RMS", "{:.4f}"),
    Column("ae_known_rmse", "autoencoder RMS there", "{:.4f}"),
)


def opencv_inpaint(maps: dict[str, torch.Tensor], known: torch.Tensor, radius: int = 3) -> dict[str, torch.Tensor]:
    """OpenCV's Telea inpainting of every (B, C, R, R) map where ``known`` (B, R, R) is False."""
    import cv2

    out = {}
    for name, batch in maps.items():
        filled = []
        for i in range(batch.shape[0]):
            x = batch[i].float().cpu()
            encoded = (x + 1) / 2 if name == "normals" else x.clamp(0, 1)
            image = (encoded.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            hole = (~known[i].cpu().numpy()).astype(np.uint8) * 255
            result = cv2.inpaint(np.ascontiguousarray(image), hole, radius, cv2.INPAINT_TELEA)
            result = torch.from_numpy(result.reshape(image.shape)).permute(2, 0, 1).float() / 255.0
            # known texels keep their exact values; only the hole comes from OpenCV
            result = torch.where(known[i].cpu()[None], encoded, result)
            filled.append(F.normalize(result * 2 - 1, dim=0) if name == "normals" else result)
        out[name] = torch.stack(filled)
    return out


def _region_scores(pred: dict[str, torch.Tensor], truth: dict[str, torch.Tensor], region: torch.Tensor,
                   lpips: Any) -> dict[str, torch.Tensor]:
    r = region[:, None].float()
    out = {}
    for name in ("diffuse", "specular"):
        err = ((pred[name].cpu().clamp(0, 1) - truth[name]) ** 2 * r).sum((1, 2, 3)) / (
            r.sum((1, 2, 3)) * truth[name].shape[1]).clamp(min=1)
        out[f"{name}_psnr"] = (10 * torch.log10(1.0 / err.clamp(min=1e-12))).double()
    cos = (F.normalize(pred["normals"].cpu(), dim=1) * truth["normals"]).sum(1).clamp(-1, 1)
    angle = torch.rad2deg(torch.acos(cos))
    out["normals_angle_deg"] = ((angle * region).sum((1, 2)) / region.sum((1, 2)).clamp(min=1)).double()
    if lpips is not None:
        out["diffuse_lpips"] = lpips(pred["diffuse"].cpu().clamp(0, 1) * 2 - 1, truth["diffuse"] * 2 - 1).reshape(-1).double()
    return out


class CompletionTable:
    """``experiments/table/completion.yaml`` (see the module docstring).

    Args:
        ckpts: one diffusion checkpoint (a list, as ``evaluate.py``'s ``ckpts``).
        data_dir: the embedded dataset (ground-truth maps and identity embeddings of held-out subjects).
        splits, n_subjects: held-out subjects (one sample each).
        kinds, shares: mask kinds and hidden shares of the face region.
        steps, guidance_scale, resample, blend, seam: the completion sampler (DDIM) and its settings.
        identity: ``stored`` (each sample's embedding) or ``none`` (unconditional).
        seed: generator seed (and the blob masks' seed); batch_size: subjects completed together.
        lpips: add the LPIPS column; device: ``auto``, ``cpu``, ``cuda``...; name: file stem.
    """

    title = "Completion"
    plot_metrics = (("diffuse_psnr", True), ("normals_angle_deg", False))

    def __init__(self, ckpts: Sequence[str], data_dir: str, splits: Sequence[str] = ("test",), n_subjects: int = 40,
                 kinds: Sequence[str] = ("left_half", "blobs"), shares: Sequence[float] = (0.3, 0.5, 0.7),
                 steps: int = 25, guidance_scale: float = 2.0, resample: int = 1, blend: float = 1.5,
                 seam: str = "harmonic", identity: str = "stored", seed: int = 0, batch_size: int = 8, lpips: bool = True,
                 device: str = "auto", name: str = "completion", progress: bool = True, **_: Any) -> None:
        from fitdiff.completion import MASK_KINDS
        from fitdiff.config.errors import ConfigError

        known_kinds = (*MASK_KINDS, "photo")  # photo: the sample's own visibility, made here
        if len(list(ckpts or [])) != 1:
            raise ConfigError(f"table=completion takes one checkpoint: ckpts=[CKPT] (got {len(list(ckpts or []))})")
        unknown = sorted(set(kinds) - set(known_kinds))
        if unknown:
            raise ConfigError(f"table.kinds: unknown mask kind(s) {unknown}; kinds are {', '.join(known_kinds)}")
        if identity not in ("stored", "none"):
            raise ConfigError(f"table.identity must be 'stored' or 'none', got {identity!r}")
        self.ckpt, self.data_dir = str(list(ckpts)[0]), str(data_dir)
        self.splits, self.n_subjects = list(splits), int(n_subjects)
        self.kinds, self.shares = list(kinds), [float(s) for s in shares]
        self.steps, self.guidance_scale, self.resample, self.blend = int(steps), float(guidance_scale), int(resample), float(blend)
        from fitdiff.completion.inpaint import SEAMS

        if seam not in SEAMS:
            raise ConfigError(f"table.seam must be one of {', '.join(SEAMS)}, got {seam!r}")
        self.seam = seam
        self.identity, self.seed, self.batch_size = identity, int(seed), int(batch_size)
        self.lpips, self.name, self.progress = bool(lpips), name, bool(progress)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device

    def _masks(self, layout: Any, photo_known: torch.Tensor | None) -> list[tuple[str, torch.Tensor]]:
        """(row label, (N or 1, R, R) known mask) of every mask kind and share."""
        from fitdiff.completion import blob_mask, hidden_share, left_half_mask

        face = layout.covered
        out = []
        for kind in self.kinds:
            if kind == "photo":
                hidden = float(np.mean([hidden_share(k.numpy(), face) for k in photo_known]))
                out.append((f"photo visibility {round(100 * hidden)}%", photo_known))
                continue
            for share in self.shares:
                known = left_half_mask(layout.x, face, share) if kind == "left_half" else blob_mask(face, share, self.seed)
                out.append((f"{kind} {round(100 * hidden_share(known, face))}%", torch.from_numpy(known)[None]))
        return out

    def _photo_masks(self, faces: Any, model: Any, res: int) -> torch.Tensor:
        """(N, R, R) texels each sample's photo shows (its camera from meta.json, ground-truth shape)."""
        from fitdiff.face.scene import FaceScene, camera_from_meta
        from fitdiff.fitting.unwrap import unwrap_photo

        scene = FaceScene(model, normal_space="tangent")
        masks = []
        for start in range(0, len(faces), self.batch_size):
            idx = list(range(start, min(start + self.batch_size, len(faces))))
            camera, _ = camera_from_meta([faces.meta[i] for i in idx])
            masks.append(unwrap_photo(scene, faces.shape[idx], camera, faces.image[idx].float(), res).valid)
        return torch.cat(masks)

    @torch.no_grad()
    def run(self, out_dir: str | Path) -> ReconstructionResult:
        from tqdm.auto import tqdm

        from fitdiff.completion import complete_maps
        from fitdiff.diffusion import Sampler, ddim_scheduler
        from fitdiff.evaluation.faces import load_faces
        from fitdiff.io import sha256_file
        from fitdiff.ldm.module import LatentDiffusionModule
        from fitdiff.synthetic.uv_layout import uv_layout

        out_dir = Path(out_dir)
        module = LatentDiffusionModule.load_checkpoint(self.ckpt, map_location=self.device)
        pipe = module.pipeline(ema=True)
        faces = load_faces(self.data_dir, self.splits, with_photos="photo" in self.kinds).first_per_subject()
        faces = faces.subset(range(min(self.n_subjects, len(faces))))
        res = faces.diffuse.shape[-1]
        model = module.shape_model()
        if model is None:
            from fitdiff.config.errors import ConfigError

            raise ConfigError(f"{self.ckpt}: the checkpoint names no shape model; the face region needs one")
        layout = uv_layout(model.cpu(), res)
        face = torch.from_numpy(layout.covered)
        lpips_fn, lpips_state = None, "off"
        if self.lpips:
            from fitdiff.metrics.lpips import build_lpips

            net = build_lpips()
            lpips_fn = lambda x, y: net(x, y)  # noqa: E731
            lpips_state = getattr(net, "backbone_state", None) or "VGG-16 (random backbone unless the lpips_vgg16 asset is present)"
        truth = {n: getattr(faces, n).float() for n in ("diffuse", "specular", "normals")}
        mean = pipe.decode(torch.zeros(1, *pipe.latent_shape, device=self.device)).maps
        photo_known = self._photo_masks(faces, model.cpu(), res) if "photo" in self.kinds else None
        masks = self._masks(layout, photo_known)
        # the autoencoder's own reconstruction of every subject (the same for every mask), made once: the
        # best any decoded map can do, reported as a reference row
        parts = [pipe.decode(pipe.encode({n: v[i:i + self.batch_size].to(self.device) for n, v in truth.items()},
                                         faces.shape[i:i + self.batch_size].to(self.device))).maps
                 for i in range(0, len(faces), self.batch_size)]
        recon = {n: torch.cat([p[n].cpu() for p in parts]) for n in truth}
        rows = []
        bar = tqdm(total=len(masks) * len(faces), desc=f"{self.name} table", disable=not self.progress, dynamic_ncols=True)
        for label, known_all in masks:
            accs = {m: RowAccumulator() for m in ("completion", "mean fill", "OpenCV inpainting",
                                                  "autoencoder (reference)")}
            for start in range(0, len(faces), self.batch_size):
                idx = list(range(start, min(start + self.batch_size, len(faces))))
                b = len(idx)
                known = known_all[idx] if known_all.shape[0] > 1 else known_all.expand(b, -1, -1)
                region = (~known) & face[None]
                gt = {n: v[idx] for n, v in truth.items()}
                identity = faces.identity[idx].to(self.device) if self.identity == "stored" else None
                generator = torch.Generator().manual_seed(self.seed + start)
                done = complete_maps(pipe, {n: v.to(self.device) for n, v in gt.items()}, known,
                                     Sampler(ddim_scheduler(), self.steps), identity=identity,
                                     guidance_scale=self.guidance_scale, generator=generator, blend=self.blend,
                                     resample=self.resample, seam=self.seam)
                scores = _region_scores(done.maps, gt, region, lpips_fn)
                kept = known[:, None].float() * face[None, None].float()
                diff = ((done.maps["diffuse"].cpu() - gt["diffuse"]) ** 2 * kept).sum((1, 2, 3))
                scores["known_rmse"] = (diff / (kept.sum((1, 2, 3)) * 3)).sqrt().double()
                ae = ((recon["diffuse"][idx] - gt["diffuse"]) ** 2 * kept).sum((1, 2, 3)) / (kept.sum((1, 2, 3)) * 3)
                scores["ae_known_rmse"] = ae.sqrt().double()
                accs["completion"].add(scores)
                filled = {n: torch.where(known[:, None], gt[n], mean[n].cpu().expand(b, -1, -1, -1)) for n in gt}
                accs["mean fill"].add(_region_scores(filled, gt, region, lpips_fn))
                accs["OpenCV inpainting"].add(_region_scores(opencv_inpaint(gt, known), gt, region, lpips_fn))
                accs["autoencoder (reference)"].add(_region_scores({n: v[idx] for n, v in recon.items()}, gt, region,
                                                                   lpips_fn))
                bar.update(b)
            rows += [acc.row(f"{label} / {method}", count="n_subjects") for method, acc in accs.items()]
        bar.close()
        table = ResultTable(rows, [c for c in COLUMNS if self.lpips or c.key != "diffuse_lpips"], counts=["n_subjects"])
        header = [
            f"subjects: {len(faces)} held-out ({', '.join(self.splits)}), one sample each, maps {res} x {res}; "
            "all three maps hidden by the same mask; scored on the hidden face texels",
            f"checkpoint: {self.ckpt} (sha256 {sha256_file(self.ckpt)})",
            f"completion: DDIM {self.steps} steps, CFG {self.guidance_scale:g} with the {self.identity} identity, "
            f"resample {self.resample}, seams: " + ("harmonic offset (fitdiff/completion/seams.py)" if self.seam == "harmonic"
                else f"feathered over {self.blend:g} texels") + f", seed {self.seed}",
            f"LPIPS: {lpips_state}" if self.lpips else "LPIPS: off",
            "baselines: mean fill = the mean face's reflectance (decoded zero latent); OpenCV inpainting = "
            "cv2.inpaint Telea, radius 3, on 8-bit maps; autoencoder (reference) = the autoencoder's reconstruction "
            "of the whole ground truth, the floor of any decoded map (not a completion)",
            "photo visibility: the texels the sample's own photo shows (fitdiff/fitting/unwrap.py with the photo's "
            "camera from meta.json and the ground-truth shape) are known, the rest hidden",
        ]
        csv_path, md_path, markdown = table.write(out_dir, self.name, title=self.title, header=header)
        log.info("wrote %s, %s", csv_path, md_path)
        return ReconstructionResult(table, markdown, [csv_path, md_path], name=self.name, title=self.title,
                                    plot_metrics=self.plot_metrics)
