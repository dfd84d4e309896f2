"""Shard folders given as a URL: ``s3://``, ``gs://``, ``https://``, ``http://``, ``file://`` or ``pipe:``.

A ``data_dir`` is a local folder or a URL. URLs with a scheme are opened with fsspec (``s3://`` needs
``s3fs`` installed, ``gs://`` needs ``gcsfs``; ``http(s)://`` uses fsspec's HTTP filesystem, on aiohttp).
Every file is read front to back as a non-seekable stream: HTTP files with one streaming GET, not
range requests.

``pipe:`` locations are shell commands whose standard output is the file (the WebDataset convention).
A ``pipe:`` data_dir is a command template: ``{name}`` is replaced by the file name (shell-quoted;
leave it outside quotes), e.g. ``pipe:aws s3 cp s3://bucket/faces/{name} -``; without ``{name}``,
``/<name>`` is appended to the command, e.g. ``pipe:curl -sf https://host/faces`` runs
``curl -sf https://host/faces/manifest.json``. A command that exits with a non-zero status is an error
(raised when its output ends), so use ``curl -f``, which fails on HTTP errors.

No read is retried: a dropped connection, a short body or a failed command raises (the shard reader
turns it into a :class:`~fitdiff.data.ShardError` naming the URL and the last good sample).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from fitdiff.data.errors import ManifestError

__all__ = ["is_url", "join_url", "open_url", "as_location", "load_json_url", "check_remote_shards"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_PIPE = "pipe:"
_BUFFER = 1 << 20  # read buffer, bytes
_NOT_FOUND = "not found (no such file or object, or HTTP 404)"


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a URL (``scheme://...`` or ``pipe:...``) rather than a local path."""
    if isinstance(location, Path):
        return False
    return location.startswith(_PIPE) or bool(_SCHEME.match(location))


def as_location(data_dir: str | Path) -> str | Path:
    """``data_dir`` as the DataModules keep it: a :class:`Path` for a local folder, else the URL string."""
    return str(data_dir) if is_url(data_dir) else Path(data_dir)


def join_url(base: str | Path, name: str) -> str:
    """The location of file ``name`` in the folder ``base`` (local path, URL or ``pipe:`` template)."""
    if not is_url(base):
        return str(Path(base) / name)
    base = str(base)
    if base.startswith(_PIPE):
        quoted = shlex.quote(name)
        return base.replace("{name}", quoted) if "{name}" in base else f"{base.rstrip('/')}/{quoted}"
    return f"{base.rstrip('/')}/{name}"


class _Raw(io.RawIOBase):
    """A read-only, non-seekable raw stream over a ``read(n)`` function, with an end-of-data check.

    Args:
        read: returns up to ``n`` bytes, ``b""`` at the end.
        name: the URL (for messages).
        size: the expected length in bytes, when known: an end before it raises :class:`OSError`.
        at_end: called once at the end of the data (may raise).
        on_close: called once on close.
    """

    def __init__(self, read: Callable[[int], bytes], name: str, *, size: int | None = None,
                 at_end: Callable[[], None] | None = None, on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._read, self.name, self.size = read, name, size
        self._at_end, self._on_close = at_end, on_close
        self._done = False
        self.position = 0  # bytes delivered

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._done:
            return 0
        view = memoryview(buffer).cast("B")
        data = self._read(len(view))
        if not data:
            self._done = True
            if self.size is not None and self.position != self.size:
                raise OSError(f"the data ended after {self.position} of {self.size} bytes")
            if self._at_end is not None:
                self._at_end()
            return 0
        view[: len(data)] = data
        self.position += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                if self._on_close is not None:
                    self._on_close()
            finally:
                super().close()


class _Command:
    """A running ``pipe:`` command: its standard output, its exit-status check and its cleanup."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=self.stderr)
        assert self.process.stdout is not None
        self.read = self.process.stdout.read

    def check(self) -> None:
        """Wait for the command; raise :class:`OSError` with its last stderr line if it failed."""
        status = self.process.wait()
        if status != 0:
            self.stderr.seek(0)
            lines = [s.strip() for s in self.stderr.read().decode("utf-8", "replace").splitlines() if s.strip()]
            said = f": {lines[-1]}" if lines else ""
            raise OSError(f"command `{self.command}` exited with status {status}{said}")

    def close(self) -> None:
        assert self.process.stdout is not None
        self.process.stdout.close()
        if self.process.poll() is None:  # closed before the end (a reader that stopped early)
            self.process.kill()
        self.process.wait()
        self.stderr.close()


def open_url(url: str | Path) -> BinaryIO:
    """Open a local file or a URL for reading, buffered (1 MiB).

    Local paths give a regular (seekable) file. URLs give a non-seekable stream: only ``read`` works, a
    dropped connection or short body raises from ``read`` (no retry), and a ``pipe:`` command that
    exits non-zero raises when its output ends.

    Raises:
        FileNotFoundError: the file or object does not exist (HTTP 404); the message names the URL.
        OSError, or the filesystem's own errors: anything else that fails while opening.
    """
    if not is_url(url):
        return open(url, "rb", buffering=_BUFFER)  # noqa: SIM115 - the caller closes it
    url = str(url)
    if url.startswith(_PIPE):
        command = _Command(url[len(_PIPE):])
        raw = _Raw(command.read, url, at_end=command.check, on_close=command.close)
        return io.BufferedReader(raw, buffer_size=_BUFFER)  # type: ignore[return-value]
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
        handle = fs.open(path, "rb", block_size=0) if _is_http(fs) else fs.open(path, "rb")  # 0: one streaming GET
    except FileNotFoundError as exc:
        if not _missing(exc):
            raise OSError(_describe(exc.__cause__)) from exc.__cause__
        raise FileNotFoundError(errno.ENOENT, _NOT_FOUND, url) from None
    size = getattr(handle, "size", None)
    raw = _Raw(handle.read, url, size=size if isinstance(size, int) else None, on_close=handle.close)
    return io.BufferedReader(raw, buffer_size=_BUFFER)  # type: ignore[return-value]


def load_json_url(url: str, hint: str) -> Any:
    """The JSON document at ``url`` (a manifest); ``hint`` is added to the message when it does not exist.

    Raises:
        ManifestError: one line naming the URL: missing, unreadable (network, command) or not JSON.
    """
    try:
        with open_url(url) as stream:
            data = stream.read()
    except FileNotFoundError:
        raise ManifestError(f"{url} does not exist: {hint}") from None
    except Exception as exc:  # connection refused or dropped, HTTP errors, a failed command, a missing fsspec backend
        raise ManifestError(f"{url}: cannot be read ({_describe(exc)})") from exc
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{url}: not valid JSON ({exc})") from exc


class _Entry(Protocol):
    name: str
    split: str
    bytes: int
    sha256: str


def check_remote_shards(base: str, shards: Iterable[_Entry], manifest_name: str, *, verify_checksums: bool = False,
                        splits: Iterable[str] | None = None) -> None:
    """The URL counterpart of ``check_shard_files``: existence and size where the storage tells them.

    fsspec URLs: one folder listing (where the filesystem lists, HTTP excepted), then a metadata request
    for each shard the listing misses; a size the storage does not report is not compared. ``pipe:``
    URLs: nothing is checked without ``verify_checksums``. ``verify_checksums`` streams every shard and
    compares its length and sha256 (any URL).

    Raises:
        ManifestError: naming the first shard (by URL) that is missing, of the wrong size or checksum.
    """
    manifest_url = join_url(base, manifest_name)
    keep = None if splits is None else set(splits)
    wanted = [e for e in shards if keep is None or e.split in keep]
    if not base.startswith(_PIPE) and wanted:
        sizes = _remote_sizes(base, [e.name for e in wanted], manifest_url)
        for entry in wanted:
            size = sizes[entry.name]
            if size is not None and size != entry.bytes:
                raise ManifestError(f"shard {join_url(base, entry.name)}: {size} bytes in storage, manifest says "
                                    f"{entry.bytes}")
    if verify_checksums:
        for entry in wanted:
            url = join_url(base, entry.name)
            size, digest = _stream_digest(url)
            if size != entry.bytes:
                raise ManifestError(f"shard {url}: {size} bytes read, manifest says {entry.bytes}")
            if digest != entry.sha256:
                raise ManifestError(f"shard {url}: sha256 {digest} does not match the manifest's {entry.sha256}")


def _remote_sizes(base: str, names: list[str], manifest_url: str) -> dict[str, int | None]:
    """Size in bytes (``None``: not reported) of each file ``name`` in the fsspec folder ``base``."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(base.rstrip("/"))
    listed: dict[str, int | None] = {}
    if not _is_http(fs):  # HTTP index pages carry no sizes
        try:
            listed = {str(d["name"]).rstrip("/").rsplit("/", 1)[-1]: d.get("size") for d in fs.ls(root, detail=True)}
        except Exception:  # noqa: BLE001 - no listing permission, or no listing: ask per file
            listed = {}
    sizes: dict[str, int | None] = {}
    for name in names:
        size = listed.get(name)
        if size is None:
            url = join_url(base, name)
            try:
                size = fs.info(f"{root.rstrip('/')}/{name}").get("size")
            except Exception as exc:
                if isinstance(exc, FileNotFoundError) and _missing(exc):
                    raise ManifestError(f"shard {url} is listed in {manifest_url} but does not exist") from None
                cause = exc.__cause__ if isinstance(exc, FileNotFoundError) else exc
                raise ManifestError(f"shard {url}: cannot be checked ({_describe(cause)})") from exc
        sizes[name] = int(size) if size is not None else None
    return sizes


def _stream_digest(url: str) -> tuple[int, str]:
    """(bytes, sha256 hex) of the file at ``url``, read as a stream; failures become ManifestError."""
    digest, total = hashlib.sha256(), 0
    try:
        with open_url(url) as stream:
            while chunk := stream.read(_BUFFER):
                digest.update(chunk)
                total += len(chunk)
    except FileNotFoundError:
        raise ManifestError(f"shard {url} does not exist") from None
    except Exception as exc:
        raise ManifestError(f"shard {url}: cannot be read ({_describe(exc)})") from exc
    return total, digest.hexdigest()


def _is_http(fs: Any) -> bool:
    """Whether the fsspec filesystem ``fs`` is the HTTP(S) one."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & {"http", "https"})


def _missing(exc: FileNotFoundError) -> bool:
    """Whether fsspec's FileNotFoundError means "no such file": fsspec's HTTP filesystem raises it for
    any failure of its metadata request (connection refused, 403 ...), with the real error as the cause.
    """
    cause = exc.__cause__
    return cause is None or isinstance(cause, FileNotFoundError) or getattr(cause, "status", None) in (404, 410)


def _describe(exc: BaseException | None) -> str:
    """``Type: message`` on one line (``strerror`` for an OSError with an errno; no type for a plain OSError)."""
    if exc is None:
        return "unknown error"
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text if type(exc) is OSError else f"{type(exc).__name__}: {text}"
