"""Reflectance completion: the latent mask, the known-region hook, the two limits, and the benchmark masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitdiff.completion import (
    KnownRegion,
    blob_mask,
    complete_maps,
    feather,
    hidden_share,
    latent_known_mask,
    left_half_mask,
    read_mask,
)
from fitdiff.ldm.layout import LatentLayout


def _layout() -> LatentLayout:
    return LatentLayout(branches=(("diffuse", 2), ("specular", 1), ("normals", 2)), shape_dim=6, height=4, width=4)


def test_a_latent_cell_is_known_only_when_all_its_texels_are():
    uv = torch.ones(1, 8, 8, dtype=torch.bool)
    uv[0, 0, 0] = False  # one texel of the top-left 2x2 cell
    uv[0, 4:, 4:] = False  # the bottom-right quarter
    mask = latent_known_mask(uv, _layout(), ["diffuse", "normals"], shape_known=False)
    cells = mask[0, 0]
    assert cells[0, 0] == 0 and cells[0, 1] == 1 and cells[2:, 2:].sum() == 0 and cells.sum() == 16 - 1 - 4
    assert torch.equal(mask[0, 3:5], mask[0, :2]) and mask[0, 2].sum() == 0  # specular not given
    assert mask[0, 5:].sum() == 0  # shape unknown
    eroded = latent_known_mask(uv, _layout(), ["diffuse"], shape_known=True, erode=1)
    assert eroded[0, 0].sum() < cells.sum() and eroded[0, 5:].sum() == _layout().loss_mask()[0, 5:].sum()
    with pytest.raises(ValueError, match="does not tile"):
        latent_known_mask(torch.ones(1, 6, 6, dtype=torch.bool), _layout(), ["diffuse"], False)


def test_the_hook_imposes_the_forward_noised_known_part_and_nothing_else():
    z = torch.randn(2, 3, 4, 4)
    mask = torch.zeros_like(z)
    mask[:, :, :2] = 1
    hook = KnownRegion(z, mask)
    x = torch.randn(2, 3, 4, 4)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    out = hook.after_step(x, 0, 0.36, g1)
    noise = torch.randn(x.shape, generator=g2)
    assert torch.allclose(out[:, :, :2], (0.6 * z + 0.8 * noise)[:, :, :2]) and torch.equal(out[:, :, 2:], x[:, :, 2:])
    assert hook(None) is None and not hasattr(hook, "repeats")
    assert KnownRegion(z, mask, resample=3).repeats(0, 10) == 3
    empty = KnownRegion(z, torch.zeros_like(z))
    g = torch.Generator().manual_seed(5)
    assert empty.after_step(x, 0, 0.5, g) is x and torch.equal(g.get_state(), torch.Generator().manual_seed(5).get_state())


def test_feather_keeps_deep_known_texels_and_zero_on_missing():
    uv = torch.zeros(1, 16, 16, dtype=torch.bool)
    uv[0, :, :8] = True
    w = feather(uv, 1.5)[0, 0]
    assert torch.all(w[:, 8:] == 0) and torch.allclose(w[:, :3], torch.ones(16, 3)) and 0 < w[0, 7] < 1
    assert torch.equal(feather(torch.ones(1, 4, 4, dtype=torch.bool), 2.0), torch.ones(1, 1, 4, 4))


def test_benchmark_masks_hide_the_share_asked_for(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    face = (yy - 16) ** 2 + (xx - 16) ** 2 < 14**2
    frontal_x = xx - 16.0
    for share in (0.3, 0.5, 0.7):
        half = left_half_mask(frontal_x, face, share)
        assert abs(hidden_share(half, face) - share) < 0.05
        assert not half[16, 31 - 2] and half[16, 2]  # the large-x side is hidden
        blobs = blob_mask(face, share, seed=1)
        assert share <= hidden_share(blobs, face) < share + 0.2
        assert np.array_equal(blobs, blob_mask(face, share, seed=1)) and not np.array_equal(blobs, blob_mask(face, share, seed=2))
    from PIL import Image

    Image.fromarray((half * 255).astype(np.uint8)).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png", 32), half)
    with pytest.raises(ValueError, match="not a readable image"):
        (tmp_path / "bad.png").write_text("no")
        read_mask(tmp_path / "bad.png", 32)


@pytest.fixture(scope="module")
def pipeline(tiny_ldm_checkpoint):
    from fitdiff.ldm.pipeline import FitDiffPipeline

    return FitDiffPipeline.from_checkpoint(tiny_ldm_checkpoint)


def _maps(res: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(1, 3, res, res, generator=g) * 0.2 + torch.tensor(
        [0.0, 0.0, 1.0]).view(1, 3, 1, 1), dim=1)
    return {"diffuse": torch.rand(1, 3, res, res, generator=g), "specular": torch.rand(1, 1, res, res, generator=g),
            "normals": normals}


def _sampler():
    from fitdiff.diffusion import Sampler, ddim_scheduler

    return Sampler(ddim_scheduler(), num_inference_steps=4)


@pytest.mark.slow
def test_an_empty_mask_is_plain_sampling(pipeline, one_torch_thread):
    res = pipeline.decode(torch.zeros(1, *pipeline.latent_shape)).maps["diffuse"].shape[-1]
    done = complete_maps(pipeline, _maps(res), torch.zeros(1, res, res, dtype=torch.bool), _sampler(),
                         generator=torch.Generator().manual_seed(3))
    plain = pipeline.sample(1, _sampler(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(done.latent, plain)
    face = pipeline.decode(plain)
    assert all(torch.equal(done.maps[k], face.maps[k]) for k in face.maps) and done.known_cells == 0.0


@pytest.mark.slow
def test_a_full_mask_returns_the_known_maps(pipeline, one_torch_thread):
    res = pipeline.decode(torch.zeros(1, *pipeline.latent_shape)).maps["diffuse"].shape[-1]
    maps, shape = _maps(res), torch.randn(1, pipeline.layout.shape_dim)
    done = complete_maps(pipeline, maps, torch.ones(1, res, res, dtype=torch.bool), _sampler(), shape=shape,
                         generator=torch.Generator().manual_seed(3))
    assert all(torch.allclose(done.maps[k], maps[k], atol=1e-6) for k in maps) and torch.equal(done.shape, shape)
    reconstruction = pipeline.decode(pipeline.encode(maps, shape))  # the autoencoder's own error, no more
    assert all(torch.allclose(done.decoded[k], reconstruction.maps[k], atol=1e-5) for k in maps)
    assert done.known_cells == 1.0


@pytest.mark.slow
def test_a_partial_mask_keeps_the_known_part_and_samples_the_rest(pipeline, one_torch_thread):
    res = pipeline.decode(torch.zeros(1, *pipeline.latent_shape)).maps["diffuse"].shape[-1]
    maps = _maps(res)
    uv = torch.zeros(1, res, res, dtype=torch.bool)
    uv[0, :, : res // 2] = True
    given = {"diffuse": maps["diffuse"]}
    a = complete_maps(pipeline, given, uv, _sampler(), generator=torch.Generator().manual_seed(1))
    b = complete_maps(pipeline, given, uv, _sampler(), generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.maps["diffuse"][..., : res // 2], maps["diffuse"][..., : res // 2])  # harmonic seams
    feathered = complete_maps(pipeline, given, uv, _sampler(), generator=torch.Generator().manual_seed(1), seam="feather")
    inner = slice(0, res // 2 - 5)  # beyond the blending kernel (radius 3 x 1.5 texels, rounded up)
    assert torch.equal(feathered.maps["diffuse"][..., inner], maps["diffuse"][..., inner])
    assert not torch.equal(feathered.maps["diffuse"][..., res // 2 - 2], maps["diffuse"][..., res // 2 - 2])
    assert torch.equal(feathered.latent, a.latent)  # the seams change only the decoded maps
    assert not torch.equal(a.maps["diffuse"][..., res // 2:], b.maps["diffuse"][..., res // 2:])  # sampled
    mask = latent_known_mask(uv, pipeline.layout, ["diffuse"], False)
    assert torch.equal(a.latent * mask, b.latent * mask) and 0.4 < a.known_cells <= 0.5
    with pytest.raises(ValueError, match="unknown map name"):
        complete_maps(pipeline, {"albedo": maps["diffuse"]}, uv, _sampler())
    with pytest.raises(ValueError, match="seam must be one of"):
        complete_maps(pipeline, given, uv, _sampler(), seam="poisson")
