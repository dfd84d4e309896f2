"""Rasteriser: exact coverage and barycentrics, depth, silhouettes, z-order, watertightness, clipping."""

import math

import torch

from fitdiff.render.cameras import OrthographicCamera, PerspectiveCamera, look_at
from fitdiff.render.primitives import grid_plane, uv_sphere
from fitdiff.render.rasterizer import rasterize

TRI = torch.tensor([[[1.0, 1.0], [1.0, 7.0], [7.0, 1.0]]])  # counter-clockwise on screen = front-facing
FACE = torch.tensor([[0, 1, 2]])


def test_single_triangle_coverage_and_barycentrics_are_exact():
    frags = rasterize(TRI, torch.full((1, 3), 5.0), FACE, (8, 8))
    ys, xs = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    # Pixel centres (x + .5, y + .5) inside x >= 1, y >= 1, x + y < 8: the centres on the hypotenuse
    # (a bottom-right edge) are left to the neighbouring triangle by the top-left rule.
    expected = (xs >= 1) & (ys >= 1) & (xs + ys <= 6)
    assert torch.equal(frags.pix_to_face[0] >= 0, expected) and int(expected.sum()) == 15
    bary = frags.dense_bary()[0]
    b1 = (ys + 0.5 - 1.0) / 6.0
    b2 = (xs + 0.5 - 1.0) / 6.0
    hand = torch.stack([1 - b1 - b2, b1, b2], -1)
    assert torch.allclose(bary[expected], hand[expected], atol=1e-6)
    assert torch.allclose(frags.dense_depth()[0, 0][expected], torch.tensor(5.0))


def test_perspective_correct_barycentrics_and_depth():
    depth = torch.tensor([[2.0, 4.0, 8.0]])
    frags = rasterize(TRI, depth, FACE, (8, 8))
    px, py = 2.5, 3.5  # pixel (2, 3)
    s = torch.tensor([1 - (py - 1) / 6 - (px - 1) / 6, (py - 1) / 6, (px - 1) / 6])
    q = s / depth[0]
    hand = q / q.sum()
    got = frags.dense_bary()[0, 3, 2]
    assert torch.allclose(got, hand, atol=1e-6)
    assert math.isclose(float(frags.dense_depth()[0, 0, 3, 2]), float(1 / q.sum()), rel_tol=1e-6)


def test_backface_culling_and_winding():
    flipped = FACE[:, [0, 2, 1]]
    assert (rasterize(TRI, torch.ones(1, 3), flipped, (8, 8)).pix_to_face < 0).all()
    both = rasterize(TRI, torch.ones(1, 3), flipped, (8, 8), cull_backfaces=False)
    assert int((both.pix_to_face >= 0).sum()) == 15


def test_nearer_triangle_wins_in_either_order():
    xy = torch.cat([TRI, TRI], dim=1)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    for near, far in ((0, 1), (1, 0)):
        depth = torch.ones(1, 6)
        depth[0, 3 * far : 3 * far + 3] = 3.0
        frags = rasterize(xy, depth, faces, (8, 8))
        assert set(frags.pix_to_face[frags.pix_to_face >= 0].tolist()) == {near}


def test_triangles_before_the_near_plane_are_discarded():
    depth = torch.tensor([[5.0, 5.0, 0.5]])
    assert (rasterize(TRI, depth, FACE, (8, 8), znear=1.0).pix_to_face < 0).all()
    assert (rasterize(TRI, depth, FACE, (8, 8), znear=0.1).pix_to_face >= 0).any()


def test_plane_depth_is_exact_under_perspective_and_tilt():
    verts, faces, _ = grid_plane(n=6, size=200.0, dtype=torch.float64)
    tilt = math.radians(35.0)
    rot_x = torch.tensor([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]],
                         dtype=torch.float64)
    verts = (verts @ rot_x.T).unsqueeze(0)
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 400.0]], dtype=torch.float64))
    cam = PerspectiveCamera.from_fov(rot, trans, (64, 64), 30.0)
    xy, depth = cam.project(verts)
    frags = rasterize(xy, depth, faces, (64, 64))
    mask = frags.pix_to_face[0] >= 0
    assert mask.float().mean() > 0.3
    # Analytic ray-plane intersection: the plane passes through the origin with normal rot_x @ z.
    normal = rot_x[:, 2]
    f = float(cam.fy[0])
    ys, xs = torch.meshgrid(torch.arange(64.0, dtype=torch.float64), torch.arange(64.0, dtype=torch.float64),
                            indexing="ij")
    ray = torch.stack([(xs + 0.5 - 32) / f, -(ys + 0.5 - 32) / f, -torch.ones_like(xs)], -1)  # camera = world axes
    eye = torch.tensor([0.0, 0.0, 400.0], dtype=torch.float64)
    lam = -(eye @ normal) / (ray @ normal)  # eye + lam * ray on the plane; depth = lam (ray z = -1)
    got = frags.dense_depth()[0, 0]
    assert torch.allclose(got[mask], lam[mask], rtol=1e-9)


def test_sphere_silhouette_area_within_one_percent():
    radius, dist, fov = 50.0, 300.0, 30.0
    verts, faces, _, _ = uv_sphere(64, 128, radius)
    rot, trans = look_at(torch.tensor([[0.0, 0.0, dist]]))
    cam = PerspectiveCamera.from_fov(rot, trans, (256, 256), fov)
    xy, depth = cam.project(verts.unsqueeze(0))
    focal = 128.0 / math.tan(math.radians(fov / 2))
    tan_alpha = radius / math.sqrt(dist**2 - radius**2)
    analytic = math.pi * (focal * tan_alpha) ** 2
    for cull in (True, False):
        area = float((rasterize(xy, depth, faces, (256, 256), cull_backfaces=cull).pix_to_face >= 0).sum())
        assert abs(area - analytic) / analytic < 0.01, (cull, area, analytic)


def test_no_cracks_between_shared_edges_and_chunking_is_exact():
    torch.manual_seed(0)
    verts, faces, _ = grid_plane(n=24, size=40.0)
    inner = (verts[:, :2].abs() < 19.9).all(-1)
    verts[inner, :2] += (torch.rand(int(inner.sum()), 2) - 0.5) * 1.2  # irregular shared edges
    rot, trans = look_at(torch.tensor([[0.0, 0.0, 10.0]]))
    cam = OrthographicCamera(rot, trans, fx=1.2, fy=1.2, cx=32.3, cy=31.8, image_size=(64, 64))
    xy, depth = cam.project(verts.unsqueeze(0))
    frags = rasterize(xy, depth, faces, (64, 64), perspective=False)
    xs = torch.arange(64) + 0.5
    inside_x = (xs > 32.3 - 24.0) & (xs < 32.3 + 24.0)
    inside_y = (xs > 31.8 - 24.0) & (xs < 31.8 + 24.0)
    expected = inside_y[:, None] & inside_x[None, :]
    assert torch.equal(frags.pix_to_face[0] >= 0, expected)
    chunked = rasterize(xy, depth, faces, (64, 64), perspective=False, max_candidates=97)
    assert torch.equal(chunked.pix_to_face, frags.pix_to_face)


def test_packed_layout_is_consistent_with_dense_maps():
    verts, faces, _, _ = uv_sphere(12, 24, 40.0)
    eyes = torch.tensor([[0.0, 0.0, 200.0], [150.0, 30.0, 120.0]])
    rot, trans = look_at(eyes)
    cam = PerspectiveCamera.from_fov(rot, trans, (48, 40), 40.0)
    xy, depth = cam.project(verts.expand(2, -1, -1))
    frags = rasterize(xy, depth, faces, (48, 40))
    flat = frags.pix_to_face.reshape(-1)
    assert torch.equal(flat[frags.pixel_index], frags.face_index)
    assert torch.equal(frags.batch_index, frags.pixel_index // (48 * 40))
    assert torch.allclose(frags.bary.sum(-1), torch.ones(frags.num_packed))
    assert (frags.bary > -1e-5).all()
    padded = frags.to_padded(frags.bary)
    assert torch.equal(frags.from_padded(padded), frags.bary)
    # The depth of a sphere pixel is at least the distance to the sphere's front.
    assert (frags.depth >= eyes.norm(dim=-1)[frags.batch_index] - 40.0 - 1e-3).all()
