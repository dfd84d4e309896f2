"""Per-pixel shading: normal mapping, Lambertian diffuse and Blinn-Phong specular.

Inputs are per-image point sets (B, N, ...) (the rasteriser's padded layout), so per-image lights apply
through batched matrix products. Radiance values are linear and unbounded (clamp or tone-map for
display).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fitdiff.render.lighting import DirectionalLights, sh_irradiance

__all__ = ["apply_normal_map", "lambert", "blinn_phong"]


def apply_normal_map(
    sampled: torch.Tensor,
    normals: torch.Tensor,
    tangents: torch.Tensor | None = None,
    bitangents: torch.Tensor | None = None,
    normal_space: str = "tangent",
) -> torch.Tensor:
    """Shading normals from normal-map samples.

    Args:
        sampled: (..., 3) normal-map values in [-1, 1] (need not be unit after filtering).
        normals: (..., 3) interpolated geometric normals (world space).
        tangents, bitangents: (..., 3) interpolated frame along +u / +v; required for tangent space.
        normal_space: ``"tangent"`` (x along +u, y along +v, z along the normal) or ``"object"`` (the
            sample already is a world/model-space normal).

    Returns:
        (..., 3) unit shading normals.
    """
    if sampled.shape != normals.shape:
        raise ValueError(f"sampled {tuple(sampled.shape)} must match normals {tuple(normals.shape)}")
    if normal_space == "object":
        return F.normalize(sampled, dim=-1, eps=1e-12)
    if normal_space != "tangent":
        raise ValueError(f"normal_space must be 'tangent' or 'object', got {normal_space!r}")
    if tangents is None or bitangents is None:
        raise ValueError("tangent-space normal maps need tangents and bitangents")
    n = sampled[..., 0:1] * tangents + sampled[..., 1:2] * bitangents + sampled[..., 2:3] * normals
    return F.normalize(n, dim=-1, eps=1e-12)


def lambert(
    albedo: torch.Tensor,
    normals: torch.Tensor,
    sh_coeffs: torch.Tensor | None = None,
    lights: DirectionalLights | None = None,
) -> torch.Tensor:
    """Diffuse radiance albedo * (E_sh(n) / pi + sum_l color_l intensity_l max(0, n . l)).

    Args:
        albedo: (B, N, C) diffuse albedo in [0, 1].
        normals: (B, N, 3) unit shading normals (world space).
        sh_coeffs: (B, 9, C) radiance SH coefficients (see :mod:`fitdiff.render.lighting`), optional.
        lights: directional lights, optional.

    Returns:
        (B, N, C) reflected radiance.
    """
    shade = None
    if sh_coeffs is not None:
        shade = sh_irradiance(normals, sh_coeffs)
    if lights is not None:
        cos = torch.relu(torch.bmm(normals, lights.unit_directions().transpose(1, 2)))  # (B, N, L)
        direct = torch.bmm(cos, lights.radiance())
        shade = direct if shade is None else shade + direct
    return albedo if shade is None else albedo * shade


def blinn_phong(
    specular_albedo: torch.Tensor,
    normals: torch.Tensor,
    view_dirs: torch.Tensor,
    lights: DirectionalLights,
    shininess: float | torch.Tensor = 32.0,
) -> torch.Tensor:
    """Blinn-Phong specular radiance ks * sum_l color_l intensity_l max(0, n . h_l)^shininess, counted only
    where the light is above the surface (n . l > 0). Not energy-normalised.

    Args:
        specular_albedo: (B, N, 1) or (B, N, C) specular albedo ks in [0, 1].
        normals: (B, N, 3) unit shading normals; view_dirs: (B, N, 3) or (B, 1, 3) unit vectors toward
            the camera.
        lights: directional lights.
        shininess: Phong exponent, scalar or (B,) tensor, > 0.

    Returns:
        (B, N, C) reflected radiance, C that of the light colours.
    """
    dirs = lights.unit_directions().unsqueeze(1)  # (B, 1, L, 3)
    half = F.normalize(dirs + view_dirs.unsqueeze(2), dim=-1, eps=1e-12)  # (B, N, L, 3)
    n = normals.unsqueeze(2)
    cos_h = (half * n).sum(-1).clamp(min=0.0)  # (B, N, L)
    lit = (torch.bmm(normals, lights.unit_directions().transpose(1, 2)) > 0).to(cos_h.dtype)
    exponent = torch.as_tensor(shininess, dtype=cos_h.dtype, device=cos_h.device)
    if exponent.dim() == 1:
        exponent = exponent.view(-1, 1, 1)
    # The floor keeps pow's gradient finite at 0 for exponents below 1.
    lobe = cos_h.clamp(min=1e-12).pow(exponent) * lit
    return specular_albedo * torch.bmm(lobe, lights.radiance())
