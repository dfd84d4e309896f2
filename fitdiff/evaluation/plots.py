"""One PNG plot per result table: a panel per chosen metric, a horizontal bar per method (mean with the
sample std as an error bar), the better direction in the panel title.

Drawn with matplotlib's non-interactive Agg backend (no display needed) and written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from fitdiff.evaluation.table import ResultTable
from fitdiff.io import atomic_write_bytes

__all__ = ["plot_table"]


def plot_table(table: ResultTable, metrics: Sequence[tuple[str, bool]], path: str | Path, title: str = "") -> Path:
    """Write a bar chart of ``table`` to ``path`` (PNG) and return it.

    Args:
        table: the rows (each row's ``<metric>_mean`` and ``<metric>_std``).
        metrics: ``(metric key, higher is better)`` per panel; keys the table lacks are left out.
        path: the PNG file; title: the figure title.

    Raises:
        ValueError: none of ``metrics`` is a column of the table.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    titles = {c.key: c.header for c in table.columns}
    panels = [(k, better) for k, better in metrics if k in titles]
    if not panels:
        raise ValueError(f"plot_table: none of {[k for k, _ in metrics]} is a column of the table")
    records = table.records()
    methods = [str(r["method"]) for r in records]
    height = 0.9 + 0.32 * len(methods)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 1.6, height), sharey=True, squeeze=False)
    for ax, (key, better) in zip(axes[0], panels):
        means = [float(r[f"{key}_mean"]) for r in records]
        stds = [float(r[f"{key}_std"]) for r in records]
        finite = [m if math.isfinite(m) else 0.0 for m in means]
        errors = [s if math.isfinite(s) else 0.0 for s in stds]
        ax.barh(range(len(methods)), finite, xerr=errors, color="#4c78a8", ecolor="#333333", capsize=2, height=0.65)
        ax.set_title(f"{titles[key]} ({'higher' if better else 'lower'} is better)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(methods)), methods)
    axes[0][0].invert_yaxis()  # the table's first row on top (the axes share y)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(Path(path), buffer.getvalue())
