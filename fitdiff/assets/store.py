"""The asset folder: where files live, sha256 verification cached by a stamp, require() and add().

A file is hashed in full once; a ``<file>.verified.json`` stamp then records its sha256, size and
mtime, and later checks trust the stamp while size and mtime are unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from fitdiff.assets.errors import AssetChecksumError, AssetMissingError
from fitdiff.assets.registry import get
from fitdiff.io import CHUNK_BYTES, atomic_write, atomic_write_text, sha256_file

__all__ = ["asset_dir", "asset_path", "verify", "write_stamp", "require", "add"]


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
    """The verification stamp beside ``path``."""
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


def write_stamp(path: Path, sha256: str) -> None:
    """Record that ``path``, at its current size and mtime, has been hashed to ``sha256``."""
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
        write_stamp(path, asset.sha256)
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
        write_stamp(final, asset.sha256)
    return final
