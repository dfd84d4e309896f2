"""Latent layout and statistics: exact pack/unpack, masks, streaming stats against numpy, normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fitdiff.ldm.latent_stats import LatentStats, LatentStatsAccumulator
from fitdiff.ldm.layout import LatentLayout, choose_tile

BRANCHES = (("diffuse", 3), ("specular", 2), ("normals", 3))
CASES = [  # (K, H, W)
    (50, 16, 16),   # quickstart: one plane, 2 x 2 tiles
    (8, 8, 8),      # tiles cover the plane
    (158, 64, 64),  # full scale
    (300, 8, 8),    # several shape channels
    (7, 5, 3),      # odd grid: border strips are padding
]


def _data(layout: LatentLayout, b: int = 3, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z_maps = torch.randn(b, layout.map_channels, layout.height, layout.width, generator=g).to(dtype)
    shape = (torch.randn(b, layout.shape_dim, generator=g) * 3).to(dtype)
    return z_maps, shape


@pytest.mark.parametrize("packing", ["repeat", "flat"])
@pytest.mark.parametrize("k,h,w", CASES)
def test_pack_unpack_is_exact(packing, k, h, w):
    layout = LatentLayout(BRANCHES, k, h, w, packing)
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        z_maps, shape = _data(layout, dtype=dtype)
        z = layout.pack(z_maps, shape)
        assert z.shape == (3, layout.channels, h, w) and z.dtype == dtype
        back_maps, back_shape = layout.unpack(z)
        assert torch.equal(back_maps, z_maps)
        assert torch.equal(back_shape, shape), dtype  # bit-exact, repeat included
        assert torch.equal(z[:, : layout.map_channels], z_maps)


@pytest.mark.parametrize("packing", ["repeat", "flat"])
@pytest.mark.parametrize("k,h,w", CASES)
def test_mask_counts_and_padding_is_zero(packing, k, h, w):
    layout = LatentLayout(BRANCHES, k, h, w, packing)
    mask = layout.loss_mask()
    assert mask.shape == (1, layout.channels, h, w) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert layout.shape_channels == -(-k // (h * w))
    assert (mask[0, : layout.map_channels] == 1).all()
    r = layout.texels_per_coefficient
    assert r == (1 if packing == "flat" else layout.tile[0] * layout.tile[1])
    assert int(mask[0, layout.shape_slice].sum()) == k * r
    assert sum(layout.valid_counts()) == int(mask.sum())
    z_maps, shape = _data(layout)
    z = layout.pack(z_maps, shape)
    padding = z[:, layout.shape_slice][(mask[:, layout.shape_slice] == 0).expand(3, -1, -1, -1)]
    assert (padding == 0).all() and not torch.signbit(padding).any()  # +0, not -0


def test_flat_is_row_major_and_repeat_fills_tiles():
    flat = LatentLayout(BRANCHES, 5, 2, 4, "flat")
    z = flat.pack(torch.zeros(1, 8, 2, 4), torch.arange(1, 6.0)[None])
    assert z[0, 8].tolist() == [[1, 2, 3, 4], [5, 0, 0, 0]]
    rep = LatentLayout(BRANCHES, 3, 4, 4, "repeat")
    assert rep.tile == (2, 2)  # 4 tiles of 2 x 2 for 3 coefficients; the 4th tile is padding
    z = rep.pack(torch.zeros(1, 8, 4, 4), torch.tensor([[1.0, 2.0, 3.0]]))
    assert z[0, 8].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]]


def test_repeat_unpack_averages_the_tile_with_equal_gradients():
    layout = LatentLayout(BRANCHES, 3, 4, 4, "repeat")
    z = layout.pack(torch.zeros(1, 8, 4, 4), torch.zeros(1, 3)).requires_grad_(True)
    with torch.no_grad():
        z[0, 8, 0, 0] = 4.0  # one texel of coefficient 0's tile
    _, shape = layout.unpack(z)
    assert shape[0, 0].item() == pytest.approx(1.0)
    shape[0, 0].backward()
    assert torch.allclose(z.grad[0, 8, :2, :2], torch.full((2, 2), 0.25))
    assert z.grad.sum().item() == pytest.approx(1.0)


def test_choose_tile_prefers_area_then_square():
    assert choose_tile(16, 16, 1, 50) == (2, 2)
    assert choose_tile(64, 64, 1, 158) == (4, 6)
    assert choose_tile(8, 8, 1, 64) == (1, 1)
    th, tw = choose_tile(64, 64, 1, 100)
    assert (64 // th) * (64 // tw) >= 100 and th * tw == 36


@pytest.mark.parametrize("packing", ["repeat", "flat"])
def test_layout_dict_round_trips_through_json(packing):
    layout = LatentLayout(BRANCHES, 50, 16, 16, packing)
    data = json.loads(json.dumps(layout.to_dict(), sort_keys=True))
    assert LatentLayout.from_dict(data) == layout
    assert [b["name"] for b in data["branches"]] == ["diffuse", "specular", "normals"]  # order survives sort_keys
    assert layout.map_slices == {"diffuse": slice(0, 3), "specular": slice(3, 5), "normals": slice(5, 8)}


def test_layout_errors_name_the_problem():
    with pytest.raises(ValueError, match="packing"):
        LatentLayout(BRANCHES, 5, 4, 4, "spiral")
    with pytest.raises(ValueError, match="tile"):
        LatentLayout(BRANCHES, 5, 4, 4, "repeat", tile=(4, 4))
    layout = LatentLayout(BRANCHES, 5, 4, 4)
    with pytest.raises(ValueError, match="z_maps"):
        layout.pack(torch.zeros(1, 7, 4, 4), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="shape"):
        layout.pack(torch.zeros(1, 8, 4, 4), torch.zeros(1, 6))
    bad = {**layout.to_dict(), "channels": 99}
    with pytest.raises(ValueError, match="channels 99"):
        LatentLayout.from_dict(bad, where="latents.json")


@pytest.mark.parametrize("packing", ["repeat", "flat"])
def test_streaming_stats_equal_numpy_over_valid_elements(packing):
    layout = LatentLayout(BRANCHES, 50, 8, 8, packing)
    acc, batches = LatentStatsAccumulator(layout), []
    for seed, b in enumerate((5, 1, 7, 3)):  # uneven batches
        z_maps, shape = _data(layout, b, seed)
        z = layout.pack(z_maps * (seed + 1) + seed, shape)
        acc.update(z)
        batches.append(z.double().numpy())
    stats = acc.result()
    everything = np.concatenate(batches)
    mask = layout.loss_mask()[0].numpy().astype(bool)
    for c in range(layout.channels):
        values = everything[:, c][:, mask[c]]
        assert stats.count[c] == values.size
        assert stats.mean[c] == pytest.approx(values.mean(), rel=1e-12, abs=1e-12)
        assert stats.std[c] == pytest.approx(values.std(), rel=1e-10)
    assert stats.samples == 16
    # merging per-part accumulators gives the same result (the resumable encoder relies on it)
    a, b = LatentStatsAccumulator(layout), LatentStatsAccumulator(layout)
    a.update(torch.from_numpy(everything[:6]))
    b.update(torch.from_numpy(everything[6:]))
    merged = a.merge(LatentStatsAccumulator.from_state_dict(layout, json.loads(json.dumps(b.state_dict())))).result()
    assert np.allclose(merged.mean, stats.mean, rtol=1e-12, atol=1e-14)
    assert np.allclose(merged.std, stats.std, rtol=1e-12)


def test_normalize_keeps_padding_zero_and_inverts():
    layout = LatentLayout(BRANCHES, 50, 8, 8, "repeat")
    acc = LatentStatsAccumulator(layout)
    z_maps, shape = _data(layout, 8)
    z = layout.pack(z_maps * 2 + 1, shape + 5)
    acc.update(z)
    stats = LatentStats.from_dict(json.loads(json.dumps(acc.result().to_dict())), layout.to_dict())
    n = stats.normalize(z)
    pad = layout.loss_mask().expand_as(z) == 0
    assert (n[pad] == 0).all() and not torch.signbit(n[pad]).any()
    for c in range(layout.channels):  # zero mean, unit std over the valid elements of every channel
        values = n[:, c][~pad[:, c]].double()
        assert abs(values.mean().item()) < 1e-5 and values.std(correction=0).item() == pytest.approx(1.0, rel=1e-5)
    back = stats.denormalize(n)
    assert torch.allclose(back, z, atol=1e-5) and (back[pad] == 0).all()
    assert layout.unpack(back)[1].sub(shape + 5).abs().max() < 1e-4


def test_stats_dict_carries_its_layout():
    layout = LatentLayout(BRANCHES, 5, 4, 4)
    acc = LatentStatsAccumulator(layout)
    acc.update(layout.pack(*_data(layout, 2)))
    stats = acc.result()
    data = json.loads(json.dumps(stats.to_dict()))
    assert LatentStats.from_dict(data) == stats and stats.channels == layout.channels
    assert stats.to("cpu") is stats
    other = LatentLayout(BRANCHES, 5, 4, 4, "flat")
    with pytest.raises(ValueError, match="computed for"):
        LatentStats.from_dict(data, other)
    z = torch.randn(2, *layout.latent_shape)
    masked = layout.apply_mask(z)
    assert torch.equal(masked, torch.where(layout.loss_mask() > 0, z, torch.zeros(())))


def test_stats_refuse_wrong_channels_and_empty_input():
    layout = LatentLayout(BRANCHES, 5, 4, 4)
    with pytest.raises(ValueError, match="channels"):
        LatentStats(layout, [0.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="at least one sample"):
        LatentStatsAccumulator(layout).result()
    with pytest.raises(ValueError, match="expected"):
        LatentStatsAccumulator(layout).update(torch.zeros(2, 8, 4, 4))
