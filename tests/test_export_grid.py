"""avatar_grid / save_png: layout, encodings, batched inputs, atomic PNG writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fitdiff.export import avatar_grid, linear_to_srgb, save_png


def _maps(diffuse: float, specular: float = 0.2, res: int = 16) -> dict:
    return {
        "diffuse": torch.full((3, res, res), diffuse),
        "specular": torch.full((1, res, res), specular),
        "normals": torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1).expand(3, res, res),
    }


def _cell(grid: np.ndarray, row: int, col: int, tile: int, padding: int = 2) -> np.ndarray:
    top, left = padding + row * (tile + padding), padding + col * (tile + padding)
    return grid[top : top + tile, left : left + tile]


def test_layout_values_and_blank_cells() -> None:
    renders = [torch.full((3, 32, 32), 0.25), None]  # the second avatar has no render
    grid = avatar_grid([_maps(0.5), _maps(0.1)], renders=renders)
    tile, pad = 16, 2
    assert grid.dtype == np.uint8 and grid.shape == (2 * tile + 3 * pad, 4 * tile + 5 * pad, 3)
    srgb = lambda x: np.round(linear_to_srgb(np.array(x)) * 255)  # noqa: E731
    assert (_cell(grid, 0, 0, tile) == srgb(0.5)).all()  # diffuse, sRGB-encoded for display
    assert (_cell(grid, 1, 0, tile) == srgb(0.1)).all()
    assert (_cell(grid, 0, 1, tile) == srgb(0.2)).all()  # grey specular shown as grey
    assert (_cell(grid, 0, 2, tile) == [128, 128, 255]).all()  # normals (n + 1) / 2
    assert (_cell(grid, 0, 3, tile) == 64).all()  # render: display values, resized to the tile
    assert (_cell(grid, 1, 3, tile) == 255).all()  # no render: blank in the padding colour
    raw = avatar_grid([_maps(0.5)], srgb=False)
    assert (_cell(raw, 0, 0, tile) == 128).all() and raw.shape[1] == 3 * tile + 4 * pad


def test_ground_truth_rows_batched_inputs_and_several_renders() -> None:
    batch = {
        key: torch.stack([_maps(0.3)[key], _maps(0.6)[key]]) for key in ("diffuse", "specular", "normals")
    }
    truth = {key: torch.stack([_maps(0.9)[key], _maps(0.9)[key]]) for key in batch}
    renders = torch.rand(2, 3, 3, 24, 24)  # three renders per avatar
    grid = avatar_grid(
        batch, renders=renders, ground_truth=truth, ground_truth_renders=renders[:, :1], tile=20
    )
    tile, pad = 20, 2
    assert grid.shape == (4 * tile + 5 * pad, 6 * tile + 7 * pad, 3)
    srgb = lambda x: np.round(linear_to_srgb(np.array(x)) * 255)  # noqa: E731
    assert (_cell(grid, 0, 0, tile) == srgb(0.3)).all() and (_cell(grid, 2, 0, tile) == srgb(0.6)).all()
    assert (_cell(grid, 1, 0, tile) == srgb(0.9)).all() and (_cell(grid, 3, 0, tile) == srgb(0.9)).all()
    assert (_cell(grid, 1, 4, tile) == 255).all()  # ground truth has one render: the rest blank


def test_non_square_renders_keep_their_aspect_and_low_precision_inputs() -> None:
    maps = {k: v.to(torch.bfloat16) for k, v in _maps(0.5).items()}
    grid = avatar_grid([maps], renders=[torch.zeros(3, 8, 16)], pad_value=1.0)
    cell = _cell(grid, 0, 3, 16)
    assert (cell[4:12] == 0).all() and (cell[:4] == 255).all() and (cell[12:] == 255).all()  # letterboxed


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="at least one"):
        avatar_grid([])
    with pytest.raises(KeyError, match="normals"):
        avatar_grid([{"diffuse": torch.zeros(3, 4, 4), "specular": torch.zeros(1, 4, 4)}])
    with pytest.raises(ValueError, match="renders: 1 entries for 2"):
        avatar_grid([_maps(0.5), _maps(0.5)], renders=[None])
    with pytest.raises(ValueError, match="ground_truth has 1"):
        avatar_grid([_maps(0.5), _maps(0.5)], ground_truth=[_maps(0.5)])
    with pytest.raises(ValueError, match="NaN"):
        avatar_grid([{**_maps(0.5), "diffuse": torch.full((3, 4, 4), float("nan"))}])


def test_save_png_is_atomic_and_round_trips(tmp_path) -> None:
    grid = avatar_grid([_maps(0.5)], renders=[torch.rand(3, 16, 16)])
    path = save_png(tmp_path / "out" / "grid.png", grid)
    assert path == tmp_path / "out" / "grid.png"
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary file left
    tensor = torch.rand(3, 5, 7)
    back = np.asarray(Image.open(save_png(tmp_path / "t.png", tensor)))
    np.testing.assert_array_equal(back, (tensor * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match="uint8"):
        save_png(tmp_path / "bad.png", grid.astype(np.float32))
    assert not (tmp_path / "bad.png").exists()
