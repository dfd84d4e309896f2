"""Binary glTF export: container layout (read by an independent parser), units, UV flip, tangents, material."""

from __future__ import annotations

import json
import math
import struct

import cv2
import numpy as np
import pytest
import torch

from fitdiff.export import (
    SPECULAR_EXTENSION,
    export_glb,
    object_to_tangent_normals,
    pack_glb,
    roughness_from_shininess,
    srgb_to_linear,
    unpack_glb,
)
from fitdiff.export.checks import check_mesh
from fitdiff.face import make_procedural_shape_model
from fitdiff.render import OrthographicCamera, Renderer, look_at, sample_texture
from fitdiff.render.mesh import tangent_frames

_COMPONENTS = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _parse_glb(data: bytes) -> tuple[dict, bytes]:
    """A minimal GLB reader written from the specification, independent of fitdiff.export.glb."""
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert magic == b"glTF" and version == 2 and length == len(data)
    json_length, json_type = struct.unpack("<II", data[12:20])
    assert json_type == 0x4E4F534A and json_length % 4 == 0
    document = json.loads(data[20 : 20 + json_length])
    offset = 20 + json_length
    bin_length, bin_type = struct.unpack("<II", data[offset : offset + 8])
    assert bin_type == 0x004E4942 and bin_length % 4 == 0
    assert offset + 8 + bin_length == length  # exactly two chunks
    return document, data[offset + 8 : offset + 8 + bin_length]


def _accessor(document: dict, binary: bytes, index: int) -> np.ndarray:
    acc = document["accessors"][index]
    view = document["bufferViews"][acc["bufferView"]]
    dtype = np.dtype(_COMPONENTS[acc["componentType"]]).newbyteorder("<")
    width = _WIDTH[acc["type"]]
    assert "byteStride" not in view  # tightly packed
    start = view["byteOffset"] + acc.get("byteOffset", 0)
    assert start % dtype.itemsize == 0
    flat = np.frombuffer(binary, dtype=dtype, count=acc["count"] * width, offset=start)
    assert acc["count"] * width * dtype.itemsize <= view["byteLength"]
    return flat.reshape(acc["count"], width) if width > 1 else flat


def _image(document: dict, binary: bytes, texture: int) -> np.ndarray:
    """(C, H, W) float [0, 1] of a texture's embedded PNG, row 0 = top, RGB order."""
    image = document["images"][document["textures"][texture]["source"]]
    assert image["mimeType"] == "image/png"
    view = document["bufferViews"][image["bufferView"]]
    raw = binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    data = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    scale = 65535.0 if data.dtype == np.uint16 else 255.0
    data = data[..., None] if data.ndim == 2 else data[..., ::-1]
    return np.transpose(data.astype(np.float64) / scale, (2, 0, 1))


@pytest.fixture(scope="module")
def avatar() -> dict:
    model = make_procedural_shape_model(n_vertices=2000, n_components=10)
    gen = torch.Generator().manual_seed(0)
    vertices = model(torch.randn(1, 10, generator=gen))[0].double()
    h, w = 48, 64
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    normals = torch.nn.functional.normalize(
        torch.stack([0.4 * (xx - 0.5), 0.3 * (yy - 0.5), torch.ones_like(xx)]), dim=0
    )
    return {
        "model": model,
        "vertices": vertices,
        "diffuse": torch.stack([xx, yy, 0.5 * torch.ones_like(xx)]).double(),
        "specular": (0.2 + 0.6 * xx * yy)[None].double(),
        "normals": normals.double(),
    }


@pytest.fixture(scope="module")
def glb(avatar: dict, tmp_path_factory) -> dict:
    model = avatar["model"]
    path = export_glb(
        tmp_path_factory.mktemp("glb"), avatar["vertices"], model.faces, model.uvs, model.uv_faces,
        avatar["diffuse"], avatar["specular"], avatar["normals"], name="face",
    )  # fmt: skip
    document, binary = _parse_glb(path.read_bytes())
    return {"path": path, "document": document, "binary": binary}


def test_container_and_document_layout(avatar: dict, glb: dict) -> None:
    doc, binary = glb["document"], glb["binary"]
    assert glb["path"].name == "face.glb"
    assert doc["asset"]["version"] == "2.0"
    assert doc["buffers"] == [{"byteLength": len(binary)}] and "uri" not in doc["buffers"][0]
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= len(binary)
    assert SPECULAR_EXTENSION in doc["extensionsUsed"]
    assert SPECULAR_EXTENSION not in doc.get("extensionsRequired", [])  # viewers without it still load
    (material,) = doc["materials"]
    pbr = material["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and 0.0 < pbr["roughnessFactor"] < 1.0
    specular = material["extensions"][SPECULAR_EXTENSION]
    textures = {pbr["baseColorTexture"]["index"], material["normalTexture"]["index"]}
    textures.add(specular["specularColorTexture"]["index"])
    assert len(textures) == 3 and specular["specularFactor"] == 1.0

    (primitive,) = doc["meshes"][0]["primitives"]
    assert primitive["mode"] == 4 and primitive["material"] == 0
    attributes = primitive["attributes"]
    assert set(attributes) == {"POSITION", "NORMAL", "TANGENT", "TEXCOORD_0"}
    model = avatar["model"]
    counts = {doc["accessors"][i]["count"] for i in attributes.values()}
    assert counts == {model.n_vertices}  # one chart, every vertex used: no vertex is split
    assert doc["accessors"][primitive["indices"]]["count"] == 3 * len(model.faces)
    position = doc["accessors"][attributes["POSITION"]]
    values = _accessor(doc, binary, attributes["POSITION"])
    assert position["min"] == values.min(axis=0).tolist() and position["max"] == values.max(axis=0).tolist()
    assert doc["accessors"][attributes["TANGENT"]]["type"] == "VEC4"
    assert doc["scenes"][doc["scene"]]["nodes"] == [0] and doc["nodes"][0]["mesh"] == 0


def test_positions_in_metres_and_faces_round_trip(avatar: dict, glb: dict) -> None:
    doc, binary = glb["document"], glb["binary"]
    primitive = doc["meshes"][0]["primitives"][0]
    positions = _accessor(doc, binary, primitive["attributes"]["POSITION"]).astype(np.float64)
    expected = avatar["vertices"].numpy() * 1e-3  # mm -> m
    np.testing.assert_allclose(positions, expected, rtol=1e-7, atol=1e-9)  # float32 rounding only
    assert doc["extras"]["units"] == "m"
    faces = _accessor(doc, binary, primitive["indices"]).reshape(-1, 3)
    np.testing.assert_array_equal(faces, avatar["model"].faces.numpy())


def test_uv_origin_is_flipped_and_a_texel_round_trips(avatar: dict, glb: dict) -> None:
    doc, binary = glb["document"], glb["binary"]
    primitive = doc["meshes"][0]["primitives"][0]
    texcoords = _accessor(doc, binary, primitive["attributes"]["TEXCOORD_0"]).astype(np.float64)
    uvs = avatar["model"].uvs.double().numpy()
    np.testing.assert_allclose(texcoords, np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], 1), atol=1e-7)

    # Sample the embedded base colour the glTF way (s right, t down from the top row) and our way.
    texture = doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"]
    image = srgb_to_linear(_image(doc, binary, texture))
    _, h, w = image.shape
    pixel = texcoords * [w, h]
    clear = np.all(np.abs(pixel - np.round(pixel)) > 1e-3, axis=1)  # not on a texel border (ties)
    assert clear.sum() > 0.5 * len(clear)
    rows = np.clip(np.floor(pixel[clear, 1]), 0, h - 1).astype(int)
    cols = np.clip(np.floor(pixel[clear, 0]), 0, w - 1).astype(int)
    ours = sample_texture(avatar["diffuse"][None], torch.from_numpy(uvs[clear])[None], mode="nearest")[
        0
    ].numpy()
    np.testing.assert_allclose(image[:, rows, cols].T, ours, atol=0.5 / 255 * 2.3)


def test_a_single_texel_lands_where_the_renderer_samples_it(avatar: dict, tmp_path) -> None:
    """One bright texel at row 10 (from the top), column 40: the glTF coordinates of its centre are
    (40.5 / W, 10.5 / H) and ours (40.5 / W, 1 - 10.5 / H)."""
    model = avatar["model"]
    diffuse = torch.zeros(3, 48, 64, dtype=torch.float64)
    diffuse[:, 10, 40] = 1.0
    path = export_glb(
        tmp_path, avatar["vertices"], model.faces, model.uvs, model.uv_faces, diffuse, avatar["specular"],
        avatar["normals"],
    )  # fmt: skip
    doc, binary = _parse_glb(path.read_bytes())
    image = _image(doc, binary, doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"])
    row, col = int(10.5 / 48 * 48), int(40.5 / 64 * 64)
    assert image[:, row, col].tolist() == [1.0, 1.0, 1.0] and image.sum() == 3.0
    ours = sample_texture(diffuse[None], torch.tensor([[[40.5 / 64, 1 - 10.5 / 48]]], dtype=torch.float64))
    assert ours.flatten().tolist() == [1.0, 1.0, 1.0]


def test_tangents_and_normals_are_the_renderers_frames(avatar: dict, glb: dict) -> None:
    doc, binary = glb["document"], glb["binary"]
    attributes = doc["meshes"][0]["primitives"][0]["attributes"]
    tangent = _accessor(doc, binary, attributes["TANGENT"]).astype(np.float64)
    normal = _accessor(doc, binary, attributes["NORMAL"]).astype(np.float64)
    model = avatar["model"]
    t, b, n = (
        x[0].numpy()
        for x in tangent_frames(avatar["vertices"][None], model.faces, model.uvs.double(), model.uv_faces)
    )
    np.testing.assert_allclose(np.linalg.norm(tangent[:, :3], axis=1), 1.0, atol=1e-6)
    assert set(np.unique(tangent[:, 3]).tolist()) <= {-1.0, 1.0}
    np.testing.assert_allclose(tangent[:, :3], t, atol=1e-6)
    np.testing.assert_allclose(normal, n, atol=1e-6)
    # glTF: bitangent = cross(normal, tangent.xyz) * tangent.w, which must be the renderer's +v direction.
    np.testing.assert_allclose(np.cross(normal, tangent[:, :3]) * tangent[:, 3:], b, atol=1e-5)


def test_material_maps_and_encodings(avatar: dict, glb: dict) -> None:
    doc, binary = glb["document"], glb["binary"]
    material = doc["materials"][0]
    base = _image(doc, binary, material["pbrMetallicRoughness"]["baseColorTexture"]["index"])
    np.testing.assert_allclose(srgb_to_linear(base), avatar["diffuse"].numpy(), atol=0.5 / 255 * 2.3)
    ext = material["extensions"][SPECULAR_EXTENSION]
    spec = _image(doc, binary, ext["specularColorTexture"]["index"])
    assert spec.shape[0] == 3  # grey specular albedo replicated to RGB
    np.testing.assert_allclose(
        srgb_to_linear(spec), np.repeat(avatar["specular"].numpy(), 3, 0), atol=0.5 / 255 * 2.3
    )
    normal = _image(doc, binary, material["normalTexture"]["index"]) * 2.0 - 1.0
    np.testing.assert_allclose(normal, avatar["normals"].numpy(), atol=1.5 / 255)
    assert ext["specularColorFactor"] == [2.0, 2.0, 2.0]
    assert material["pbrMetallicRoughness"]["roughnessFactor"] == pytest.approx(
        roughness_from_shininess(24.0)
    )


def test_trimesh_loads_the_glb(avatar: dict, glb: dict) -> None:
    trimesh = pytest.importorskip("trimesh")
    scene = trimesh.load(glb["path"], process=False)
    (mesh,) = scene.geometry.values()
    model = avatar["model"]
    assert len(mesh.vertices) == model.n_vertices and len(mesh.faces) == len(model.faces)
    np.testing.assert_allclose(mesh.vertices, avatar["vertices"].numpy() * 1e-3, rtol=1e-6, atol=1e-9)
    # trimesh turns glTF texture coordinates back into the OBJ convention (v up) on load.
    np.testing.assert_allclose(mesh.visual.uv, model.uvs.numpy(), atol=1e-6)
    material = mesh.visual.material
    assert material.baseColorTexture is not None and material.baseColorTexture.size == (64, 48)
    assert material.normalTexture is not None
    assert material.metallicFactor == 0.0


def test_seams_split_vertices_and_keep_geometry(tmp_path) -> None:
    """Two UV charts sharing an edge in 3D: the shared vertices are exported once per chart."""
    vertices = np.array([[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0], [20, 0, 0], [20, 10, 0]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]])
    uvs = np.array([[0, 0], [0.45, 0], [0.45, 1], [0, 1], [0.55, 0], [1, 0], [1, 1], [0.55, 1]])
    uv_faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    maps = (np.full((3, 8, 8), 0.5), np.full((1, 8, 8), 0.3), np.tile([[[0.0]], [[0.0]], [[1.0]]], (1, 8, 8)))
    doc, binary = _parse_glb(export_glb(tmp_path, vertices, faces, uvs, uv_faces, *maps).read_bytes())
    primitive = doc["meshes"][0]["primitives"][0]
    positions = _accessor(doc, binary, primitive["attributes"]["POSITION"]).astype(np.float64) * 1e3
    texcoords = _accessor(doc, binary, primitive["attributes"]["TEXCOORD_0"]).astype(np.float64)
    tri = _accessor(doc, binary, primitive["indices"]).reshape(-1, 3)
    assert len(positions) == 8  # vertices 1 and 2 appear in both charts
    np.testing.assert_allclose(positions[tri], vertices[faces], atol=1e-5)
    np.testing.assert_allclose(texcoords[tri][..., 0], uvs[uv_faces][..., 0], atol=1e-7)
    np.testing.assert_allclose(texcoords[tri][..., 1], 1.0 - uvs[uv_faces][..., 1], atol=1e-7)


def _plane(mirror: bool = False, rotation: np.ndarray | None = None, n: int = 6):
    """A 100 x 100 mm plane in z = 0 facing +z, u along +x (or -x when mirrored), v along +y."""
    xs = np.linspace(-50.0, 50.0, n)
    gx, gy = np.meshgrid(xs, xs)
    vertices = np.stack([gx, gy, np.zeros_like(gx)], -1).reshape(-1, 3)
    u = (gx.reshape(-1) + 50.0) / 100.0
    uvs = np.stack([1.0 - u if mirror else u, (gy.reshape(-1) + 50.0) / 100.0], -1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    if rotation is not None:
        vertices = vertices @ rotation.T
    return check_mesh(vertices, faces, uvs, faces)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


@pytest.mark.parametrize("mirror", [False, True])
def test_object_space_normal_field_in_tangent_space(mirror: bool) -> None:
    rotation = _rotation(np.array([1.0, 2.0, 0.5]), 0.7)
    mesh = _plane(mirror, rotation)
    geometric = rotation @ np.array([0.0, 0.0, 1.0])
    flat = np.broadcast_to(geometric[:, None, None], (3, 16, 16)).copy()
    np.testing.assert_allclose(
        object_to_tangent_normals(mesh, flat), np.array([0, 0, 1.0])[:, None, None] + 0 * flat, atol=1e-9
    )
    # A normal tilted toward the object's +x (rotated) reads as +u, or -u where the UVs are mirrored.
    a = math.radians(25.0)
    tilted = rotation @ np.array([math.sin(a), 0.0, math.cos(a)])
    result = object_to_tangent_normals(mesh, np.broadcast_to(tilted[:, None, None], (3, 16, 16)).copy())
    expected = np.array([-math.sin(a) if mirror else math.sin(a), 0.0, math.cos(a)])
    np.testing.assert_allclose(result, np.broadcast_to(expected[:, None, None], result.shape), atol=1e-9)


def test_converted_normal_map_renders_like_the_object_space_map(avatar: dict) -> None:
    """The renderer shades the converted tangent-space map like the object-space original: exactly at
    texel centres, and between them up to the frame's variation across a texel (the worst pixels sit on
    the nose; the error shrinks with the map's resolution: 99th percentile 3.2, 1.8, 1.2 degrees at
    64, 128, 256 texels)."""
    model = avatar["model"]
    mesh = check_mesh(avatar["vertices"], model.faces, model.uvs, model.uv_faces)
    res = 128
    yy, xx = torch.meshgrid(torch.linspace(0, 1, res), torch.linspace(0, 1, res), indexing="ij")
    obj_map = torch.nn.functional.normalize(
        torch.stack([0.5 * (xx - 0.5), 0.4 * (0.5 - yy), torch.ones_like(xx)]), dim=0
    ).double()
    tan_map = torch.from_numpy(object_to_tangent_normals(mesh, obj_map.numpy()))
    R, t = look_at(torch.tensor([0.0, 0.0, 500.0], dtype=torch.float64))
    camera = OrthographicCamera(R, t, 0.3, 0.3, 32.0, 32.0, (64, 64), znear=1.0, zfar=1e4)
    kwargs = {"uvs": model.uvs.double(), "uv_faces": model.uv_faces}
    ref = Renderer((64, 64), normal_space="object")(
        avatar["vertices"][None], model.faces, camera, normals=obj_map[None], **kwargs
    )
    out = Renderer((64, 64), normal_space="tangent")(
        avatar["vertices"][None], model.faces, camera, normals=tan_map[None], **kwargs
    )
    mask = ref.alpha[0, 0] > 0
    assert mask.sum() > 500
    cos = (ref.shading_normals[0][:, mask] * out.shading_normals[0][:, mask]).sum(0).clamp(-1, 1)
    angles = torch.rad2deg(torch.acos(cos))
    assert angles.median() < 0.1 and angles.quantile(0.99) < 3.0, (angles.median(), angles.quantile(0.99))
    unconverted = Renderer((64, 64), normal_space="tangent")(
        avatar["vertices"][None], model.faces, camera, normals=obj_map[None], **kwargs
    )
    cos = (ref.shading_normals[0][:, mask] * unconverted.shading_normals[0][:, mask]).sum(0).clamp(-1, 1)
    assert torch.rad2deg(torch.acos(cos)).median() > 10 * angles.median()  # the conversion matters


def test_glb_container_helpers_and_errors(tmp_path) -> None:
    data = pack_glb({"asset": {"version": "2.0"}}, b"\x01\x02\x03")
    document, binary = unpack_glb(data)
    assert document["buffers"] == [{"byteLength": 4}] and binary == b"\x01\x02\x03\x00"
    assert len(data) % 4 == 0
    with pytest.raises(ValueError, match="not a glTF 2.0 binary"):
        unpack_glb(b"GLTF" + data[4:])
    with pytest.raises(ValueError, match="header length"):
        unpack_glb(data[:-4])


def test_export_glb_rejects_bad_inputs(avatar: dict, tmp_path) -> None:
    model = avatar["model"]
    args = [avatar["vertices"], model.faces, model.uvs, model.uv_faces, avatar["diffuse"], avatar["specular"]]
    with pytest.raises(ValueError, match="normal_space"):
        export_glb(tmp_path, *args, avatar["normals"], normal_space="world")
    with pytest.raises(ValueError, match="normals"):
        export_glb(tmp_path, *args, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="roughness"):
        export_glb(tmp_path, *args, avatar["normals"], roughness=1.5)
    with pytest.raises(ValueError, match="name"):
        export_glb(tmp_path, *args, avatar["normals"], name="a b")
    assert not any(tmp_path.iterdir())
    out = export_glb(tmp_path / "named.glb", *args, avatar["normals"], metres_per_unit=1.0)
    assert out == tmp_path / "named.glb"
    doc, binary = _parse_glb(out.read_bytes())
    positions = _accessor(doc, binary, doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"])
    np.testing.assert_allclose(positions, avatar["vertices"].numpy(), rtol=1e-6)  # unscaled


def test_roughness_from_shininess() -> None:
    assert roughness_from_shininess(24.0) == pytest.approx(0.52664, abs=1e-5)
    assert roughness_from_shininess(1e6) < 0.05 and roughness_from_shininess(0.01) > 0.99
    with pytest.raises(ValueError):
        roughness_from_shininess(0.0)


def test_zero_normals_become_flat(avatar: dict, tmp_path, caplog) -> None:
    model = avatar["model"]
    normals = avatar["normals"].clone()
    normals[:, :4] = 0.0  # e.g. texels no triangle uses
    path = export_glb(
        tmp_path, avatar["vertices"], model.faces, model.uvs, model.uv_faces, avatar["diffuse"],
        avatar["specular"], normals,
    )  # fmt: skip
    assert "zero vectors replaced" in caplog.text
    doc, binary = _parse_glb(path.read_bytes())
    image = _image(doc, binary, doc["materials"][0]["normalTexture"]["index"]) * 2.0 - 1.0
    np.testing.assert_allclose(
        image[:, :4], np.broadcast_to([[[0.0]], [[0.0]], [[1.0]]], (3, 4, 64)), atol=1 / 255
    )
