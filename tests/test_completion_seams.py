"""Harmonic seams: the known texels kept exactly, offsets carried smoothly into the filled ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitdiff.completion.seams import harmonic_extension, harmonic_offset


def _hole(size: int = 12) -> np.ndarray:
    known = np.ones((size, size), dtype=bool)
    known[3:9, 2:10] = False
    return known


def test_the_extension_is_harmonic_and_keeps_the_known_values():
    rng = np.random.default_rng(0)
    known = _hole()
    values = rng.random((2, 12, 12))
    ext = harmonic_extension(values, known)
    assert np.array_equal(ext[:, known], values[:, known])
    inner = ext[:, 4:8, 3:9]
    neighbours = (ext[:, 3:7, 3:9] + ext[:, 5:9, 3:9] + ext[:, 4:8, 2:8] + ext[:, 4:8, 4:10]) / 4
    assert np.allclose(inner, neighbours, atol=1e-7)
    # a linear ramp is harmonic, so it is continued exactly
    yy, xx = np.mgrid[0:12, 0:12]
    ramp = (0.2 * yy - 0.05 * xx)[None].astype(float)
    assert np.allclose(harmonic_extension(ramp, known), ramp, atol=1e-6)


def test_a_constant_is_continued_and_nothing_known_gives_zero():
    known = np.zeros((6, 6), dtype=bool)
    known[:, :2] = True
    assert np.allclose(harmonic_extension(np.full((1, 6, 6), 0.7), known), 0.7, atol=1e-6)
    assert np.array_equal(harmonic_extension(np.ones((1, 4, 4)), np.zeros((4, 4), bool)), np.zeros((1, 4, 4)))


def test_a_sample_offset_by_a_constant_is_corrected_exactly():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 3, 12, 12, generator=g)
    decoded = truth + torch.tensor([0.1, -0.05, 0.2]).view(1, 3, 1, 1)  # the model's colour bias
    known = torch.from_numpy(np.stack([_hole(), _hole()]))
    out = harmonic_offset(decoded, truth, known)
    assert torch.allclose(out, truth, atol=1e-6)
    # and detail of the sample inside the hole is kept: out - decoded is smooth (the harmonic offset)
    detail = decoded.clone()
    detail[:, :, 5, 5] += 0.5
    moved = harmonic_offset(detail, truth, known) - harmonic_offset(decoded, truth, known)
    assert float(moved[:, :, 5, 5].min()) == pytest.approx(0.5, abs=1e-6) and float(moved.abs().sum()) == pytest.approx(3.0, abs=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        harmonic_offset(decoded, truth[:, :2], known)
