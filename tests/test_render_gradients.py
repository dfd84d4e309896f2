"""Gradients: gradcheck through rasterised interpolation and shading, soft silhouettes, and fitting."""

import math

import torch

from fitdiff.render import DirectionalLights, PerspectiveCamera, Renderer, ambient_sh, look_at
from fitdiff.render.primitives import grid_plane, uv_sphere

D = torch.float64


def _scene(size: int = 10):
    verts, faces, uvs, uv_faces = uv_sphere(5, 8, 40.0, dtype=D)
    rot, trans = look_at(torch.tensor([[20.0, 30.0, 200.0]], dtype=D))
    cam = PerspectiveCamera.from_fov(rot, trans, (size, size), 30.0)
    return verts.unsqueeze(0), faces, uvs, uv_faces, cam


def test_gradcheck_vertices_through_rasterised_interpolation_and_full_shading():
    # A bumpy plane seen obliquely: well-defined tangent frames everywhere (a UV sphere's poles are not).
    torch.manual_seed(0)
    verts, faces, uvs = grid_plane(n=3, size=80.0, dtype=D)
    verts[:, 2] = torch.rand(len(verts), dtype=D) * 10.0
    verts = verts.unsqueeze(0)
    uv_faces = faces
    rot, trans = look_at(torch.tensor([[30.0, 40.0, 200.0]], dtype=D))
    cam = PerspectiveCamera.from_fov(rot, trans, (10, 10), 30.0)
    diffuse = torch.rand(1, 3, 4, 4, dtype=D)
    specular = torch.rand(1, 1, 4, 4, dtype=D)
    nmap = torch.nn.functional.normalize(torch.randn(1, 3, 4, 4, dtype=D) * 0.2 + torch.tensor([0, 0, 1.0], dtype=D).view(1, 3, 1, 1), dim=1)
    sh = ambient_sh(0.5, 1).to(D)
    sh[0, 1:4] = torch.tensor([0.2, 0.3, -0.1], dtype=D).unsqueeze(-1)
    lights = DirectionalLights(torch.tensor([[0.3, 0.5, 1.0]], dtype=D))
    r = Renderer((10, 10), shininess=4.0)
    base = r(verts, faces, cam, uvs=uvs, uv_faces=uv_faces)
    assert base.alpha.sum() > 20

    def fn(v):
        out = r(v, faces, cam, uvs=uvs, uv_faces=uv_faces, diffuse=diffuse, specular=specular, normals=nmap,
                sh_coeffs=sh, lights=lights)
        assert torch.equal(out.fragments.pix_to_face, base.fragments.pix_to_face)  # visibility fixed
        return out.image

    v = verts.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (v,), eps=1e-6, atol=1e-5)


def test_gradcheck_textures_lights_and_camera():
    verts, faces, uvs, uv_faces, _ = _scene(8)
    torch.manual_seed(1)
    r = Renderer((8, 8), shininess=8.0)
    diffuse = torch.rand(1, 3, 3, 3, dtype=D, requires_grad=True)
    specular = torch.rand(1, 1, 2, 2, dtype=D, requires_grad=True)
    nmap = torch.nn.functional.normalize(torch.randn(1, 3, 2, 2, dtype=D) + torch.tensor([0, 0, 3.0], dtype=D).view(1, 3, 1, 1), dim=1).requires_grad_(True)
    sh = (ambient_sh(0.5, 1).to(D) + 0.1 * torch.randn(1, 9, 3, dtype=D)).requires_grad_(True)
    direction = torch.tensor([[0.3, 0.5, 1.0]], dtype=D, requires_grad=True)
    eye = torch.tensor([[20.0, 30.0, 200.0]], dtype=D, requires_grad=True)

    def fn(diffuse, specular, nmap, sh, direction, eye):
        rot, trans = look_at(eye)
        cam = PerspectiveCamera.from_fov(rot, trans, (8, 8), 30.0)
        lights = DirectionalLights(direction)
        return r(verts, faces, cam, uvs=uvs, uv_faces=uv_faces, diffuse=diffuse, specular=specular,
                 normals=nmap, sh_coeffs=sh, lights=lights).image

    assert torch.autograd.gradcheck(fn, (diffuse, specular, nmap, sh, direction, eye), eps=1e-6, atol=1e-5, fast_mode=True)


def test_soft_silhouette_band_passes_gradients_to_the_outline():
    verts, faces, uvs, uv_faces = uv_sphere(16, 32, 40.0)
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 200.0]]))
    cam = PerspectiveCamera.from_fov(rot, trans, (32, 32), 40.0)
    scale = torch.ones(1, requires_grad=True)
    hard = Renderer((32, 32))(verts.unsqueeze(0) * scale, faces, cam)
    assert not hard.alpha.requires_grad  # hard coverage is piecewise constant: no silhouette gradient
    soft = Renderer((32, 32), soft_sigma=1.0)(verts.unsqueeze(0) * scale, faces, cam)
    band = (soft.alpha > 0) & (soft.alpha < 1)
    assert int(band.sum()) > 40  # a ring of partially covered pixels around the outline
    assert torch.equal(soft.alpha == 1, hard.alpha == 1)
    (g_soft,) = torch.autograd.grad(soft.alpha.sum(), scale)
    assert float(g_soft) > 0  # growing the sphere covers more


def test_fitting_translation_by_gradient_descent_reduces_the_loss():
    verts, faces, uvs, uv_faces = uv_sphere(16, 32, 40.0)
    verts = verts.unsqueeze(0)
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 250.0]]))
    cam = PerspectiveCamera.from_fov(rot, trans, (32, 32), 40.0)
    r = Renderer((32, 32), soft_sigma=1.0)
    sh = ambient_sh(0.6, 1)
    sh[0, 3] = 0.8  # light from +x
    target_shift = torch.tensor([8.0, -5.0, 0.0])
    with torch.no_grad():
        target = r(verts + target_shift, faces, cam, sh_coeffs=sh).image
    shift = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=1.0)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = (r(verts + shift, faces, cam, sh_coeffs=sh).image - target).abs().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    assert float((shift.detach() - target_shift)[:2].norm()) < 0.3 * float(target_shift[:2].norm())


def test_fitting_sh_lighting_recovers_the_target():
    verts, faces, uvs, uv_faces = uv_sphere(12, 24, 40.0)
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 250.0]]))
    cam = PerspectiveCamera.from_fov(rot, trans, (16, 16), 40.0)
    r = Renderer((16, 16))
    true_sh = ambient_sh(0.5, 1)
    true_sh[0, 1:4] = torch.tensor([[0.3, 0.1, 0.2], [0.5, 0.5, 0.5], [-0.2, 0.0, 0.3]])
    target = r(verts.unsqueeze(0), faces, cam, sh_coeffs=true_sh).image
    sh = ambient_sh(0.3, 1).requires_grad_(True)
    opt = torch.optim.Adam([sh], lr=0.05)
    first = None
    for _ in range(80):
        opt.zero_grad()
        loss = ((r(verts.unsqueeze(0), faces, cam, sh_coeffs=sh).image - target) ** 2).mean()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 2e-2 * first
    assert math.isfinite(loss.item())
