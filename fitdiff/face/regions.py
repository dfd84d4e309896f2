"""Facial regions of a shape model's mesh (nose, eyes, mouth, cheeks), from its 68 landmark vertices.

No region labels ship with a PCA model, but its iBUG-68 landmark vertices name the features, so the
regions are grown around them on the mean mesh: each region has anchor points (its landmark vertices;
for the cheeks, midpoints between the jaw line and the nose wings, mouth corners and lower eyelids, as
cheeks carry no landmarks), and a vertex belongs to the region of its nearest anchor if that anchor lies
within ``radius`` times the outer-eye-corner distance. Vertices far from every anchor (forehead, chin,
ears, neck) are in no region. The regions are disjoint and depend only on the mean shape and the
landmark indices, so every method of a table is scored on the same vertices.
"""

from __future__ import annotations

import torch

from fitdiff.face.shape_model import PCAShapeModel

__all__ = ["REGIONS", "face_regions"]

#: iBUG-68 landmark indices of the regions that carry landmarks
_LANDMARK_REGIONS: dict[str, tuple[int, ...]] = {
    "nose": tuple(range(27, 36)),
    "eyes": tuple(range(36, 48)),
    "mouth": tuple(range(48, 68)),
}
#: cheek anchors: midpoints of these landmark pairs (jaw line to nose wing, mouth corner, lower eyelid)
_CHEEK_PAIRS: tuple[tuple[int, int], ...] = ((2, 31), (4, 48), (1, 41), (14, 35), (12, 54), (15, 46))

#: the region names, in table column order
REGIONS: tuple[str, ...] = ("nose", "eyes", "mouth", "cheeks")


@torch.no_grad()
def face_regions(model: PCAShapeModel, radius: float = 0.35) -> dict[str, torch.Tensor]:
    """Region name -> (V,) bool mask of its vertices (on the model's device), in :data:`REGIONS` order.

    Args:
        model: the shape model (its mean mesh and ``landmarks_68``).
        radius: the largest vertex-to-anchor distance of a region, as a fraction of the distance between
            the outer eye corners (landmarks 36 and 45).

    Raises:
        ValueError: a region would be empty (a degenerate mesh or landmark layout).
    """
    mean = model.mean.float()
    lmk = mean.index_select(0, model.landmarks_68)
    eye_span = float((lmk[36] - lmk[45]).norm())
    anchors = [lmk[list(_LANDMARK_REGIONS[name])] for name in REGIONS[:3]]
    anchors.append(torch.stack([(lmk[a] + lmk[b]) * 0.5 for a, b in _CHEEK_PAIRS]))
    # distance of every vertex to each region's nearest anchor: (V, R)
    distance = torch.stack([torch.cdist(mean, a).amin(1) for a in anchors], dim=1)
    nearest, region = distance.min(1)
    inside = nearest <= radius * eye_span
    masks = {name: inside & (region == i) for i, name in enumerate(REGIONS)}
    empty = [name for name, mask in masks.items() if not bool(mask.any())]
    if empty:
        raise ValueError(f"shape model {model.model_id!r}: no vertex within {radius} eye spans of the "
                         f"{', '.join(empty)} landmarks")
    return masks
