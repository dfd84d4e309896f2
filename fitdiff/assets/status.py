"""The asset status report: which registered files are present, missing or corrupt."""

from __future__ import annotations

from typing import TextIO

from fitdiff.assets.registry import ASSETS
from fitdiff.assets.store import asset_dir, asset_path, verify

__all__ = ["status_rows", "print_status"]


def status_rows(*, full_verify: bool = False) -> list[dict[str, str]]:
    """One row per registered asset: name, state, path, how to get it."""
    rows = []
    for name, asset in sorted(ASSETS.items()):
        path = asset_path(name)
        if not path.is_file():
            state = "missing"
        elif asset.sha256 is None:
            state = "present (no checksum)"
        elif verify(name, use_stamp=not full_verify):
            state = "ok"
        else:
            state = "CORRUPT (sha256 mismatch)"
        rows.append(
            {
                "name": name,
                "state": state,
                "path": str(path),
                "description": asset.description,
                "get": asset.fetch_hint(),
                "licence": asset.licence,
            }
        )
    return rows


def print_status(*, full_verify: bool = False, file: TextIO | None = None) -> list[dict[str, str]]:
    """Print the asset table (rich) and return its rows."""
    from rich.console import Console
    from rich.table import Table

    rows = status_rows(full_verify=full_verify)
    table = Table(title=f"fitdiff assets in {asset_dir()}", show_lines=False)
    for column in ("name", "state", "description", "get"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = "green" if row["state"] == "ok" else ("red" if "CORRUPT" in row["state"] else "yellow")
        table.add_row(row["name"], f"[{style}]{row['state']}[/]", row["description"], row["get"])
    Console(file=file, width=160).print(table)
    return rows
