"""Downloading an asset: stream to a temporary file, hash while streaming, check, move into place.

The transfer goes through :class:`fitdiff.io.AtomicFile`, so the file appears under its final name only
when the byte count and the sha256 match: an interrupted or corrupt transfer leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fitdiff.assets.errors import AssetChecksumError, AssetDownloadError, AssetMissingError
from fitdiff.assets.registry import get
from fitdiff.assets.store import asset_path, verify, write_stamp
from fitdiff.io import CHUNK_BYTES, AtomicFile

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["fetch"]


def _iter_response(response: io.BufferedIOBase, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Blocks of at most ``chunk`` bytes read from ``response`` until it is exhausted."""
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
        write_stamp(final, asset.sha256)
    return final


class _progress:
    """Context manager yielding an ``advance(n_bytes)`` callable backed by a rich progress bar."""

    def __init__(self, enabled: bool, label: str, total: int | None) -> None:
        self.enabled = enabled
        self.label = label
        self.total = total
        self._bar: Progress | None = None

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

        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._bar = bar
        bar.__enter__()
        task = bar.add_task(self.label, total=self.total)
        return lambda n: bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
