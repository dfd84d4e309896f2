"""PCA shape model and the procedural face template."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitdiff.assets import AssetMissingError
from fitdiff.face import PCAShapeModel, ShapeModelError, make_face_template, make_procedural_shape_model
from fitdiff.face.shape_model import NPZ_KEYS


@pytest.fixture(scope="module")
def model() -> PCAShapeModel:
    return make_procedural_shape_model(n_vertices=3000, n_components=40, seed=0)


def _triangle_areas_and_normals(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cross = np.cross(
        vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]]
    )
    norm = np.linalg.norm(cross, axis=1)
    return norm / 2, cross / np.maximum(norm[:, None], 1e-30)


# ---------------------------------------------------------------- linear model


def test_forward_project_round_trip(model: PCAShapeModel) -> None:
    coeffs = torch.randn(4, model.n_components, generator=torch.Generator().manual_seed(1))
    vertices = model(coeffs)
    assert vertices.shape == (4, model.n_vertices, 3)
    torch.testing.assert_close(model.project(vertices), coeffs, atol=2e-3, rtol=0)
    # Different coefficients give different shapes (the model is not degenerate).
    assert (vertices[0] - vertices[1]).abs().max() > 1.0


def test_fewer_coefficients_pad_with_zeros(model: PCAShapeModel) -> None:
    coeffs = torch.randn(2, 7)
    padded = torch.cat([coeffs, torch.zeros(2, model.n_components - 7)], 1)
    torch.testing.assert_close(model(coeffs), model(padded))
    torch.testing.assert_close(model(torch.zeros(1, 0)), model.mean[None])
    with pytest.raises(ValueError, match="coefficients"):
        model(torch.zeros(1, model.n_components + 1))


def test_project_is_least_squares_for_out_of_span_shapes(model: PCAShapeModel) -> None:
    noisy = model.mean[None] + torch.randn(2, model.n_vertices, 3, generator=torch.Generator().manual_seed(2))
    coeffs = model.project(noisy)
    residual = (noisy - model(coeffs)).reshape(2, -1)
    # The residual of a least-squares fit is orthogonal to every component.
    along = residual @ model.components.reshape(model.n_components, -1).T
    assert along.abs().max() < 1e-2 * residual.norm()


def test_gradient_flows_through_forward(model: PCAShapeModel) -> None:
    coeffs = torch.zeros(3, model.n_components, requires_grad=True)
    weights = torch.randn(model.n_vertices, 3)
    (model(coeffs) * weights).sum().backward()
    expected = model.std * (model.components * weights).sum((1, 2))
    assert coeffs.grad is not None
    torch.testing.assert_close(coeffs.grad, expected.expand(3, -1), rtol=1e-4, atol=1e-3)


def test_components_orthonormal_and_std_decaying(model: PCAShapeModel) -> None:
    flat = model.components.reshape(model.n_components, -1).double()
    torch.testing.assert_close(
        flat @ flat.T, torch.eye(model.n_components, dtype=torch.float64), atol=1e-5, rtol=0
    )
    assert torch.all(model.std > 0)
    assert torch.all(model.std[1:] <= model.std[:-1])
    per_vertex_rms = model.std / model.n_vertices**0.5
    assert 1.0 < per_vertex_rms[0] < 10.0  # mm: plausible face-shape variation
    assert per_vertex_rms[-1] < 0.2 * per_vertex_rms[0]


def test_components_are_smooth(model: PCAShapeModel) -> None:
    """Displacements change little between neighbouring vertices compared with their size."""
    edges = torch.cat([model.faces[:, [0, 1]], model.faces[:, [1, 2]], model.faces[:, [2, 0]]])
    for k in (0, 10, model.n_components - 1):
        comp = model.components[k]
        jump = (comp[edges[:, 0]] - comp[edges[:, 1]]).norm(dim=-1).mean()
        size = comp.norm(dim=-1).mean()
        assert jump < 0.15 * size, f"component {k} is not smooth: {jump:.3g} vs {size:.3g}"


def test_deterministic_for_seed() -> None:
    a = make_procedural_shape_model(2000, 20, seed=3)
    b = make_procedural_shape_model(2000, 20, seed=3)
    c = make_procedural_shape_model(2000, 20, seed=4)
    assert torch.equal(a.components, b.components) and torch.equal(a.std, b.std)
    assert not torch.allclose(a.components, c.components, atol=1e-3)
    assert torch.equal(a.mean, c.mean)  # the template does not depend on the seed


def test_double_precision_and_geometry_delegation(model: PCAShapeModel) -> None:
    m64 = make_procedural_shape_model(2000, 10).double()
    vertices = m64(torch.randn(2, 10, dtype=torch.float64))
    assert vertices.dtype == torch.float64
    torch.testing.assert_close(m64.project(vertices), m64.project(vertices.clone()))
    normals = model.vertex_normals(model.mean[None])
    tangents, bitangents, normals2 = model.tangent_frames(model.mean[None])
    assert normals.shape == tangents.shape == bitangents.shape == (1, model.n_vertices, 3)
    torch.testing.assert_close(normals, normals2)
    tip = model.landmarks_5[2]
    assert normals[0, tip, 2] > 0.6  # the nose tip faces the camera
    assert tangents[0, tip, 0] > 0.8  # +u runs toward +x at the front
    assert bitangents[0, tip, 1] > 0.5  # +v runs up


# ---------------------------------------------------------------- files


def test_save_load_round_trip(model: PCAShapeModel, tmp_path) -> None:
    path = model.save(tmp_path / "model.npz")
    loaded = PCAShapeModel.load(path)
    assert loaded.model_id == model.model_id
    for key in NPZ_KEYS[2:]:
        assert torch.equal(getattr(loaded, key), getattr(model, key)), key
    coeffs = torch.randn(2, model.n_components)
    torch.testing.assert_close(loaded(coeffs), model(coeffs))
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == set(NPZ_KEYS)


def _rewrite(path, **changes) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def test_load_errors_name_file_and_key(model: PCAShapeModel, tmp_path) -> None:
    path = model.save(tmp_path / "model.npz")
    _rewrite(path, components=None)
    with pytest.raises(ShapeModelError, match=r"model\.npz.*'components'"):
        PCAShapeModel.load(path)

    path = model.save(tmp_path / "bad_faces.npz")
    faces = model.faces.numpy().copy()
    faces[0, 0] = model.n_vertices
    _rewrite(path, faces=faces)
    with pytest.raises(ShapeModelError, match=r"bad_faces\.npz.*'faces'.*indices"):
        PCAShapeModel.load(path)

    path = model.save(tmp_path / "bad_std.npz")
    _rewrite(path, std=model.std.numpy()[:-1])
    with pytest.raises(ShapeModelError, match=r"'std'.*shape"):
        PCAShapeModel.load(path)

    path = model.save(tmp_path / "future.npz")
    _rewrite(path, format_version=np.asarray(99))
    with pytest.raises(ShapeModelError, match="format_version"):
        PCAShapeModel.load(path)

    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip archive")
    with pytest.raises(ShapeModelError, match=r"corrupt\.npz"):
        PCAShapeModel.load(corrupt)
    with pytest.raises(FileNotFoundError, match="absent"):
        PCAShapeModel.load(tmp_path / "absent.npz")


def test_from_asset(model: PCAShapeModel, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FITDIFF_ASSETS", str(tmp_path))
    with pytest.raises(AssetMissingError, match="lsfm"):
        PCAShapeModel.from_asset("lsfm")
    model.save(tmp_path / "lsfm.npz")
    assert PCAShapeModel.from_asset("lsfm").model_id == model.model_id


# ---------------------------------------------------------------- template


def test_landmarks_valid_and_anatomical(model: PCAShapeModel) -> None:
    assert model.landmarks_68.shape == (68,) and model.landmarks_5.shape == (5,)
    assert int(model.landmarks_68.min()) >= 0 and int(model.landmarks_68.max()) < model.n_vertices
    assert len(torch.unique(model.landmarks_68)) == 68
    lm = model.landmarks(model.mean[None])[0]
    five = model.landmarks(model.mean[None], kind="5")[0]
    assert five.shape == (5, 3)
    # ArcFace order: subject's right eye (-x) first, nose tip forward-most, mouth below the eyes.
    assert five[0, 0] < 0 < five[1, 0] and five[3, 0] < 0 < five[4, 0]
    assert five[2, 2] == lm[:, 2].max()
    assert five[3, 1] < five[2, 1] < five[0, 1]
    jaw = lm[:17]
    assert torch.all(jaw[1:, 0] > jaw[:-1, 0])  # subject's right to left
    assert int(lm[:, 1].argmin()) == 8  # chin is lowest
    assert torch.all(lm[36:42, 0] < 0) and torch.all(lm[42:48, 0] > 0)  # right eye on -x
    assert torch.all(lm[17:27, 1] > lm[36:48, 1].max())  # brows above eyes
    assert lm[48:68, 1].max() < lm[31:36, 1].min()  # mouth below nostrils
    with pytest.raises(ValueError, match="kind"):
        model.landmarks(model.mean[None], kind="7")


@pytest.mark.parametrize("n_vertices", [2000, 50000])
def test_vertex_count_control(n_vertices: int) -> None:
    model = make_procedural_shape_model(n_vertices=n_vertices, n_components=50)
    assert abs(model.n_vertices - n_vertices) <= 0.01 * n_vertices
    assert model.n_components == 50


def test_template_mesh_sanity() -> None:
    template = make_face_template(4000)
    verts, faces, uvs = template.vertices, template.faces, template.uvs
    areas, normals = _triangle_areas_and_normals(verts, faces)
    assert areas.min() > 1e-3 * np.median(areas)  # no degenerate triangles

    # Outward: normals point away from the head centre nearly everywhere, toward +z on the face front.
    centroids = verts[faces].mean(1)
    outward = (normals * centroids).sum(1) > 0
    assert outward.mean() > 0.99
    front = (np.abs(centroids[:, 0]) < 50) & (np.abs(centroids[:, 1]) < 60) & (centroids[:, 2] > 60)
    assert front.sum() > 100
    assert (normals[front, 2] > 0).mean() > 0.9

    # Manifold disc: every edge used by one (boundary) or two triangles, Euler characteristic 1.
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() == 2
    assert len(verts) - len(unique) + len(faces) == 1
    # Consistent orientation: each interior edge is traversed in opposite directions by its two faces.
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)

    # One UV chart in [0, 1], no flipped (or degenerate) UV triangles.
    assert uvs.min() >= 0.0 and uvs.max() <= 1.0
    t = uvs[template.uv_faces]
    signed = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (
        t[:, 1, 1] - t[:, 0, 1]
    )
    assert signed.min() > 0

    # Face-sized, head centred near the origin, nose in front.
    width = verts[:, 0].max() - verts[:, 0].min()
    assert 130 < width < 180
    assert np.abs(verts.mean(0)[:2]).max() < 20
    nose = verts[template.landmarks_5[2]]
    assert nose[2] > verts[template.landmarks_5[0], 2] + 15  # nose tip well in front of the eyes


def test_template_rejects_tiny_meshes() -> None:
    with pytest.raises(ValueError, match="n_vertices"):
        make_face_template(10)
