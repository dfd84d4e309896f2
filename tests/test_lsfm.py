"""LSFM .mat conversion into the PCA shape model format."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.io
import torch

from fitdiff.face import PCAShapeModel, ShapeModelError, make_procedural_shape_model
from fitdiff.face.lsfm import convert_lsfm_mat, cylindrical_uvs, main, read_lsfm_mat


@pytest.fixture(scope="module")
def source() -> PCAShapeModel:
    return make_procedural_shape_model(n_vertices=1200, n_components=12, seed=5)


def _lsfm_fields(model: PCAShapeModel) -> dict[str, np.ndarray]:
    """The model in LSFM's public layout: flat interleaved mean, (3V, K) components, 1-based trilist."""
    comps = model.components.double().numpy().reshape(model.n_components, -1)
    return {
        "mean": model.mean.double().numpy().reshape(-1),
        "components": comps.T,
        "eigenvalues": model.std.double().numpy() ** 2,
        "trilist": (model.faces.numpy() + 1).astype(np.uint32),
        "landmarks_68": model.landmarks_68.numpy() + 1,
        "n_training_samples": np.array([[9663]]),
    }


def _assert_same_shapes(a: PCAShapeModel, b: PCAShapeModel, k: int) -> None:
    coeffs = torch.randn(3, k, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a(coeffs), b(coeffs), atol=1e-3, rtol=0)


def test_round_trip_lsfm_layout(source: PCAShapeModel, tmp_path) -> None:
    mat = tmp_path / "lsfm.mat"
    scipy.io.savemat(mat, _lsfm_fields(source))
    out = convert_lsfm_mat(mat, tmp_path / "lsfm.npz", model_id="lsfm-test")
    model = PCAShapeModel.load(out)
    assert model.model_id == "lsfm-test"
    assert model.n_vertices == source.n_vertices and model.n_components == source.n_components
    _assert_same_shapes(model, source, source.n_components)
    torch.testing.assert_close(model.std, source.std, rtol=1e-5, atol=0)
    assert torch.equal(model.faces, source.faces)
    assert torch.equal(model.landmarks_68, source.landmarks_68)
    # Without landmarks_5 in the file they are derived from the 68: right eye on -x, nose tip, corners.
    five = model.landmarks(model.mean[None], "5")[0]
    assert five[0, 0] < 0 < five[1, 0]
    assert model.landmarks_5[2] == source.landmarks_68[30]
    # No UVs in the file: a cylindrical unwrap, one chart in [0, 1], no flipped triangles.
    assert model.uvs.min() >= 0 and model.uvs.max() <= 1
    t = model.uvs[model.uv_faces]
    signed = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (
        t[:, 1, 1] - t[:, 0, 1]
    )
    assert signed.min() > 0


def test_alternative_layouts_uvs_and_winding(source: PCAShapeModel, tmp_path, caplog) -> None:
    fields = _lsfm_fields(source)
    fields["mean"] = source.mean.double().numpy()  # (V, 3)
    fields["components"] = fields["components"].T  # (K, 3V)
    fields["eigenvalues"] = fields["eigenvalues"][:, None]  # (K, 1)
    fields["trilist"] = source.faces.numpy()[:, [0, 2, 1]]  # 0-based, clockwise
    fields["landmarks_68"] = source.landmarks_68.numpy()
    fields["landmarks_5"] = source.landmarks_5.numpy()
    fields["texcoords"] = source.uvs.double().numpy().T  # (2, V)
    mat = tmp_path / "alt.mat"
    scipy.io.savemat(mat, fields)
    with caplog.at_level(logging.WARNING, logger="fitdiff.face.lsfm"):
        model = read_lsfm_mat(mat, n_components=5)
    assert "flipping" in caplog.text
    assert model.n_components == 5
    _assert_same_shapes(model, source, 5)
    assert torch.equal(model.faces, source.faces)  # winding restored to counter-clockwise
    assert torch.equal(model.landmarks_5, source.landmarks_5)
    torch.testing.assert_close(model.uvs, source.uvs)


def test_unnormalised_components_fold_into_std(source: PCAShapeModel, tmp_path) -> None:
    fields = _lsfm_fields(source)
    scale = np.linspace(0.5, 3.0, source.n_components)
    fields["components"] = fields["components"] * scale
    fields["eigenvalues"] = fields["eigenvalues"] / scale**2
    scipy.io.savemat(tmp_path / "scaled.mat", fields)
    model = read_lsfm_mat(tmp_path / "scaled.mat")
    _assert_same_shapes(model, source, source.n_components)


@pytest.mark.parametrize("missing", ["mean", "components", "eigenvalues", "trilist", "landmarks_68"])
def test_missing_field_is_named(source: PCAShapeModel, tmp_path, missing: str) -> None:
    fields = _lsfm_fields(source)
    del fields[missing]
    mat = tmp_path / "partial.mat"
    scipy.io.savemat(mat, fields)
    with pytest.raises(ShapeModelError, match=rf"partial\.mat.*{missing}"):
        read_lsfm_mat(mat)


def test_landmarks_argument_and_bad_values(source: PCAShapeModel, tmp_path) -> None:
    fields = _lsfm_fields(source)
    del fields["landmarks_68"]
    mat = tmp_path / "nolm.mat"
    scipy.io.savemat(mat, fields)
    model = read_lsfm_mat(mat, landmarks_68=source.landmarks_68.numpy())
    assert torch.equal(model.landmarks_68, source.landmarks_68)
    with pytest.raises(ShapeModelError, match="landmarks_68"):
        read_lsfm_mat(mat, landmarks_68=np.arange(10))
    fields = _lsfm_fields(source)
    fields["eigenvalues"] = fields["eigenvalues"][:-1]
    scipy.io.savemat(mat, fields)
    with pytest.raises(ShapeModelError, match="eigenvalues"):
        read_lsfm_mat(mat)


def test_cli(source: PCAShapeModel, tmp_path) -> None:
    fields = _lsfm_fields(source)
    del fields["landmarks_68"]
    scipy.io.savemat(tmp_path / "in.mat", fields)
    np.savetxt(tmp_path / "lm68.txt", source.landmarks_68.numpy(), fmt="%d")
    out = tmp_path / "out.npz"
    args = [
        str(tmp_path / "in.mat"),
        str(out),
        "--components",
        "4",
        "--landmarks68",
        str(tmp_path / "lm68.txt"),
    ]
    assert main(args) == 0
    model = PCAShapeModel.load(out)
    assert model.n_components == 4 and model.model_id == "lsfm"
    _assert_same_shapes(model, source, 4)
    assert main([str(tmp_path / "in.mat"), str(tmp_path / "fail.npz")]) == 1  # no landmarks anywhere
    assert not (tmp_path / "fail.npz").exists()


def test_cylindrical_uvs_split_the_back_seam() -> None:
    """A closed ring around the vertical axis unwraps without wrap-around triangles."""
    n, rows = 24, 4
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    verts = np.array([[np.sin(a) * 50, y * 20.0, np.cos(a) * 50] for y in range(rows) for a in angles])
    faces = []
    for r in range(rows - 1):
        for c in range(n):
            a, b = r * n + c, r * n + (c + 1) % n
            faces += [[a, b, b + n], [a, b + n, a + n]]
    uvs, uv_faces = cylindrical_uvs(verts, np.array(faces))
    assert len(uvs) > len(verts)  # seam vertices were duplicated
    t = uvs[uv_faces]
    signed = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (
        t[:, 1, 1] - t[:, 0, 1]
    )
    assert signed.min() > 0
    assert np.ptp(t[..., 0], axis=1).max() < 0.2  # no triangle spans the chart
