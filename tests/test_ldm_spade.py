"""SPADE from a vector embedding: exactly plain GroupNorm at initialisation, condition-dependent once trained."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fitdiff.ldm import ConditionContext, ConditionMap, SPADEGroupNorm, resize_map
from fitdiff.ldm.conditioning import AdaGroupNorm, SpadeConditioner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _context(embedding: torch.Tensor, map_channels: int = 8, map_res: int = 4) -> ConditionContext:
    torch.manual_seed(1)
    return ConditionContext(base_map=ConditionMap(embedding.shape[1], map_channels, map_res)(embedding))


@pytest.mark.parametrize("size", [(2, 3), (4, 4), (8, 8), (16, 12)])
@pytest.mark.parametrize("channels,groups", [(64, 32), (48, 32), (8, 4)])
def test_spade_at_init_is_plain_group_norm(size, channels, groups):
    torch.manual_seed(0)
    x = torch.randn(3, channels, *size) * 3 + 1
    ctx = _context(F.normalize(torch.randn(3, 512), dim=1))
    norm = SPADEGroupNorm(channels, map_channels=8, hidden=16, groups=groups)
    expected = F.group_norm(x, norm.groups, eps=1e-5)
    assert torch.equal(norm(x, ctx), expected)


def test_adagn_at_init_is_plain_group_norm():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 5, 5)
    norm = AdaGroupNorm(32, vector_dim=16)
    ctx = ConditionContext(vector=torch.randn(2, 16))
    assert torch.equal(norm(x, ctx), F.group_norm(x, 32, eps=1e-5))


def test_spade_depends_on_the_map_once_its_last_conv_is_nonzero():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    norm = SPADEGroupNorm(16, map_channels=8, hidden=8, groups=8)
    torch.nn.init.normal_(norm.to_gamma_beta.weight, std=0.1)
    a = norm(x, _context(F.normalize(torch.randn(2, 512), dim=1)))
    b = norm(x, _context(F.normalize(torch.randn(2, 512), dim=1)))
    assert (a - b).abs().max() > 1e-3
    # spatially varying: gamma, beta are maps, not per-channel constants
    plain = F.group_norm(x, 8, eps=1e-5)
    ratio = (a - plain)[0, 0]
    assert ratio.std() > 1e-4


def test_condition_map_and_resize_shapes():
    cmap = ConditionMap(512, map_channels=6, map_res=4)(torch.randn(3, 512))
    assert cmap.shape == (3, 6, 4, 4)
    assert resize_map(cmap, (4, 4)) is cmap
    assert resize_map(cmap, (16, 8)).shape == (3, 6, 16, 8)
    assert resize_map(cmap, (2, 2)).shape == (3, 6, 2, 2)
    # shrinking averages: a constant map stays constant, its mean is kept
    const = torch.full((1, 2, 8, 8), 0.5)
    assert torch.allclose(resize_map(const, (2, 2)), torch.full((1, 2, 2, 2), 0.5))


def test_spade_conditioner_prepares_one_map_per_level():
    cond = SpadeConditioner(512, map_channels=4, map_res=8, hidden=8)
    ctx = cond(torch.randn(2, 512), [(16, 16), (8, 8), (4, 4)])
    assert sorted(ctx.maps) == [(4, 4), (8, 8), (16, 16)]
    # finer features than the map read the map itself; coarser ones a shrunk copy
    assert ctx.map_at((16, 16)) is ctx.map_at((8, 8)) is ctx.base_map
    assert ctx.map_at((4, 4)).shape == (2, 4, 4, 4)
    assert ctx.map_at((2, 2)).shape == (2, 4, 2, 2)  # an unprepared size is resized on demand
    assert ctx.map_at((32, 6)).shape == (2, 4, 8, 6)


@pytest.mark.parametrize("src,dst", [((4, 4), (16, 16)), ((2, 3), (8, 12)), ((4, 4), (4, 4)), ((3, 4), (7, 9)),
                                     ((8, 8), (64, 64)), ((1, 1), (4, 4))])
def test_enlarging_equals_bilinear_interpolation(src, dst):
    field = torch.randn(2, 5, *src, dtype=torch.float64)
    expected = F.interpolate(field, size=dst, mode="bilinear", align_corners=False)
    assert torch.allclose(ConditionContext().enlarge(field, dst), expected, rtol=0, atol=1e-12)
    assert torch.allclose(ConditionContext().enlarge(field.float(), dst), expected.float(), rtol=0, atol=1e-6)
