"""Optional pytorch3d visibility back-end: same fragments as the built-in rasteriser."""

import pytest
import torch

from fitdiff.render import PerspectiveCamera, Renderer, look_at
from fitdiff.render.backends import pytorch3d_backend
from fitdiff.render.primitives import uv_sphere


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        Renderer((8, 8), backend="opengl")


@pytest.mark.skipif(not pytorch3d_backend.is_available(), reason="pytorch3d not installed")
def test_pytorch3d_backend_matches_builtin():
    verts, faces, _, _ = uv_sphere(16, 32, 40.0)
    rot, trans = look_at(torch.tensor([[30.0, 20.0, 200.0], [0.0, 0.0, 150.0]]))
    cam = PerspectiveCamera.from_fov(rot, trans, (48, 64), 40.0)
    v = verts.expand(2, -1, -1)
    ours = Renderer((48, 64)).rasterize(v, faces, cam)
    theirs = Renderer((48, 64), backend="pytorch3d").rasterize(v, faces, cam)
    assert ((ours.pix_to_face >= 0) == (theirs.pix_to_face >= 0)).float().mean() > 0.995
    assert (ours.pix_to_face == theirs.pix_to_face).float().mean() > 0.99
