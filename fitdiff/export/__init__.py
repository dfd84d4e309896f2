"""Avatar export: OBJ + MTL + PNG maps, binary glTF 2.0 (.glb, PBR), readers, and an overview grid image.

- :func:`export_avatar`: one avatar in every format (the sampling CLI's writer).
- :func:`export_obj` / :func:`load_obj`: Wavefront OBJ + MTL + PNG maps (mm, v up) and its reader.
- :func:`export_glb`: one ``.glb`` (metres, TEXCOORD_0 t down, supplied tangents, baseColor = diffuse,
  ``KHR_materials_specular`` from the specular map, normalTexture = tangent-space normal map);
  :func:`unpack_glb` reads the container back.
- :func:`read_texture`, :func:`read_normal_map`: PNG maps back to float arrays (sRGB decoding optional).
- :func:`object_to_tangent_normals`: an object-space normal map in the renderer's tangent frames.
- :func:`avatar_grid`, :func:`save_png`: maps and renders of several avatars as one uint8 image.

Colour maps are written sRGB-encoded in both formats (viewers decode them to the model's linear albedo);
normal maps are linear (n + 1) / 2. Details in each module's docstring.
"""

from fitdiff.export.avatar import FORMATS, MAP_KEYS, export_avatar
from fitdiff.export.glb import pack_glb, unpack_glb
from fitdiff.export.gltf import SPECULAR_EXTENSION, export_glb, roughness_from_shininess
from fitdiff.export.grid import avatar_grid, save_png
from fitdiff.export.images import linear_to_srgb, read_normal_map, read_texture, srgb_to_linear
from fitdiff.export.obj import DEFAULT_SHININESS, export_obj, load_obj
from fitdiff.export.tangents import object_to_tangent_normals

__all__ = [
    "DEFAULT_SHININESS",
    "FORMATS",
    "MAP_KEYS",
    "SPECULAR_EXTENSION",
    "avatar_grid",
    "export_avatar",
    "export_glb",
    "export_obj",
    "linear_to_srgb",
    "load_obj",
    "object_to_tangent_normals",
    "pack_glb",
    "read_normal_map",
    "read_texture",
    "roughness_from_shininess",
    "save_png",
    "srgb_to_linear",
    "unpack_glb",
]
