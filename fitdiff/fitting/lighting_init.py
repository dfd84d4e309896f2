"""SH lighting from a photo by linear least squares on a known (e.g. mean) albedo.

With the camera fixed and no directional light, the face scene's radiance at a pixel p is linear in the
(9, 3) SH radiance coefficients: ``L_pc = a_pc * sum_k Y_k(n_p) * A_k / pi * c_kc`` (albedo a, shading
normal n, the clamped-cosine kernel A of :mod:`fitdiff.render.lighting`). The photo gives
``L = photo ** gamma / exposure`` (the inverse tone curve, exposure 1) on face pixels; pixels the tone
curve clipped (display value above 0.98 or below 0.02) are left out. :func:`sh_from_photo` solves the
ridge-regularised least squares per photo and channel.
"""

from __future__ import annotations

import math

import torch

from fitdiff.face.scene import DEFAULT_GAMMA, FaceScene, SceneLights
from fitdiff.render import DirectionalLights
from fitdiff.render.cameras import Camera
from fitdiff.render.lighting import SH_LAMBERT_KERNEL, ambient_sh, sh_basis

__all__ = ["sh_from_photo"]

_CLIP_LOW, _CLIP_HIGH = 0.02, 0.98


def _unlit(batch: int, like: torch.Tensor) -> SceneLights:
    directional = DirectionalLights(direction=like.new_tensor([0.0, 0.0, 1.0]).expand(batch, 1, 3),
                                    intensity=like.new_zeros(batch, 1))
    return SceneLights(sh=ambient_sh(1.0, batch).to(like), directional=directional, exposure=like.new_ones(batch))


@torch.no_grad()
def sh_from_photo(
    scene: FaceScene,
    shape: torch.Tensor,
    diffuse: torch.Tensor,
    normals: torch.Tensor,
    camera: Camera,
    photo: torch.Tensor,
    gamma: float = DEFAULT_GAMMA,
    ridge: float = 1e-3,
) -> torch.Tensor:
    """(B, 9, 3) SH radiance coefficients that best explain ``photo`` (see the module docstring).

    Args:
        scene: the face scene (shape model, normal space).
        shape: (B or 1, K) coefficients; diffuse: (B or 1, 3, R, R) albedo in [0, 1]; normals: (B or 1,
            3, R, R) normal map.
        camera: batch-B cameras of the photos.
        photo: (B, 3, H, W) display-space photos in [0, 1].
        gamma: the tone curve's gamma.
        ridge: Tikhonov weight relative to the mean diagonal of the normal equations.

    Returns:
        (B, 9, 3) coefficients; a photo with fewer than 9 usable face pixels gets a uniform environment
        of its mean linear face radiance.
    """
    batch = camera.batch_size
    specular = diffuse.new_zeros(diffuse.shape[0], 1, *diffuse.shape[-2:])
    out = scene(shape, diffuse, specular, normals, camera, _unlit(batch, photo), background=0.0)
    # with the uniform environment of radiance 1 and no other light the radiance is the albedo itself
    albedo = out.radiance.flatten(2)  # (B, 3, P)
    basis = sh_basis(out.normals.flatten(2).transpose(1, 2)) * photo.new_tensor(SH_LAMBERT_KERNEL) / math.pi
    target = photo.clamp(0.0, 1.0).pow(gamma).flatten(2)
    display = photo.flatten(2)
    valid = (out.alpha.flatten(2) > 0.99) & (display > _CLIP_LOW).all(1, keepdim=True) \
        & (display < _CLIP_HIGH).all(1, keepdim=True)
    coeffs = torch.zeros(batch, 9, 3, dtype=photo.dtype, device=photo.device)
    for b in range(batch):
        mask = valid[b, 0]
        if int(mask.sum()) < 9:
            mean = target[b][:, out.alpha[b].flatten() > 0.5].mean(1) if bool((out.alpha[b] > 0.5).any()) \
                else target[b].mean(1)
            coeffs[b] = ambient_sh(mean.cpu(), 1)[0].to(coeffs)
            continue
        for c in range(3):
            a = albedo[b, c, mask][:, None] * basis[b, mask]  # (P, 9)
            y = target[b, c, mask]
            gram = a.T @ a
            gram = gram + ridge * gram.diagonal().mean() * torch.eye(9, dtype=a.dtype, device=a.device)
            coeffs[b, :, c] = torch.linalg.solve(gram, a.T @ y)
    return coeffs
