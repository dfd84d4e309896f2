"""Named external files: pretrained weights and shape models.

Every file the code needs but the repository cannot ship (licences, size) is registered here with its
expected location, sha256, source and licence. Code asks for an asset with :func:`require`, which
returns its path or raises :class:`AssetMissingError` naming the file and the command that gets it.

Command line::

    python -m fitdiff.assets status [--verify]   # which assets are present, missing or corrupt
    python -m fitdiff.assets fetch NAME [--url URL] [--force]
    python -m fitdiff.assets add NAME FILE       # install a file obtained by hand (checksum checked)
    python -m fitdiff.assets path NAME

Files live in ``$FITDIFF_ASSETS`` (default ``~/.cache/fitdiff/assets``).

Modules:

- ``errors``: :class:`AssetError` and its subclasses.
- ``registry``: :class:`Asset`, :data:`ASSETS`, :func:`register`, :func:`get` and the built-in assets.
- ``store``: :func:`asset_dir`, :func:`asset_path`, :func:`verify` (sha256 cached by a size+mtime
  stamp), :func:`require`, :func:`add`.
- ``download``: :func:`fetch` (streamed, hashed while streaming, moved into place atomically).
- ``status``: :func:`status_rows`, :func:`print_status`.
- ``cli``: :func:`main`, run by ``__main__``.
"""

from __future__ import annotations

# ``X as X``: public names kept outside __all__ as before (print_status, status_rows, verify).
from fitdiff.assets.cli import main
from fitdiff.assets.download import fetch
from fitdiff.assets.errors import AssetChecksumError, AssetDownloadError, AssetError, AssetMissingError
from fitdiff.assets.registry import ASSETS, Asset, get, register
from fitdiff.assets.status import print_status as print_status
from fitdiff.assets.status import status_rows as status_rows
from fitdiff.assets.store import add, asset_dir, asset_path, require
from fitdiff.assets.store import verify as verify

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
