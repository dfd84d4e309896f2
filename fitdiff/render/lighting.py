"""Lights: order-2 spherical harmonics environment and directional lights.

Spherical harmonics. Real SH up to l = 2 (9 functions), orthonormal on the unit sphere
(integral of Y_i Y_j over the sphere = delta_ij), in the order
    k: 0      1     2     3     4      5      6              7      8
       Y00    Y1-1  Y10   Y11   Y2-2   Y2-1   Y20            Y21    Y22
       c0     c1 y  c1 z  c1 x  c2 xy  c2 yz  c3 (3z^2 - 1)  c2 xz  c4 (x^2 - y^2)
with c0 = 1 / (2 sqrt(pi)), c1 = sqrt(3 / (4 pi)), c2 = sqrt(15 / (4 pi)), c3 = sqrt(5 / (16 pi)),
c4 = sqrt(15 / (16 pi)), evaluated on world-space unit directions.

Coefficients (B, 9, C) describe the incident radiance L(w) = sum_k coeff_k Y_k(w) per colour channel.
The irradiance at a surface with normal n is E(n) = sum_k A_l(k) coeff_k Y_k(n) with the clamped-cosine
kernel A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4 (exact for radiance band-limited to l <= 2), and a
Lambertian surface of albedo a reflects radiance a * E(n) / pi. Coefficient 0 is the ambient term: with
only coeff_0 = 2 sqrt(pi) (so L = 1 everywhere) a surface renders exactly as its albedo.

Directional lights: ``direction`` points FROM the surface TOWARD the light (world space, need not be
unit; it is normalised), ``color`` is linear RGB and ``intensity`` a scalar gain; a Lambertian surface
facing the light reflects a * color * intensity * max(0, n . l).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "SH_CONSTANTS",
    "SH_LAMBERT_KERNEL",
    "sh_basis",
    "sh_irradiance",
    "DirectionalLights",
    "ambient_sh",
]

SH_CONSTANTS = (
    1.0 / (2.0 * math.sqrt(math.pi)),
    math.sqrt(3.0 / (4.0 * math.pi)),
    math.sqrt(15.0 / (4.0 * math.pi)),
    math.sqrt(5.0 / (16.0 * math.pi)),
    math.sqrt(15.0 / (16.0 * math.pi)),
)
# Clamped-cosine convolution weight per coefficient (band l of coefficient k).
SH_LAMBERT_KERNEL = (math.pi,) + (2.0 * math.pi / 3.0,) * 3 + (math.pi / 4.0,) * 5


def sh_basis(directions: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit directions -> (..., 9) real SH basis values (order in the module docstring)."""
    if directions.shape[-1] != 3:
        raise ValueError(f"directions must be (..., 3), got {tuple(directions.shape)}")
    x, y, z = directions.unbind(-1)
    c0, c1, c2, c3, c4 = SH_CONSTANTS
    return torch.stack(
        [
            torch.full_like(x, c0),
            c1 * y,
            c1 * z,
            c1 * x,
            c2 * x * y,
            c2 * y * z,
            c3 * (3.0 * z * z - 1.0),
            c2 * x * z,
            c4 * (x * x - y * y),
        ],
        dim=-1,
    )


def sh_irradiance(normals: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Irradiance divided by pi (the factor that multiplies a Lambertian albedo).

    Args:
        normals: (B, N, 3) unit normals in world space.
        coeffs: (B, 9, C) radiance SH coefficients.

    Returns:
        (B, N, C) E(n) / pi, which equals the reflected radiance of a white Lambertian surface.
    """
    if coeffs.dim() != 3 or coeffs.shape[1] != 9:
        raise ValueError(f"sh coeffs must be (B, 9, C), got {tuple(coeffs.shape)}")
    if normals.dim() != 3 or normals.shape[0] != coeffs.shape[0] or normals.shape[-1] != 3:
        raise ValueError(f"normals must be ({coeffs.shape[0]}, N, 3), got {tuple(normals.shape)}")
    kernel = coeffs.new_tensor(SH_LAMBERT_KERNEL) / math.pi
    return torch.bmm(sh_basis(normals).to(coeffs.dtype), coeffs * kernel[None, :, None])


def ambient_sh(color: torch.Tensor | float, batch_size: int = 1, channels: int = 3) -> torch.Tensor:
    """(B, 9, C) SH coefficients of a uniform environment of radiance ``color`` (scalar or (C,))."""
    c = torch.as_tensor(color, dtype=torch.get_default_dtype())
    coeffs = torch.zeros(batch_size, 9, channels, dtype=c.dtype, device=c.device)
    coeffs[:, 0] = c / SH_CONSTANTS[0]
    return coeffs


@dataclass
class DirectionalLights:
    """L directional lights per batch item.

    Attributes:
        direction: (B, L, 3) world-space vectors from the surface toward each light (normalised on use).
        color: (B, L, C) linear colour, default white.
        intensity: (B, L) gain, default 1.
    """

    direction: torch.Tensor
    color: torch.Tensor | None = None
    intensity: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.direction.dim() == 2:
            self.direction = self.direction.unsqueeze(1)
        if self.direction.dim() != 3 or self.direction.shape[-1] != 3:
            raise ValueError(f"direction must be (B, L, 3) or (B, 3), got {tuple(self.direction.shape)}")
        b, n = self.direction.shape[:2]
        if self.color is None:
            self.color = self.direction.new_ones(b, n, 3)
        elif self.color.dim() == 2:
            self.color = self.color.unsqueeze(1)
        if self.color.shape[:2] != (b, n):
            raise ValueError(f"color must be ({b}, {n}, C), got {tuple(self.color.shape)}")
        if self.intensity is None:
            self.intensity = self.direction.new_ones(b, n)
        elif self.intensity.dim() == 1:
            self.intensity = self.intensity.unsqueeze(1)
        if self.intensity.shape != (b, n):
            raise ValueError(f"intensity must be ({b}, {n}), got {tuple(self.intensity.shape)}")

    def unit_directions(self) -> torch.Tensor:
        """(B, L, 3) unit vectors toward the lights."""
        return F.normalize(self.direction, dim=-1, eps=1e-12)

    def radiance(self) -> torch.Tensor:
        """(B, L, C) colour times intensity."""
        return self.color * self.intensity.unsqueeze(-1)
