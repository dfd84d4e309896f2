"""Vertex normals and tangent frames on meshes whose answer is known in closed form."""

import math

import torch

from fitdiff.render.mesh import face_normals, tangent_frames, vertex_normals


def _grid(n: int = 5, mirror_u: bool = False):
    """A flat n x n grid in the z = 0 plane, UVs = scaled xy (optionally mirrored in u)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing="ij")
    verts = torch.stack([xs, ys, torch.zeros_like(xs)], -1).reshape(1, -1, 3).double()
    idx = torch.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    uvs = verts[0, :, :2].clone()
    if mirror_u:
        uvs[:, 0] = 1 - uvs[:, 0]
    return verts, faces, uvs


def test_flat_grid_normals_point_up():
    verts, faces, _ = _grid()
    assert torch.allclose(face_normals(verts, faces), torch.tensor([0.0, 0, 1]).double().expand(1, len(faces), 3))
    assert torch.allclose(vertex_normals(verts, faces), torch.tensor([0.0, 0, 1]).double().expand_as(verts))


def test_tangent_frame_follows_uv_directions_even_when_mirrored():
    for mirror, expected_t in ((False, 1.0), (True, -1.0)):
        verts, faces, uvs = _grid(mirror_u=mirror)
        rot = torch.tensor(  # rotate the plane about x by 30 degrees: frames must rotate with it
            [[1, 0, 0], [0, math.cos(0.5236), -math.sin(0.5236)], [0, math.sin(0.5236), math.cos(0.5236)]]
        ).double()
        tangent, bitangent, normal = tangent_frames(verts @ rot.T, faces, uvs, faces)
        assert torch.allclose(tangent, (torch.tensor([expected_t, 0, 0]).double() @ rot.T).expand_as(tangent))
        assert torch.allclose(bitangent, (torch.tensor([0.0, 1, 0]).double() @ rot.T).expand_as(tangent))
        assert torch.allclose(normal, (torch.tensor([0.0, 0, 1]).double() @ rot.T).expand_as(tangent))


def test_sphere_vertex_normals_are_radial_and_differentiable():
    # UV sphere: normals of a fine tessellation approach the radial direction.
    n_lat, n_lon = 24, 48
    theta = torch.linspace(0.05, math.pi - 0.05, n_lat).double()
    phi = torch.linspace(0, 2 * math.pi, n_lon + 1)[:-1].double()
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    verts = torch.stack([t.sin() * p.cos(), t.cos(), t.sin() * p.sin()], -1).reshape(1, -1, 3)
    idx = torch.arange(n_lat * n_lon).reshape(n_lat, n_lon)
    a, b = idx[:-1], idx[:-1].roll(-1, 1)
    c, d = idx[1:], idx[1:].roll(-1, 1)
    faces = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    normals = vertex_normals(verts, faces)
    radial = verts / verts.norm(dim=-1, keepdim=True)
    cos = (normals * radial).sum(-1).abs()
    assert cos[:, n_lon:-n_lon].min() > 0.995
    verts = verts.clone().requires_grad_(True)
    vertex_normals(verts, faces)[..., 1].sum().backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0
