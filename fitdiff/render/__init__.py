"""Differentiable mesh rendering in pure PyTorch: cameras, z-buffer rasteriser, texture lookup,
spherical-harmonics and directional lighting, Lambert + Blinn-Phong shading with normal maps."""

from fitdiff.render.cameras import (
    Camera,
    OrthographicCamera,
    PerspectiveCamera,
    intrinsics_for_image,
    look_at,
)
from fitdiff.render.compositing import composite_over
from fitdiff.render.fragments import Fragments
from fitdiff.render.interpolate import interpolate_face_attributes, interpolate_vertex_attributes
from fitdiff.render.lighting import DirectionalLights, ambient_sh, sh_basis, sh_irradiance
from fitdiff.render.rasterizer import rasterize
from fitdiff.render.renderer import Renderer, RenderOutput
from fitdiff.render.shading import apply_normal_map, blinn_phong, lambert
from fitdiff.render.texture import sample_texture

__all__ = [
    "Camera",
    "PerspectiveCamera",
    "OrthographicCamera",
    "look_at",
    "intrinsics_for_image",
    "rasterize",
    "Fragments",
    "interpolate_vertex_attributes",
    "interpolate_face_attributes",
    "sample_texture",
    "sh_basis",
    "sh_irradiance",
    "ambient_sh",
    "DirectionalLights",
    "apply_normal_map",
    "lambert",
    "blinn_phong",
    "composite_over",
    "Renderer",
    "RenderOutput",
]
