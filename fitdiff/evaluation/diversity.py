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
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fitdiff.evaluation.faces import FaceSet
from fitdiff.evaluation.sampling import DIVERSITY_STREAM, sample_faces, sample_generators
from fitdiff.evaluation.table import Column, ResultTable, TableRow

__all__ = [
    "pairwise_rms",
    "nearest_rms",
    "diversity_row",
    "diversity_report",
    "closest_note",
    "DIVERSITY_COLUMNS",
]

DIVERSITY_COLUMNS: tuple[Column, ...] = (
    Column("pairwise_shape_mm", "pairwise shape (mm)", "{:.2f}"),
    Column("pairwise_diffuse_rmse", "pairwise diffuse RMSE", "{:.4f}"),
    Column("nearest_train_shape_mm", "nearest train shape (mm)", "{:.2f}"),
    Column("nearest_train_diffuse_rmse", "nearest train diffuse RMSE", "{:.4f}"),
)


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


def diversity_row(
    method: str,
    vertices: torch.Tensor,
    diffuse: torch.Tensor,
    train_vertices: torch.Tensor,
    train_diffuse: torch.Tensor,
) -> TableRow:
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
    return TableRow(
        method,
        {k: v.numpy() for k, v in values.items()},
        {"n": int(len(vertices)), "n_train": int(len(train_vertices))},
    )


@torch.no_grad()
def diversity_report(
    pipeline: Any,
    sampler: Any,
    vertices: Callable[[torch.Tensor], torch.Tensor],
    held: FaceSet,
    train: FaceSet,
    n: int,
    seed: int,
    batch_size: int = 32,
    progress: bool = True,
) -> ResultTable:
    """``n`` unconditional samples of ``pipeline`` and the held-out subjects (one photo each), both against the
    training subjects (one sample each).

    Args:
        pipeline, sampler: the sampling pipeline and its sampler.
        vertices: (B, K) coefficients -> (B, V, 3) meshes in mm (the shape model).
        held, train: held-out and training faces.
        n: samples; seed: base seed (sample ``j`` uses the diversity stream of
            :func:`~fitdiff.evaluation.sampling.derive_seed`); batch_size: samples per sampler call.
    """
    shapes, diffuse = [], []
    for start in tqdm(range(0, n, batch_size), desc="diversity samples", disable=not progress, leave=False):
        gens = sample_generators(seed, range(start, min(start + batch_size, n)), 1, stream=DIVERSITY_STREAM)
        pred = sample_faces(pipeline, sampler, gens, None, 1.0).cleaned()
        shapes.append(pred.shape)
        diffuse.append(pred.diffuse)
    real, subjects = held.first_per_subject(), train.first_per_subject()
    train_vertices = vertices(subjects.shape).cpu()
    rows = [
        diversity_row(
            "unconditional samples",
            vertices(torch.cat(shapes)).cpu(),
            torch.cat(diffuse),
            train_vertices,
            subjects.diffuse,
        ),
        diversity_row(
            "held-out subjects", vertices(real.shape).cpu(), real.diffuse, train_vertices, subjects.diffuse
        ),
    ]
    return ResultTable(rows, DIVERSITY_COLUMNS, counts=["n", "n_train"])


def closest_note(table: ResultTable) -> str:
    """Markdown lines: each row's smallest distance to a training subject (a copy would be near 0)."""
    lines = []
    for row in table.rows:
        shape, texture = row.values["nearest_train_shape_mm"], row.values["nearest_train_diffuse_rmse"]
        lines.append(
            f"- {row.method}: closest to a training subject {float(np.min(shape)):.2f} mm (shape), "
            f"{float(np.min(texture)):.4f} (diffuse RMSE)"
        )
    return "\n" + "\n".join(lines) + "\n"
