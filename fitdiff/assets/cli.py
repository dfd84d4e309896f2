"""The ``python -m fitdiff.assets`` command line: status, fetch, add, path."""

from __future__ import annotations

import argparse
import sys

from fitdiff.assets.download import fetch
from fitdiff.assets.errors import AssetError
from fitdiff.assets.registry import ASSETS
from fitdiff.assets.status import print_status
from fitdiff.assets.store import add, asset_path

__all__ = ["main"]

DESCRIPTION = "Named external files: pretrained weights and shape models."


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m fitdiff.assets", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    p_status = sub.add_parser("status", help="list registered assets and whether they are present")
    p_status.add_argument("--verify", action="store_true", help="re-hash every present file")
    p_fetch = sub.add_parser("fetch", help="download an asset, verify its sha256, move it into place")
    p_fetch.add_argument("name", help="asset name, or 'all' for every downloadable asset")
    p_fetch.add_argument("--url", help="download from this address (a mirror) instead")
    p_fetch.add_argument("--force", action="store_true", help="download even if a verified copy exists")
    p_fetch.add_argument("--no-progress", action="store_true")
    p_add = sub.add_parser("add", help="install a file obtained by hand")
    p_add.add_argument("name")
    p_add.add_argument("file")
    p_path = sub.add_parser("path", help="print where an asset is expected")
    p_path.add_argument("name")
    args = parser.parse_args(argv)

    try:
        if args.command == "status":
            print_status(full_verify=args.verify)
        elif args.command == "fetch":
            names = [n for n, a in sorted(ASSETS.items()) if a.url] if args.name == "all" else [args.name]
            if args.url and len(names) != 1:
                parser.error("--url needs a single asset name")
            for name in names:
                path = fetch(name, url=args.url, force=args.force, progress=not args.no_progress)
                print(f"{name}: {path}")
        elif args.command == "add":
            print(add(args.name, args.file))
        elif args.command == "path":
            print(asset_path(args.name))
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
