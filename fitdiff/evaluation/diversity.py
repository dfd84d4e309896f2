"""Are unconditional samples diverse, and not copies of training subjects?

For a set of faces (samples, or real held-out subjects) against the training subjects:

- ``pairwise_shape_mm``: RMS per-vertex distance between the meshes of every pair of the set, mm;
- ``pairwise_diffuse_rmse``: RMS difference of the diffuse maps of every pair, [0, 1] units;
- ``nearest_train_shape_mm`` / ``nearest_train_diffuse_rmse``: each face's distance to its nearest
  training subject (nearest by that same distance).

The real held-out subjects are the reference: samples as diverse as real subjects have pairwise figures
close to theirs, and samples that are not copies are no nearer the training subjects than new real
subjects are. Distances are computed in float64 from the flattened meshes / maps.
"""

from __future__ import annotations

import math

import torch

from fitdiff.evaluation.table import TableRow

__all__ = ["pairwise_rms", "nearest_rms", "diversity_row", "DIVERSITY_METRICS"]

DIVERSITY_METRICS: tuple[str, ...] = ("pairwise_shape_mm", "pairwise_diffuse_rmse", "nearest_train_shape_mm",
                                      "nearest_train_diffuse_rmse")


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(x.shape[0], -1).double().cpu()


def _rms_distances(a: torch.Tensor, b: torch.Tensor, per: int) -> torch.Tensor:
    """(N, M) RMS over ``per`` elements-groups of the difference of flattened rows (exact, no matmul trick)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(per)


def pairwise_rms(x: torch.Tensor, per_item: int) -> torch.Tensor:
    """RMS distances of every unordered pair of the N items of ``x`` (N, ...), (N (N - 1) / 2,).

    ``per_item`` is the number of elements the squared distance is averaged over (vertices for meshes:
    the per-vertex Euclidean distance is the norm over 3 coordinates; texels x channels for maps).
    """
    flat = _flat(x)
    d = _rms_distances(flat, flat, per_item)
    i, j = torch.triu_indices(len(flat), len(flat), offset=1)
    return d[i, j]


def nearest_rms(x: torch.Tensor, reference: torch.Tensor, per_item: int) -> torch.Tensor:
    """(N,) RMS distance of every item of ``x`` to its nearest item of ``reference``."""
    return _rms_distances(_flat(x), _flat(reference), per_item).min(1).values


def diversity_row(method: str, vertices: torch.Tensor, diffuse: torch.Tensor, train_vertices: torch.Tensor,
                  train_diffuse: torch.Tensor) -> TableRow:
    """The diversity figures of N faces ((N, V, 3) mm meshes, (N, 3, R, R) diffuse maps) as a table row.

    Counts: ``n`` faces, ``n_train`` training subjects.
    """
    n_vertices = vertices.shape[1]
    texels = diffuse[0].numel()
    values = {
        "pairwise_shape_mm": pairwise_rms(vertices, n_vertices),
        "pairwise_diffuse_rmse": pairwise_rms(diffuse, texels),
        "nearest_train_shape_mm": nearest_rms(vertices, train_vertices, n_vertices),
        "nearest_train_diffuse_rmse": nearest_rms(diffuse, train_diffuse, texels),
    }
    return TableRow(method, {k: v.numpy() for k, v in values.items()},
                    {"n": int(len(vertices)), "n_train": int(len(train_vertices))})
