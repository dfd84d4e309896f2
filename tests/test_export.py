"""OBJ/MTL/PNG avatar export and its reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitdiff.export import (
    DEFAULT_SHININESS,
    export_obj,
    linear_to_srgb,
    load_obj,
    read_normal_map,
    read_texture,
    srgb_to_linear,
)
from fitdiff.face import make_procedural_shape_model

# 8-bit sRGB quantisation seen in linear values: half a step times the curve's largest slope (2.28 at 1).
_SRGB_8BIT = 0.5 / 255 * 2.3


@pytest.fixture(scope="module")
def avatar() -> dict:
    model = make_procedural_shape_model(n_vertices=2000, n_components=10)
    gen = torch.Generator().manual_seed(0)
    vertices = model(torch.randn(1, 10, generator=gen))[0]
    h, w = 48, 64
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    diffuse = torch.stack([xx, yy, 0.5 * torch.ones_like(xx)])  # gradients reveal any flip or swap
    specular = (0.2 + 0.6 * xx * yy)[None]
    normals = torch.nn.functional.normalize(
        torch.stack([0.4 * (xx - 0.5), 0.3 * (yy - 0.5), torch.ones_like(xx)])
        + 0.05 * torch.randn(3, h, w, generator=gen),
        dim=0,
    )
    return {
        "model": model,
        "vertices": vertices,
        "diffuse": diffuse,
        "specular": specular,
        "normals": normals,
    }


def _export(avatar: dict, target, **kwargs) -> dict:
    model = avatar["model"]
    return export_obj(
        target, avatar["vertices"], model.faces, model.uvs, model.uv_faces,
        avatar["diffuse"], avatar["specular"], avatar["normals"], **kwargs,
    )  # fmt: skip


def test_obj_round_trip(avatar: dict, tmp_path) -> None:
    paths = _export(avatar, tmp_path)
    assert paths["obj"] == tmp_path / "avatar.obj"
    data = load_obj(paths["obj"])
    model = avatar["model"]
    np.testing.assert_allclose(data["vertices"], avatar["vertices"].double().numpy(), atol=1e-5)
    np.testing.assert_array_equal(data["faces"], model.faces.numpy())
    np.testing.assert_array_equal(data["uv_faces"], model.uv_faces.numpy())
    np.testing.assert_allclose(data["uvs"], model.uvs.double().numpy(), atol=1e-6)
    assert data["vertex_normal_faces"].size == 0
    materials = data["materials"]
    assert materials["map_Kd"] == paths["diffuse"].resolve()
    assert materials["norm"] == materials["map_Bump"] == paths["normals"].resolve()

    assert data["colour_encoding"] == "srgb"
    diffuse = read_texture(materials["map_Kd"], srgb=True)
    np.testing.assert_allclose(diffuse, avatar["diffuse"].numpy(), atol=_SRGB_8BIT)
    specular = read_texture(materials["map_Ks"], srgb=True)
    assert specular.shape == (1, 48, 64)
    np.testing.assert_allclose(specular, avatar["specular"].numpy(), atol=_SRGB_8BIT)
    normals = read_normal_map(materials["norm"])
    np.testing.assert_allclose(normals, avatar["normals"].numpy(), atol=1e-4)  # 16-bit quantisation


def test_mtl_and_obj_layout(avatar: dict, tmp_path) -> None:
    paths = _export(avatar, tmp_path / "out" / "face", normals_bits=8)
    assert paths["obj"] == tmp_path / "out" / "face.obj"
    mtl = paths["mtl"].read_text().splitlines()
    assert "newmtl face" in mtl
    for keyword in ("Kd", "Ks", "Ns", "map_Kd", "map_Ks", "norm"):
        assert any(line.split()[0] == keyword for line in mtl if line), keyword
    assert "map_Bump -bm 1.000000 face_normals.png" in mtl
    assert all("/" not in line for line in mtl if line.startswith(("map_", "norm")))  # relative names
    lines = paths["obj"].read_text().splitlines()
    assert "mtllib face.mtl" in lines and "usemtl face" in lines
    first_face = next(i for i, line in enumerate(lines) if line.startswith("f "))
    last_vertex = max(i for i, line in enumerate(lines) if line.startswith("v "))
    assert last_vertex < first_face
    indices = [int(c.split("/")[0]) for line in lines if line.startswith("f ") for c in line.split()[1:]]
    assert min(indices) == 1 and max(indices) == avatar["model"].n_vertices  # 1-based
    normals = read_normal_map(paths["normals"])
    np.testing.assert_allclose(normals, avatar["normals"].numpy(), atol=1.5 / 255)  # 8-bit quantisation


def test_vertex_normals_and_obj_path(avatar: dict, tmp_path) -> None:
    model = avatar["model"]
    vn = model.vertex_normals(avatar["vertices"][None])[0]
    paths = _export(avatar, tmp_path / "named.obj", vertex_normals=vn, name="ignored")
    assert paths["obj"].name == "named.obj" and paths["diffuse"].name == "named_diffuse.png"
    data = load_obj(paths["obj"])
    np.testing.assert_array_equal(data["vertex_normal_faces"], model.faces.numpy())
    np.testing.assert_allclose(data["vertex_normals"], vn.double().numpy(), atol=1e-5)


def test_load_obj_handles_quads_and_negative_indices(tmp_path) -> None:
    path = tmp_path / "quad.obj"
    path.write_text(
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nf -4/1 -3/2 -2/3 -1/4\n"
    )
    data = load_obj(path)
    np.testing.assert_array_equal(data["faces"], [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(data["uv_faces"], [[0, 1, 2], [0, 2, 3]])
    assert data["mtllib"] is None and data["materials"] == {}
    path.write_text("v 0 0 zero\n")
    with pytest.raises(ValueError, match=r"quad\.obj:1"):
        load_obj(path)


def test_export_rejects_bad_inputs(avatar: dict, tmp_path) -> None:
    model = avatar["model"]
    args = [model.faces, model.uvs, model.uv_faces, avatar["diffuse"], avatar["specular"], avatar["normals"]]
    with pytest.raises(ValueError, match="vertices"):
        export_obj(tmp_path, avatar["vertices"][None], *args)
    with pytest.raises(ValueError, match="specular"):
        export_obj(tmp_path, avatar["vertices"], *args[:4], torch.zeros(2, 4, 4), args[5])
    bad_faces = model.faces.clone()
    bad_faces[0, 0] = model.n_vertices
    with pytest.raises(ValueError, match="faces indices"):
        export_obj(tmp_path, avatar["vertices"], bad_faces, *args[1:])
    with pytest.raises(ValueError, match="name"):
        export_obj(tmp_path, avatar["vertices"], *args, name="my avatar")
    assert not any(tmp_path.iterdir())  # nothing written on invalid input


def test_third_party_reader_sees_the_obj_uv_convention(avatar: dict, tmp_path) -> None:
    """trimesh (OBJ convention: v = 0 is the bottom image row) finds the texture and samples it as we do."""
    trimesh = pytest.importorskip("trimesh", reason="trimesh (dev extra) is not installed")
    paths = _export(avatar, tmp_path)
    mesh = trimesh.load(paths["obj"], process=False, force="mesh")
    assert len(mesh.faces) == len(avatar["model"].faces)
    image = mesh.visual.material.image
    assert image is not None and image.size == (64, 48)
    encoded = trimesh.visual.color.uv_to_color(np.array([[0.1, 0.9], [0.9, 0.1]]), image)[:, :3] / 255.0
    colours = srgb_to_linear(encoded)
    # diffuse R = x (u), G = y measured from the top row, so v = 0.9 is near the top: G ~ 0.1.
    np.testing.assert_allclose(colours[:, 0], [0.1, 0.9], atol=0.03)
    np.testing.assert_allclose(colours[:, 1], [0.1, 0.9], atol=0.03)


def test_linear_colour_encoding_writes_raw_values(avatar: dict, tmp_path) -> None:
    paths = _export(avatar, tmp_path, colour_encoding="linear")
    assert load_obj(paths["obj"])["colour_encoding"] == "linear"
    np.testing.assert_allclose(
        read_texture(paths["diffuse"]), avatar["diffuse"].numpy(), atol=0.5 / 255 + 1e-6
    )
    with pytest.raises(ValueError, match="colour_encoding"):
        _export(avatar, tmp_path, colour_encoding="gamma")


def test_srgb_curve_round_trips_and_matches_reference_points() -> None:
    x = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)
    # IEC 61966-2-1: linear 0.0031308 sits at the junction (12.92 x); 0.5 -> 0.735357; 0.18 -> 0.461356
    np.testing.assert_allclose(
        linear_to_srgb(np.array([0.0031308, 0.18, 0.5])), [0.04045, 0.461356, 0.735357], atol=2e-6
    )


def test_shininess_matches_the_face_scene() -> None:
    from fitdiff.face.scene import DEFAULT_SHININESS as SCENE_SHININESS

    assert DEFAULT_SHININESS == SCENE_SHININESS


def test_package_keeps_the_flat_import_path() -> None:
    import fitdiff.export as export

    for name in ("export_obj", "load_obj", "read_texture", "read_normal_map"):
        assert callable(getattr(export, name)), name
