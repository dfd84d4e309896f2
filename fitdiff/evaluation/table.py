"""Result tables: rows of per-item metric values -> one CSV layout and a Markdown table.

Every table of ``evaluate.py`` uses this layout, so tables of different runs and kinds read alike:

* one row per method, its name in the first column, ``method``;
* for every metric ``m`` two columns ``m_mean`` and ``m_std``: the mean and the sample standard
  deviation (``ddof = 1``; 0 for a single item) over the items the row was measured on (photos, pairs);
* then the count columns of the table (``n_photos``, ``n_samples``...), integers.

Values are written with ``repr`` precision (no rounding in the CSV); non-finite values are written as
``inf`` / ``-inf`` / ``nan``. The Markdown shows ``mean ± std`` per metric with the column's format.
Both files are written atomically (:func:`fitdiff.io.atomic_write_text`)::

    rows = [TableRow("mean face", {"shape_rmse_mm": per_photo_errors}, {"n_photos": 40, "n_samples": 1})]
    table = ResultTable(rows, columns=[Column("shape_rmse_mm", "shape (mm)", "{:.2f}")])
    table.write(run_dir, "conditioning", title="Conditioning", header=["seed 0"])
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fitdiff.io import atomic_write_text

__all__ = ["Column", "TableRow", "ResultTable", "RowAccumulator", "summarize", "format_value"]


def summarize(values: Iterable[float] | np.ndarray) -> tuple[float, float]:
    """(mean, sample std with ddof = 1) of per-item values; std is 0 for one item, both NaN for none.

    Non-finite items propagate (an infinite PSNR gives an infinite mean and a NaN std).
    """
    array = np.asarray(
        list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64
    ).ravel()
    if array.size == 0:
        return math.nan, math.nan
    mean = float(array.mean())
    if array.size == 1:
        return mean, 0.0
    with np.errstate(invalid="ignore"):
        std = float(array.std(ddof=1))
    return mean, std


def format_value(value: float, fmt: str = "{:.3f}") -> str:
    """``fmt.format(value)`` for finite values, ``inf`` / ``-inf`` / ``nan`` otherwise."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return fmt.format(value)


@dataclass(frozen=True)
class Column:
    """How one metric is shown in Markdown.

    Attributes:
        key: metric name (the CSV columns are ``<key>_mean`` and ``<key>_std``).
        title: Markdown header (default: ``key``).
        fmt: ``str.format`` pattern of the mean and the std.
    """

    key: str
    title: str | None = None
    fmt: str = "{:.3f}"

    @property
    def header(self) -> str:
        return self.title or self.key


@dataclass
class TableRow:
    """One method's measurements.

    Attributes:
        method: the row's name (``mean face``, ``conditional spade s=1``...).
        values: metric name -> per-item values (one per photo, pair...), summarised by :func:`summarize`.
        counts: count column -> integer (``n_photos``, ``n_samples``...).
    """

    method: str
    values: Mapping[str, Sequence[float] | np.ndarray]
    counts: Mapping[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """``{<metric>_mean, <metric>_std}`` of every metric."""
        out: dict[str, float] = {}
        for key, values in self.values.items():
            out[f"{key}_mean"], out[f"{key}_std"] = summarize(np.asarray(values))
        return out


class RowAccumulator:
    """Per-item values of one row, gathered batch by batch (``add``), then :meth:`row`."""

    def __init__(self) -> None:
        self.values: dict[str, list[np.ndarray]] = {}

    def add(self, metrics: Mapping[str, Any], k: int = 1) -> None:
        """Metric name -> (B * k,) values (item-major): each item's value is the mean of its k values
        (e.g. k samples of one photo)."""
        for name, v in metrics.items():
            array = np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float64)
            self.values.setdefault(name, []).append(array.reshape(-1, k).mean(1))

    def row(self, method: str, n_samples: int = 1, count: str = "n_photos") -> TableRow:
        """The :class:`TableRow`, counts ``{count: items, "n_samples": n_samples}``."""
        values = {name: np.concatenate(parts) for name, parts in self.values.items()}
        n = len(next(iter(values.values()))) if values else 0
        return TableRow(method, values, {count: n, "n_samples": n_samples})


class ResultTable:
    """Rows of one table, their CSV and Markdown forms.

    Args:
        rows: the rows, in display order; method names must be distinct.
        columns: metric display specs, in column order; metrics of the rows without a spec follow in
            first-seen order with the default format. A metric missing from a row is NaN there.
        counts: count columns, in order (default: every count key of the rows, first-seen order).
    """

    def __init__(
        self, rows: Sequence[TableRow], columns: Sequence[Column] = (), counts: Sequence[str] | None = None
    ):
        names = [r.method for r in rows]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"table rows must have distinct method names; repeated: {', '.join(duplicates)}")
        self.rows = list(rows)
        known = {c.key for c in columns}
        extra = [Column(k) for k in _first_seen(k for r in rows for k in r.values) if k not in known]
        self.columns = [*columns, *extra]
        self.counts = list(counts) if counts is not None else _first_seen(k for r in rows for k in r.counts)

    @property
    def fieldnames(self) -> list[str]:
        """CSV header: ``method``, ``<metric>_mean``, ``<metric>_std`` per column, then the counts."""
        names = ["method"]
        for column in self.columns:
            names += [f"{column.key}_mean", f"{column.key}_std"]
        return names + self.counts

    def records(self) -> list[dict[str, float | int | str]]:
        """One flat dict per row, keyed by :attr:`fieldnames`."""
        out = []
        for row in self.rows:
            summary = row.summary()
            record: dict[str, float | int | str] = {"method": row.method}
            for column in self.columns:
                for suffix in ("_mean", "_std"):
                    record[column.key + suffix] = summary.get(column.key + suffix, math.nan)
            for name in self.counts:
                record[name] = int(row.counts.get(name, 0))
            out.append(record)
        return out

    def to_csv(self) -> str:
        """The CSV text (``\\n`` line ends)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fieldnames, lineterminator="\n")
        writer.writeheader()
        for record in self.records():
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in record.items()})
        return buffer.getvalue()

    def to_markdown(self, show_counts: bool = True) -> str:
        """A GitHub Markdown table: method, ``mean ± std`` per metric, the counts."""
        header = ["method", *(c.header for c in self.columns), *(self.counts if show_counts else [])]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|",
        ]
        for record in self.records():
            cells = [str(record["method"])]
            for column in self.columns:
                mean = float(record[f"{column.key}_mean"])
                std = float(record[f"{column.key}_std"])
                cells.append(f"{format_value(mean, column.fmt)} ± {format_value(std, column.fmt)}")
            if show_counts:
                cells += [str(record[name]) for name in self.counts]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{<prefix><method>/<metric>_<mean|std>: value}`` of every row (what tasks return)."""
        out: dict[str, float] = {}
        for record in self.records():
            for key, value in record.items():
                if key != "method" and key not in self.counts:
                    out[f"{prefix}{record['method']}/{key}"] = float(value)
        return out

    def write(
        self,
        directory: str | Path,
        name: str,
        title: str | None = None,
        header: Sequence[str] = (),
        sections: Sequence[str] = (),
    ) -> tuple[Path, Path, str]:
        """Write ``<name>.csv`` and ``<name>.md`` into ``directory`` atomically.

        Args:
            directory: destination folder (created).
            name: file stem.
            title: Markdown heading (default ``name``).
            header: lines listed under the heading (sample counts, sampler, hashes...).
            sections: Markdown blocks appended after the table.

        Returns:
            (csv path, markdown path, markdown text).
        """
        directory = Path(directory)
        markdown = self.markdown_document(title or name, header, sections)
        csv_path = atomic_write_text(directory / f"{name}.csv", self.to_csv())
        md_path = atomic_write_text(directory / f"{name}.md", markdown)
        return csv_path, md_path, markdown

    def markdown_document(self, title: str, header: Sequence[str] = (), sections: Sequence[str] = ()) -> str:
        """Heading, a bullet list of ``header`` lines, the table, then ``sections``."""
        parts = [f"## {title}\n"]
        if header:
            parts.append("\n".join(f"- {line}" for line in header) + "\n")
        parts.append(self.to_markdown())
        parts.extend(s if s.endswith("\n") else s + "\n" for s in sections)
        return "\n".join(parts)


def _first_seen(keys: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for key in keys:
        seen.setdefault(key, None)
    return list(seen)
