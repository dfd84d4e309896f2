"""The result-table writer: CSV layout, mean and std, Markdown, atomic files; the acceptance checks."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from fitdiff.evaluation.checks import acceptance_checks
from fitdiff.evaluation.table import Column, ResultTable, TableRow, format_value, summarize


def _table() -> ResultTable:
    rows = [
        TableRow(
            "mean face",
            {"shape_rmse_mm": [1.0, 2.0, 3.0], "diffuse_psnr": [20.0, 22.0, 24.0]},
            {"n_photos": 3, "n_samples": 1},
        ),
        TableRow(
            "conditional spade s=1",
            {"shape_rmse_mm": np.array([0.5, 0.5, 0.5]), "extra": [7.0, 9.0, 11.0]},
            {"n_photos": 3, "n_samples": 4},
        ),
    ]
    return ResultTable(
        rows,
        [Column("shape_rmse_mm", "shape (mm)", "{:.2f}"), Column("diffuse_psnr")],
        counts=["n_photos", "n_samples"],
    )


def test_summarize_is_mean_and_sample_std():
    assert summarize([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert summarize([4.0]) == (4.0, 0.0)
    mean, std = summarize([])
    assert math.isnan(mean) and math.isnan(std)
    mean, std = summarize([math.inf, 10.0])
    assert mean == math.inf and math.isnan(std)
    assert (
        format_value(math.inf) == "inf"
        and format_value(math.nan) == "nan"
        and format_value(1.23456) == "1.235"
    )


def test_csv_columns_values_and_missing_metrics(tmp_path):
    table = _table()
    csv_path, md_path, markdown = table.write(
        tmp_path, "demo", title="Demo", header=["seed 0"], sections=["tail"]
    )
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        records = list(reader)
        assert reader.fieldnames == [
            "method",
            "shape_rmse_mm_mean",
            "shape_rmse_mm_std",
            "diffuse_psnr_mean",
            "diffuse_psnr_std",
            "extra_mean",
            "extra_std",
            "n_photos",
            "n_samples",
        ]
    first, second = records
    assert first["method"] == "mean face"
    assert float(first["shape_rmse_mm_mean"]) == 2.0 and float(first["shape_rmse_mm_std"]) == 1.0
    assert float(first["diffuse_psnr_mean"]) == 22.0 and float(first["diffuse_psnr_std"]) == 2.0
    assert math.isnan(float(first["extra_mean"]))  # a metric a row does not have is NaN there
    assert float(second["shape_rmse_mm_std"]) == 0.0 and float(second["extra_mean"]) == 9.0
    assert (first["n_photos"], second["n_samples"]) == ("3", "4")
    assert md_path.read_text() == markdown
    assert markdown.startswith("## Demo\n\n- seed 0\n")
    assert "| mean face | 2.00 ± 1.00 | 22.000 ± 2.000 | nan ± nan | 3 | 1 |" in markdown
    assert markdown.rstrip().endswith("tail")
    assert table.metrics("t/")["t/mean face/shape_rmse_mm_mean"] == 2.0


def test_csv_keeps_full_precision():
    table = ResultTable([TableRow("a", {"x": [1 / 3, 2 / 3]})])
    row = next(csv.DictReader(table.to_csv().splitlines()))
    assert float(row["x_mean"]) == 0.5 and float(row["x_std"]) == float(np.std([1 / 3, 2 / 3], ddof=1))


def test_rows_need_distinct_names():
    with pytest.raises(ValueError, match="repeated: a"):
        ResultTable([TableRow("a", {"x": [1.0]}), TableRow("a", {"x": [2.0]})])


def test_write_is_atomic(tmp_path, monkeypatch):
    table = _table()
    table.write(tmp_path, "demo")
    before = (tmp_path / "demo.csv").read_text()
    other = ResultTable([TableRow("b", {"x": [5.0]})])

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("fitdiff.io.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        other.write(tmp_path, "demo")
    assert (tmp_path / "demo.csv").read_text() == before  # the old table is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.csv", "demo.md"]  # no temporary file left


def _row(method: str, shape: float, diffuse: float, k: int = 1) -> TableRow:
    return TableRow(
        method, {"shape_rmse_mm": [shape], "diffuse_rmse": [diffuse]}, {"n_photos": 1, "n_samples": k}
    )


def test_acceptance_checks_state_numbers_and_verdicts():
    table = ResultTable(
        [
            _row("mean face", 6.0, 0.09),
            _row("linear probe", 5.0, 0.05),
            _row("unconditional", 9.0, 0.12, 4),
            _row("unconditional (mean of 4)", 7.0, 0.1, 4),
            _row("conditional spade s=2", 4.0, 0.06, 4),
            _row("conditional spade s=2 (mean of 4)", 4.5, 0.04, 4),
            _row("conditional none s=2", 8.0, 0.11, 4),
            _row("conditional none s=2 (mean of 4)", 7.5, 0.1, 4),
        ]
    )
    lines = acceptance_checks(table)
    spade = next(line for line in lines if line.startswith("conditional spade s=2:"))
    assert "(56% lower; 30% lower needed: yes)" in spade  # 1 - 4/9
    assert "shape of the mean of samples 4.50 mm <= linear probe 5.00 mm: yes" in spade
    assert "diffuse below mean face 0.0900: yes" in spade
    none = next(line for line in lines if line.startswith("conditional none s=2:"))
    assert "(11% lower; 30% lower needed: NO)" in none and "shape below mean face 6.00 mm: NO" in none
    assert (
        "none worse than spade at s=2: shape 8.00 mm vs 4.00 mm: yes; diffuse 0.1100 vs 0.0600: yes" in lines
    )
    assert acceptance_checks(ResultTable([_row("mean face", 1.0, 1.0)])) == []
    worse = acceptance_checks(
        ResultTable([_row("unconditional", 4.0, 0.1), _row("conditional x s=1", 5.0, 0.1)])
    )
    assert "(25% higher; 30% lower needed: NO)" in worse[0]
