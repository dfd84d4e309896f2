"""The completion table end to end on a tiny checkpoint: its rows, its baselines, and numbers recomputed."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from fitdiff.evaluation.completion import opencv_inpaint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_opencv_inpainting_keeps_the_known_texels_and_fills_the_hole():
    maps = {"diffuse": torch.rand(1, 3, 16, 16), "normals": torch.nn.functional.normalize(torch.randn(1, 3, 16, 16), dim=1)}
    known = torch.ones(1, 16, 16, dtype=torch.bool)
    known[0, 4:10, 4:10] = False
    out = opencv_inpaint(maps, known)
    diffuse = out["diffuse"][0]
    assert torch.equal(diffuse[:, known[0]], maps["diffuse"][0][:, known[0]])
    assert torch.allclose(out["normals"].norm(dim=1), torch.ones(1, 16, 16), atol=1e-5)
    # the hole is filled from its border, so inside it lies within the border's range
    border = maps["diffuse"][0][:, 3:11, 3:11]
    assert float(diffuse[:, 4:10, 4:10].min()) >= float(border.min()) - 1 / 255
    assert float(diffuse[:, 4:10, 4:10].max()) <= float(border.max()) + 1 / 255


@pytest.mark.slow
def test_the_table_has_every_mask_and_baseline_and_the_numbers_of_its_parts(tiny_ldm_checkpoint, latent_dataset,
                                                                           tmp_path):
    from fitdiff.completion import complete_maps, hidden_share, left_half_mask
    from fitdiff.diffusion import Sampler, ddim_scheduler
    from fitdiff.evaluation.completion import CompletionTable, _region_scores
    from fitdiff.evaluation.faces import load_faces
    from fitdiff.ldm.module import LatentDiffusionModule
    from fitdiff.synthetic.uv_layout import uv_layout

    table = CompletionTable([str(tiny_ldm_checkpoint)], str(latent_dataset.faces), splits=["test", "val"], n_subjects=3,
                            kinds=["left_half", "blobs"], shares=[0.5], steps=3, guidance_scale=1.0, lpips=False,
                            device="cpu", progress=False, batch_size=2)
    result = table.run(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "completion.csv")))
    methods = [r["method"] for r in rows]
    assert methods[:4] == ["left_half 50% / completion", "left_half 50% / mean fill", "left_half 50% / OpenCV inpainting",
                           "left_half 50% / autoencoder (reference)"]
    assert len(methods) == 8 and methods[4].startswith("blobs ") and all(r["n_subjects"] == "3" for r in rows)
    assert "OpenCV inpainting" in result.markdown and "sha256" in result.markdown

    # the first completion row, recomputed from its parts
    module = LatentDiffusionModule.load_checkpoint(tiny_ldm_checkpoint)
    pipe = module.pipeline(ema=True)
    faces = load_faces(latent_dataset.faces, ["test", "val"], with_photos=False).first_per_subject().subset(range(3))
    layout = uv_layout(module.shape_model(), faces.diffuse.shape[-1])
    known_np = left_half_mask(layout.x, layout.covered, 0.5)
    assert abs(hidden_share(known_np, layout.covered) - 0.5) < 0.05
    known = torch.from_numpy(known_np)
    region = (~known) & torch.from_numpy(layout.covered)
    values = []
    for start in (0, 2):
        idx = list(range(start, min(start + 2, 3)))
        gt = {n: getattr(faces, n)[idx].float() for n in ("diffuse", "specular", "normals")}
        done = complete_maps(pipe, gt, known[None].expand(len(idx), -1, -1), Sampler(ddim_scheduler(), 3),
                             identity=faces.identity[idx], generator=torch.Generator().manual_seed(start))
        values.append(_region_scores(done.maps, gt, region[None].expand(len(idx), -1, -1), None)["diffuse_psnr"])
    assert float(rows[0]["diffuse_psnr_mean"]) == pytest.approx(float(torch.cat(values).mean()), rel=1e-9)
    assert float(rows[0]["known_rmse_mean"]) <= float(rows[0]["ae_known_rmse_mean"]) + 0.05
    assert np.isfinite(float(rows[2]["normals_angle_deg_mean"]))


@pytest.mark.slow
def test_photo_visibility_masks_are_what_each_photo_shows(tiny_synthetic):
    """The ``photo`` mask kind: unwrapping each sample's photo with its own camera (meta.json) and shape."""
    from fitdiff.completion import hidden_share
    from fitdiff.evaluation.completion import CompletionTable
    from fitdiff.evaluation.faces import load_faces
    from fitdiff.synthetic.dataset_model import dataset_shape_model
    from fitdiff.synthetic.uv_layout import uv_layout

    faces = load_faces(tiny_synthetic, ["test"]).first_per_subject()
    model = dataset_shape_model(tiny_synthetic)
    table = CompletionTable(["unused.ckpt"], str(tiny_synthetic), kinds=["photo"], device="cpu", batch_size=4)
    known = table._photo_masks(faces, model, 16)
    covered = uv_layout(model, 16).covered
    assert known.shape == (len(faces), 16, 16) and not bool((known & ~torch.from_numpy(covered)).any())
    shares = [hidden_share(k.numpy(), covered) for k in known]
    assert all(0.1 < s < 0.9 for s in shares), shares
    labels = [label for label, _ in table._masks(uv_layout(model, 16), known)]
    assert labels == [f"photo visibility {round(100 * float(np.mean(shares)))}%"]
