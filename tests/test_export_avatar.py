"""export_avatar: one call writes the OBJ set and the GLB, consistently."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitdiff.export import (
    export_avatar,
    load_obj,
    object_to_tangent_normals,
    read_normal_map,
    read_texture,
    unpack_glb,
)
from fitdiff.export.checks import check_mesh
from fitdiff.face import make_procedural_shape_model


@pytest.fixture(scope="module")
def avatar() -> dict:
    model = make_procedural_shape_model(n_vertices=2000, n_components=10)
    vertices = model(torch.randn(1, 10, generator=torch.Generator().manual_seed(1)))[0]
    h = w = 32
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    maps = {
        "diffuse": torch.stack([xx, yy, 0.3 * torch.ones_like(xx)])[None],  # a batch of one is accepted
        "specular": (0.1 + 0.5 * xx)[None],
        "normals": torch.nn.functional.normalize(
            torch.stack([0.2 * (xx - 0.5), 0 * xx, torch.ones_like(xx)]), dim=0
        ),
    }
    return {"model": model, "vertices": vertices, "maps": maps}


def _export(avatar: dict, out, **kwargs) -> dict:
    model = avatar["model"]
    return export_avatar(out, "sample_000", avatar["vertices"], model.faces, model.uvs, avatar["maps"],
                         uv_faces=model.uv_faces, **kwargs)  # fmt: skip


def test_writes_obj_set_and_glb(avatar: dict, tmp_path) -> None:
    paths = _export(avatar, tmp_path / "samples")
    assert set(paths) == {"obj", "mtl", "diffuse", "specular", "normals", "glb"}
    assert all(p.is_file() and p.parent == tmp_path / "samples" for p in paths.values())
    assert paths["glb"].name == "sample_000.glb" and paths["obj"].name == "sample_000.obj"
    assert not [p for p in (tmp_path / "samples").iterdir() if p.name.startswith(".")]  # no temp files left
    data = load_obj(paths["obj"])
    model = avatar["model"]
    np.testing.assert_array_equal(data["vertex_normal_faces"], model.faces.numpy())
    np.testing.assert_allclose(
        data["vertex_normals"], model.vertex_normals(avatar["vertices"][None])[0].numpy(), atol=1e-5
    )
    diffuse = read_texture(paths["diffuse"], srgb=data["colour_encoding"] == "srgb")
    np.testing.assert_allclose(diffuse, avatar["maps"]["diffuse"][0].numpy(), atol=0.5 / 255 * 2.3)
    document, _ = unpack_glb(paths["glb"])
    assert document["materials"][0]["name"] == "sample_000"


def test_object_space_normals_are_converted_once_for_both_formats(avatar: dict, tmp_path) -> None:
    model = avatar["model"]
    obj_map = torch.nn.functional.normalize(
        torch.tensor([0.2, -0.1, 1.0]).view(3, 1, 1).expand(3, 32, 32), dim=0
    )
    maps = {**avatar["maps"], "normals": obj_map}
    paths = export_avatar(tmp_path, "obj_space", avatar["vertices"], model.faces, model.uvs, maps,
                          uv_faces=model.uv_faces, normal_space="object")  # fmt: skip
    mesh = check_mesh(avatar["vertices"], model.faces, model.uvs, model.uv_faces)
    expected = object_to_tangent_normals(mesh, obj_map.double().numpy())
    assert np.abs(expected - obj_map.numpy()).max() > 0.5  # the conversion changes the map
    np.testing.assert_allclose(read_normal_map(paths["normals"]), expected, atol=1e-4)  # 16-bit OBJ map
    document, binary = unpack_glb(paths["glb"])
    image = document["images"][
        document["textures"][document["materials"][0]["normalTexture"]["index"]]["source"]
    ]
    view = document["bufferViews"][image["bufferView"]]
    png = tmp_path / "glb_normals.png"
    png.write_bytes(binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]])
    np.testing.assert_allclose(read_normal_map(png), expected, atol=1.5 / 255)  # 8-bit GLB map


def test_format_subset_and_errors(avatar: dict, tmp_path) -> None:
    paths = _export(avatar, tmp_path / "glb_only", formats=("glb",))
    assert set(paths) == {"glb"}
    model = avatar["model"]
    with pytest.raises(KeyError, match="specular"):
        export_avatar(tmp_path, "x", avatar["vertices"], model.faces, model.uvs,
                      {"diffuse": avatar["maps"]["diffuse"], "normals": avatar["maps"]["normals"]},
                      uv_faces=model.uv_faces)  # fmt: skip
    with pytest.raises(ValueError, match="formats"):
        _export(avatar, tmp_path, formats=("fbx",))
    with pytest.raises(ValueError, match="name"):
        export_avatar(tmp_path, "bad name", avatar["vertices"], model.faces, model.uvs, avatar["maps"])
    with pytest.raises(ValueError, match="batch of 2"):
        maps = {**avatar["maps"], "diffuse": avatar["maps"]["diffuse"].expand(2, -1, -1, -1)}
        export_avatar(
            tmp_path, "x", avatar["vertices"], model.faces, model.uvs, maps, uv_faces=model.uv_faces
        )
    assert not (tmp_path / "x.obj").exists()


def test_per_vertex_uvs_need_no_uv_faces(avatar: dict, tmp_path) -> None:
    model = avatar["model"]  # the procedural template has one UV per vertex
    paths = export_avatar(tmp_path, "plain", avatar["vertices"], model.faces, model.uvs, avatar["maps"])
    np.testing.assert_array_equal(load_obj(paths["obj"])["uv_faces"], model.faces.numpy())
    with pytest.raises(ValueError, match="one row per vertex"):
        export_avatar(tmp_path, "plain", avatar["vertices"], model.faces, model.uvs[:-1], avatar["maps"])
