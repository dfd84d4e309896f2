"""The rasteriser's output: which triangle covers each pixel, where, and how far away."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Fragments"]


@dataclass
class Fragments:
    """Per-pixel visibility of a batch of meshes that share one triangle list.

    Covered pixels (and antialiasing-band pixels, if enabled) are also kept in packed form (N of them
    over the whole batch, sorted by flat pixel index ``b * H * W + y * W + x``, hence grouped by batch
    item) so that shading only touches those pixels.

    Attributes:
        pix_to_face: (B, H, W) long, index into the (F, 3) triangle list, -1 for background. Not
            differentiable.
        pixel_index: (N,) long flat pixel index of each covered pixel.
        batch_index: (N,) long batch index of each covered pixel.
        face_index: (N,) long triangle index (into the (F, 3) list) of each covered pixel.
        vertex_index: (N, 3) long row indices into vertices flattened to (B * V, ...) of the triangle's
            corners, for gathering per-vertex attributes.
        bary: (N, 3) perspective-correct barycentric weights (sum to 1), differentiable w.r.t. the projected
            vertices and hence vertex positions and camera.
        depth: (N,) view depth in world units (positive in front of the camera), differentiable.
        image_size: (H, W).
        batch_size: B.
        soft_alpha: optional (N,) coverage in [0, 1] of each packed pixel (1 inside a triangle, decaying
            outside it in the antialiasing band); None when the band is disabled.

    Besides the packed (N, C) layout, per-pixel data can be held "padded" as (B, P, C) with P the largest
    pixel count of any batch item (see :meth:`to_padded`), which lets per-image parameters (lights,
    textures) apply with batched matrix products instead of per-pixel gathers.
    """

    pix_to_face: torch.Tensor
    pixel_index: torch.Tensor
    batch_index: torch.Tensor
    face_index: torch.Tensor
    vertex_index: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    image_size: tuple[int, int]
    batch_size: int
    soft_alpha: torch.Tensor | None = None
    _slots: tuple[torch.Tensor, int] | None = field(default=None, repr=False)

    @property
    def num_packed(self) -> int:
        return int(self.pixel_index.shape[0])

    def to_image(self, packed: torch.Tensor, background: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Scatter a packed (N, C) per-pixel quantity into a (B, C, H, W) image; differentiable.

        ``background`` is a scalar or a (B, C, H, W) tensor that fills pixels not in the packed set.
        """
        if packed.dim() != 2 or packed.shape[0] != self.num_packed:
            raise ValueError(f"packed must be ({self.num_packed}, C), got {tuple(packed.shape)}")
        height, width = self.image_size
        channels = packed.shape[1]
        if isinstance(background, torch.Tensor) and background.dim() == 4:
            flat = background.permute(0, 2, 3, 1).reshape(-1, channels).to(packed.dtype)
        else:
            flat = packed.new_full((self.batch_size * height * width, channels), float(background))
        flat = flat.index_copy(0, self.pixel_index, packed.to(flat.dtype))
        return flat.view(self.batch_size, height, width, channels).permute(0, 3, 1, 2)

    def slots(self) -> tuple[torch.Tensor, int]:
        """(N,) long row of each packed pixel in the flattened (B * P) padded layout, and P."""
        if self._slots is None:
            b = self.batch_index  # sorted: the packed set is ordered by flat pixel index
            n = b.shape[0]
            counts = torch.bincount(b, minlength=self.batch_size)
            start = torch.cumsum(counts, 0) - counts
            rank = torch.arange(n, device=b.device) - start.index_select(0, b)
            longest = max(int(counts.max()) if n else 0, 1)
            self._slots = (b * longest + rank, longest)
        return self._slots

    def to_padded(self, packed: torch.Tensor) -> torch.Tensor:
        """(N, C) packed -> (B, P, C) padded with zeros; differentiable."""
        if packed.dim() != 2 or packed.shape[0] != self.num_packed:
            raise ValueError(f"packed must be ({self.num_packed}, C), got {tuple(packed.shape)}")
        slot, longest = self.slots()
        out = packed.new_zeros(self.batch_size * longest, packed.shape[1]).index_copy(0, slot, packed)
        return out.view(self.batch_size, longest, packed.shape[1])

    def from_padded(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, P, C) padded -> (N, C) packed; differentiable."""
        slot, longest = self.slots()
        if padded.dim() != 3 or padded.shape[:2] != (self.batch_size, longest):
            raise ValueError(f"padded must be ({self.batch_size}, {longest}, C), got {tuple(padded.shape)}")
        return padded.reshape(-1, padded.shape[-1]).index_select(0, slot)

    def mask(self) -> torch.Tensor:
        """(B, 1, H, W) float mask, 1 where some triangle covers the pixel centre."""
        return (self.pix_to_face >= 0).unsqueeze(1).float()

    def dense_bary(self) -> torch.Tensor:
        """(B, H, W, 3) barycentrics (zero on background); differentiable."""
        return self.to_image(self.bary).permute(0, 2, 3, 1)

    def dense_depth(self, background: float = 0.0) -> torch.Tensor:
        """(B, 1, H, W) depth image (``background`` where nothing is drawn); differentiable."""
        return self.to_image(self.depth.unsqueeze(1), background)
