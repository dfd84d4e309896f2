"""Command line: ``python -m fitdiff.report RUN_DIR [--out FILE] [--title T]``.

Writes the report (default ``RUN_DIR/report.html``) and prints its path. Exit status 0 when written;
2 with a message naming the path when ``RUN_DIR`` is missing, holds no table, or has a malformed file.
"""

from __future__ import annotations

import argparse
import sys

from fitdiff.report import REPORT_NAME, ReportError, write_report


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command."""
    parser = argparse.ArgumentParser(
        prog="python -m fitdiff.report",
        description="Write one self-contained, offline HTML report of an evaluation run directory.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by evaluate.py")
    parser.add_argument("--out", metavar="FILE", help=f"HTML file to write (default RUN_DIR/{REPORT_NAME})")
    parser.add_argument("--title", metavar="T", help="page title (default: the title in tables.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0 written, 2 bad run directory)."""
    args = build_parser().parse_args(argv)
    try:
        path = write_report(args.run_dir, args.out, args.title)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
