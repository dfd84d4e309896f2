"""``python -m fitdiff.report RUN_DIR``: one self-contained, offline HTML page of an evaluation run.

The page (default ``RUN_DIR/report.html``) shows every result table of the run (its Markdown document:
title, header lines, the ``mean ± std`` table and extra sections; its plot; a download of its CSV), the
reconstruction grids and the settings files. Everything is inlined, so the file can be mailed, archived
or opened without the run directory and without a network.

- :mod:`~fitdiff.report.run_dir` — what a run directory holds (``tables.json`` or the file-name fallback).
- :mod:`~fitdiff.report.html` — the page.
- :mod:`~fitdiff.report.__main__` — the command line.

::

    from fitdiff.report import write_report
    path = write_report("outputs/eval/2026-12-02")      # -> outputs/eval/2026-12-02/report.html
"""

from __future__ import annotations

from pathlib import Path

from fitdiff.io import atomic_write_text
from fitdiff.report.html import render_report
from fitdiff.report.run_dir import ReportError, RunContents, read_run_dir

__all__ = ["REPORT_NAME", "ReportError", "RunContents", "read_run_dir", "render_report", "write_report"]

#: default file name of the report inside the run directory
REPORT_NAME = "report.html"


def write_report(run_dir: str | Path, out: str | Path | None = None, title: str | None = None) -> Path:
    """Write the HTML report of ``run_dir`` atomically to ``out`` (default ``run_dir/report.html``).

    Args:
        run_dir: the evaluation run directory.
        out: the HTML file to write (its folder is created).
        title: the page title (default: ``tables.json``'s title, else one naming the run directory).

    Returns:
        The path written.

    Raises:
        ReportError: ``run_dir`` is missing, holds no table, or one of its files is malformed (the message
            names the file).
    """
    contents = read_run_dir(run_dir)
    target = Path(out) if out is not None else contents.run_dir / REPORT_NAME
    return atomic_write_text(target, render_report(contents, title))
