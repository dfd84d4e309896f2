"""Avatar export: OBJ + MTL + PNG maps and readers.

- :func:`export_obj` / :func:`load_obj`: Wavefront OBJ + MTL + PNG maps (mm, v up) and its reader.
- :func:`read_texture`, :func:`read_normal_map`: PNG maps back to float arrays (sRGB decoding optional).

Colour maps are written sRGB-encoded (viewers decode them to the model's linear albedo); normal maps are
linear (n + 1) / 2. Details in each module's docstring.
"""

from fitdiff.export.images import linear_to_srgb, read_normal_map, read_texture, srgb_to_linear
from fitdiff.export.obj import DEFAULT_SHININESS, export_obj, load_obj

__all__ = [
    "DEFAULT_SHININESS",
    "export_obj",
    "linear_to_srgb",
    "load_obj",
    "read_normal_map",
    "read_texture",
    "srgb_to_linear",
]
