"""Lighting and shading against closed forms: SH irradiance, Lambert, Blinn-Phong, normal and UV maps."""

import math

import pytest
import torch

from fitdiff.render import (
    DirectionalLights,
    OrthographicCamera,
    PerspectiveCamera,
    Renderer,
    ambient_sh,
    look_at,
    sh_basis,
    sh_irradiance,
)
from fitdiff.render.primitives import grid_plane


def test_sh_basis_is_orthonormal_on_the_sphere():
    # Gauss-Legendre in cos(theta) x uniform phi integrates these degree <= 4 polynomials exactly.
    nodes, weights = map(torch.from_numpy, __import__("numpy").polynomial.legendre.leggauss(12))
    phi = torch.arange(24, dtype=torch.float64) * 2 * math.pi / 24
    ct, ph = torch.meshgrid(nodes, phi, indexing="ij")
    st = (1 - ct**2).sqrt()
    dirs = torch.stack([st * ph.cos(), st * ph.sin(), ct], -1).reshape(-1, 3)
    w = (weights[:, None] * (2 * math.pi / 24)).expand(12, 24).reshape(-1)
    basis = sh_basis(dirs)
    gram = basis.T @ (basis * w[:, None])
    assert torch.allclose(gram, torch.eye(9, dtype=torch.float64), atol=1e-10)


def test_sh_irradiance_equals_cosine_weighted_integral_of_radiance():
    torch.manual_seed(0)
    coeffs = torch.randn(1, 9, 2, dtype=torch.float64)
    normals = torch.nn.functional.normalize(torch.randn(1, 5, 3, dtype=torch.float64), dim=-1)
    n_t, n_p = 600, 1200  # midpoint rule on the sphere
    theta = (torch.arange(n_t, dtype=torch.float64) + 0.5) * math.pi / n_t
    phi = (torch.arange(n_p, dtype=torch.float64) + 0.5) * 2 * math.pi / n_p
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    dirs = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], -1).reshape(-1, 3)
    d_omega = (th.sin() * (math.pi / n_t) * (2 * math.pi / n_p)).reshape(-1)
    radiance = sh_basis(dirs) @ coeffs[0]  # (M, 2)
    cos = (normals[0] @ dirs.T).clamp(min=0)  # (5, M)
    integral = (cos * d_omega) @ radiance / math.pi
    assert torch.allclose(sh_irradiance(normals, coeffs)[0], integral, atol=2e-4)


def test_sh_closed_form_for_ambient_and_linear_terms():
    normals = torch.tensor([[[0.0, 0.0, 1.0], [0.6, 0.0, 0.8], [0.0, -1.0, 0.0]]])
    coeffs = torch.zeros(1, 9, 1)
    coeffs[0, 0, 0] = 2.0  # ambient
    coeffs[0, 2, 0] = 1.5  # Y10 ~ z
    expected = 2.0 / (2 * math.sqrt(math.pi)) + (2.0 / 3.0) * 1.5 * math.sqrt(3 / (4 * math.pi)) * normals[0, :, 2]
    assert torch.allclose(sh_irradiance(normals, coeffs)[0, :, 0], expected, atol=1e-6)


def _plane_scene(perspective: bool = True, n: int = 4):
    verts, faces, uvs = grid_plane(n=n, size=100.0)
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 300.0]]))
    if perspective:
        cam = PerspectiveCamera.from_fov(rot, trans, (32, 32), 20.0)
    else:
        cam = OrthographicCamera(rot, trans, fx=0.25, fy=0.25, cx=16.0, cy=16.0, image_size=(32, 32))
    return verts.unsqueeze(0), faces, uvs, cam


def test_ambient_sh_reproduces_the_albedo_and_directional_lambert_follows_cosine():
    verts, faces, uvs, cam = _plane_scene()
    albedo = torch.rand(1, 3, 8, 8)
    r = Renderer((32, 32))
    unlit = r(verts, faces, cam, uvs=uvs, uv_faces=faces, diffuse=albedo)
    mask = unlit.alpha[0, 0] > 0
    assert mask.float().mean() > 0.8
    amb = r(verts, faces, cam, uvs=uvs, uv_faces=faces, diffuse=albedo, sh_coeffs=ambient_sh(1.0, 1))
    assert torch.allclose(amb.image, unlit.image, atol=1e-5)
    angle = math.radians(60.0)
    lights = DirectionalLights(torch.tensor([[math.sin(angle), 0.0, math.cos(angle)]]) * 3.0,
                               color=torch.tensor([[1.0, 0.5, 0.25]]), intensity=torch.tensor([0.8]))
    lit = r(verts, faces, cam, uvs=uvs, uv_faces=faces, diffuse=albedo, lights=lights)
    scale = torch.tensor([1.0, 0.5, 0.25]).view(3, 1) * 0.8 * math.cos(angle)
    assert torch.allclose(lit.image[0][:, mask], unlit.image[0][:, mask] * scale, atol=1e-5)


def test_blinn_phong_lobe_matches_half_vector_formula():
    verts, faces, uvs, cam = _plane_scene(perspective=False)
    ks = torch.full((1, 1, 4, 4), 0.5)
    black = torch.zeros(1, 3, 4, 4)
    r = Renderer((32, 32), shininess=20.0)
    for deg in (0.0, 40.0, 100.0):
        a = math.radians(deg)
        lights = DirectionalLights(torch.tensor([[0.0, math.sin(a), math.cos(a)]]))
        out = r(verts, faces, cam, uvs=uvs, uv_faces=faces, diffuse=black, specular=ks, lights=lights)
        expected = 0.5 * math.cos(a / 2) ** 20 if deg < 90 else 0.0
        assert torch.allclose(out.image[0, :, 16, 16], torch.full((3,), expected), atol=1e-5), deg


def test_normal_maps_in_tangent_and_object_space():
    verts, faces, uvs, cam = _plane_scene()
    r = Renderer((32, 32))
    flat = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    plain = r(verts, faces, cam, uvs=uvs, uv_faces=faces, sh_coeffs=ambient_sh(0.7, 1))
    mapped = r(verts, faces, cam, uvs=uvs, uv_faces=faces, normals=flat, sh_coeffs=ambient_sh(0.7, 1))
    assert torch.allclose(plain.shading_normals, mapped.shading_normals, atol=1e-6)
    a = math.radians(30.0)
    tilted = torch.tensor([math.sin(a), 0.0, math.cos(a)]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    out = r(verts, faces, cam, uvs=uvs, uv_faces=faces, normals=tilted)
    mask = out.alpha[0, 0] > 0
    # u runs along +x on this plane, so the tangent-space x tilt shows up as world +x.
    assert torch.allclose(out.shading_normals[0][:, mask], tilted[0, :, 0, 0][:, None], atol=1e-5)
    r_obj = Renderer((32, 32), normal_space="object")
    obj_map = torch.tensor([0.0, math.sin(a), math.cos(a)]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    out = r_obj(verts, faces, cam, uvs=uvs, uv_faces=faces, normals=obj_map)
    assert torch.allclose(out.shading_normals[0][:, mask], obj_map[0, :, 0, 0][:, None], atol=1e-5)


def test_uv_v_axis_points_up_the_texture_image():
    verts, faces, uvs, cam = _plane_scene()
    tex = torch.zeros(1, 3, 2, 2)
    tex[0, 0, 0] = 1.0  # top texture row red -> v near 1 -> world +y -> image top
    tex[0, 2, 1] = 1.0  # bottom row blue
    out = Renderer((32, 32))(verts, faces, cam, uvs=uvs, uv_faces=faces, diffuse=tex)
    assert out.image[0, 0, 3, 16] > 0.9 and out.image[0, 2, 3, 16] < 0.1
    assert out.image[0, 2, 28, 16] > 0.9 and out.image[0, 0, 28, 16] < 0.1


def test_compositing_over_a_background_photo_and_outputs():
    verts, faces, uvs, cam = _plane_scene()
    verts = verts * 0.3
    photo = torch.rand(1, 3, 32, 32)
    out = Renderer((32, 32))(verts, faces, cam, uvs=uvs, uv_faces=faces, background=photo)
    bg = out.alpha[0, 0] == 0
    assert bg.float().mean() > 0.5
    assert torch.equal(out.image[0][:, bg], photo[0][:, bg])
    assert torch.allclose(out.image[0][:, ~bg], torch.ones(1))
    assert torch.allclose(out.depth[0, 0][~bg], torch.tensor(300.0), rtol=1e-5)
    assert (out.depth[0, 0][bg] == 0).all()


def test_texture_without_uvs_is_rejected():
    verts, faces, _, cam = _plane_scene()
    with pytest.raises(ValueError, match="uvs"):
        Renderer((32, 32))(verts, faces, cam, diffuse=torch.rand(1, 3, 4, 4))
