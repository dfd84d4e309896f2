"""Named external files: pretrained weights and shape models.

Every file the code needs but the repository cannot ship (licences, size) is registered here with its
expected location, sha256, source and licence note. Code asks for an asset with :func:`require`, which
returns its path or raises :class:`AssetMissingError` naming the file and the command that gets it.

Command line::

    python -m fitdiff.assets status [--verify]   # which assets are present, missing or corrupt
    python -m fitdiff.assets fetch NAME [--url URL] [--force]
    python -m fitdiff.assets add NAME FILE       # install a file obtained by hand (checksum checked)
    python -m fitdiff.assets path NAME

Files live in ``$FITDIFF_ASSETS`` (default ``~/.cache/fitdiff/assets``). Downloads stream into a
temporary file in the same folder, are hashed while streaming, and are renamed into place only when
the byte count and the sha256 match: an interrupted or corrupt transfer leaves nothing behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fitdiff.io import CHUNK_BYTES, AtomicFile, atomic_write, atomic_write_text, sha256_file

__all__ = [
    "Asset",
    "AssetError",
    "AssetMissingError",
    "AssetChecksumError",
    "AssetDownloadError",
    "ASSETS",
    "register",
    "get",
    "asset_dir",
    "asset_path",
    "require",
    "fetch",
    "add",
    "main",
]

class AssetError(RuntimeError):
    """Base class of asset errors."""


class AssetMissingError(AssetError, FileNotFoundError):
    """An asset the code needs is not on disk; the message says how to get it."""


class AssetChecksumError(AssetError):
    """A file's sha256 differs from the registered one."""


class AssetDownloadError(AssetError):
    """A transfer failed or was truncated; nothing was left behind."""


@dataclass(frozen=True)
class Asset:
    """One registered external file.

    Attributes:
        name: registry key used on the command line and in configs (``arcface_ir_se50``).
        filename: file name inside the asset folder.
        description: what it is and what uses it.
        sha256: expected hex digest of the file; ``None`` when the file is user-made (then only presence
            is checked) .
        url: where ``fetch`` downloads it from; ``None`` when it must be obtained by hand.
        source: human-readable origin (project, release).
        licence: licence / terms of use note.
        how_to_get: instructions for assets with no URL (shown in errors).
        size_bytes: expected size, when known (checked after download).
    """

    name: str
    filename: str
    description: str
    sha256: str | None
    url: str | None
    source: str
    licence: str
    how_to_get: str = ""
    size_bytes: int | None = None

    def fetch_hint(self) -> str:
        """The command or instructions that put this asset in place."""
        if self.url:
            return f"python -m fitdiff.assets fetch {self.name}"
        hint = self.how_to_get or "obtain it from its source"
        return f"{hint}; then: python -m fitdiff.assets add {self.name} /path/to/{self.filename}"


ASSETS: dict[str, Asset] = {}


def register(asset: Asset, *, replace: bool = False) -> Asset:
    """Add ``asset`` to the registry (later stages and plug-ins register their own files)."""
    if asset.name in ASSETS and not replace:
        raise ValueError(f"asset {asset.name!r} is already registered")
    if asset.sha256 is not None and (len(asset.sha256) != 64 or not _is_hex(asset.sha256)):
        raise ValueError(f"asset {asset.name!r}: sha256 must be 64 hex digits, got {asset.sha256!r}")
    ASSETS[asset.name] = asset
    return asset


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download/v0.1.0"

register(
    Asset(
        name="arcface_ir_se50",
        filename="recognition_arcface_ir_se50.pth",
        description="ArcFace IR-SE50 face-recognition weights (512-d identity embedding, facexlib Backbone)",
        sha256="a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28",
        url=f"{_FACEXLIB}/recognition_arcface_ir_se50.pth",
        source="facexlib v0.1.0 release (xinntao/facexlib)",
        licence="facexlib code MIT; weights trained on MS1M-derived data: research use",
        size_bytes=175367323,
    )
)
register(
    Asset(
        name="retinaface_resnet50",
        filename="detection_Resnet50_Final.pth",
        description="RetinaFace ResNet-50 face detector with 5 landmarks (facexlib RetinaFace)",
        sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        url=f"{_FACEXLIB}/detection_Resnet50_Final.pth",
        source="facexlib v0.1.0 release (xinntao/facexlib)",
        licence="facexlib code MIT; weights trained on WIDER FACE: research use",
        size_bytes=109497761,
    )
)
register(
    Asset(
        name="lpips_vgg16",
        filename="vgg16-397923af.pth",
        description="ImageNet VGG-16 backbone for LPIPS(net='vgg') (the lpips package ships only its heads)",
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        source="torchvision model zoo",
        licence="torchvision BSD-3-Clause; ImageNet-trained weights: non-commercial research terms",
    )
)
register(
    Asset(
        name="lsfm",
        filename="lsfm.npz",
        description="LSFM 3D morphable shape model converted to fitdiff's PCAShapeModel .npz",
        sha256=None,
        url=None,
        source="Large Scale Facial Model (Booth et al., Imperial College London)",
        licence="non-commercial research licence, granted on request by its authors",
        how_to_get=(
            "request LSFM from its authors (Imperial College London, iBUG), convert the .mat with "
            "fitdiff's LSFM converter (see README, 'Shape models')"
        ),
    )
)


def get(name: str) -> Asset:
    """The registered asset ``name``; a clear error lists the known names otherwise."""
    try:
        return ASSETS[name]
    except KeyError:
        known = ", ".join(sorted(ASSETS))
        raise AssetError(f"unknown asset {name!r}; registered assets: {known}") from None


def asset_dir() -> Path:
    """Folder holding asset files: ``$FITDIFF_ASSETS`` or ``~/.cache/fitdiff/assets``."""
    env = os.environ.get("FITDIFF_ASSETS")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "fitdiff" / "assets"


def asset_path(name: str) -> Path:
    """Where asset ``name`` is expected (whether or not it exists)."""
    return asset_dir() / get(name).filename


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _verified_stamp_matches(path: Path, sha256: str) -> bool:
    """True when a stamp written after hashing still describes this file (size and mtime unchanged)."""
    stamp = _stamp_path(path)
    if not stamp.is_file():
        return False
    try:
        record = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    info = path.stat()
    return record == {"sha256": sha256, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _write_stamp(path: Path, sha256: str) -> None:
    info = path.stat()
    record = {"sha256": sha256, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    atomic_write_text(_stamp_path(path), json.dumps(record))


def verify(name: str, *, use_stamp: bool = True) -> bool:
    """Whether asset ``name`` is present and matches its sha256 (hashes once, then trusts a stamp)."""
    asset = get(name)
    path = asset_path(name)
    if not path.is_file():
        return False
    if asset.sha256 is None:
        return True
    if use_stamp and _verified_stamp_matches(path, asset.sha256):
        return True
    ok = sha256_file(path) == asset.sha256
    if ok:
        _write_stamp(path, asset.sha256)
    return ok


def require(name: str, *, check: bool = True) -> Path:
    """Path of asset ``name``, checked; raise an error naming the file and how to get it otherwise.

    Args:
        name: registry key.
        check: verify the sha256 (cached by a stamp file after the first full hash).

    Raises:
        AssetMissingError: the file is not there.
        AssetChecksumError: the file is there but its sha256 differs.
    """
    asset = get(name)
    path = asset_path(name)
    if not path.is_file():
        raise AssetMissingError(
            f"missing asset {name!r}: {asset.description}.\n"
            f"  expected file: {path}\n"
            f"  get it with:   {asset.fetch_hint()}\n"
            f"  (set FITDIFF_ASSETS to use another folder)"
        )
    if check and asset.sha256 is not None and not verify(name):
        raise AssetChecksumError(
            f"asset {name!r} at {path} has sha256 {sha256_file(path)}, expected {asset.sha256}. "
            f"The file is corrupt or a different release; replace it with: "
            f"python -m fitdiff.assets fetch {name} --force"
        )
    return path


def _iter_response(response, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    while True:
        block = response.read(chunk)
        if not block:
            return
        yield block


def fetch(
    name: str,
    *,
    url: str | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download asset ``name``, verify it and move it into place atomically.

    Args:
        name: registry key.
        url: download from this address instead of the registered one (a mirror).
        force: download even when a verified file is already present.
        progress: show a progress bar (rich) while downloading.
        timeout: socket timeout in seconds.

    Returns:
        The asset's final path.

    Raises:
        AssetDownloadError: the transfer failed or was shorter than announced.
        AssetChecksumError: the downloaded bytes do not match the registered sha256.
    """
    asset = get(name)
    final = asset_path(name)
    source = url or asset.url
    if source is None:
        raise AssetMissingError(f"asset {name!r} cannot be downloaded automatically: {asset.fetch_hint()}")
    if final.is_file() and not force and verify(name):
        return final
    with AtomicFile(final) as out:  # renamed into place only if no error is raised below
        digest = hashlib.sha256()
        received = 0
        try:
            request = urllib.request.Request(source, headers={"User-Agent": "fitdiff-assets"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length_header = response.headers.get("Content-Length")
                expected = int(length_header) if length_header else asset.size_bytes
                with _progress(progress, f"{name}", expected) as advance:
                    for block in _iter_response(response):
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                        advance(len(block))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AssetDownloadError(f"download of asset {name!r} from {source} failed: {exc}") from exc
        except Exception as exc:  # http.client.IncompleteRead and friends
            raise AssetDownloadError(f"download of asset {name!r} from {source} failed: {exc!r}") from exc
        if expected is not None and received != expected:
            raise AssetDownloadError(
                f"download of asset {name!r} from {source} was truncated: received {received} of "
                f"{expected} bytes; nothing was saved, run the command again"
            )
        actual = digest.hexdigest()
        if asset.sha256 is not None and actual != asset.sha256:
            raise AssetChecksumError(
                f"download of asset {name!r} from {source} has sha256 {actual}, expected {asset.sha256}; "
                f"nothing was saved"
            )
    if asset.sha256 is not None:
        _write_stamp(final, asset.sha256)
    return final


class _progress:
    """Context manager yielding an ``advance(n_bytes)`` callable backed by a rich progress bar."""

    def __init__(self, enabled: bool, label: str, total: int | None):
        self.enabled = enabled
        self.label = label
        self.total = total
        self._bar = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._bar.__enter__()
        task = self._bar.add_task(self.label, total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def add(name: str, source: str | os.PathLike[str], *, move: bool = False) -> Path:
    """Install a file obtained by hand as asset ``name`` after checking its sha256."""
    asset = get(name)
    source = Path(source)
    if not source.is_file():
        raise AssetMissingError(f"cannot add asset {name!r}: {source} is not a file")
    if asset.sha256 is not None:
        actual = sha256_file(source)
        if actual != asset.sha256:
            raise AssetChecksumError(
                f"{source} has sha256 {actual}, but asset {name!r} expects {asset.sha256}"
            )
    final = asset_path(name)
    with atomic_write(final) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, CHUNK_BYTES)
    if move:
        source.unlink()
    if asset.sha256 is not None:
        _write_stamp(final, asset.sha256)
    return final


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


def print_status(*, full_verify: bool = False, file=None) -> list[dict[str, str]]:
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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m fitdiff.assets", description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    raise SystemExit(main())
