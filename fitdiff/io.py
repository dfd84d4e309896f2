"""File input/output every layer shares: sha256 of files, atomic writes, state-dict loading.

- :func:`sha256_file`: hex sha256 of a file, read in 1 MiB chunks.
- :func:`atomic_write` (context manager), :class:`AtomicFile`, :func:`atomic_write_bytes`,
  :func:`atomic_write_text`: the data goes to a temporary file in the destination's folder, is flushed
  and fsynced, and is renamed onto the destination only when complete. A failure at any point removes
  the temporary file and leaves an existing destination untouched. A write that fails because the
  disk (or quota) is full raises :class:`DiskFullError` naming the destination.
- :func:`load_state_dict`: tensors of a ``.safetensors`` file or a torch file (read with
  ``weights_only=True``: no arbitrary pickle), unwrapped from common containers; errors name the file.

This module imports nothing from the rest of the package, and torch only when loading weights.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHUNK_BYTES",
    "StateDictError",
    "DiskFullError",
    "no_space_error",
    "sha256_file",
    "AtomicFile",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_state_dict",
    "safetensors_metadata",
]

#: read / copy block size, bytes (1 MiB)
CHUNK_BYTES = 1 << 20

PathLike = str | os.PathLike[str]


class StateDictError(ValueError):
    """A weight file exists but cannot be read as a mapping of names to tensors (the message names it)."""


#: ``errno`` values of a write that failed for lack of space
_NO_SPACE = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)


class DiskFullError(OSError):
    """Writing ``filename`` failed because its disk (or the user's quota) is full; nothing was written.

    ``errno`` is the original ``ENOSPC`` / ``EDQUOT``; the message names the file and what to do.
    """

    def __init__(self, path: PathLike, code: int = errno.ENOSPC) -> None:
        super().__init__(code, os.strerror(code), str(path))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.filename, self.errno)

    def __str__(self) -> str:
        return (f"cannot write {self.filename}: the disk is full ({self.strerror}); the file was not written "
                f"(a file already there is left as it was): free space on the disk of {Path(self.filename).parent} "
                f"or write somewhere else, then run again")


def no_space_error(exc: BaseException) -> OSError | None:
    """The out-of-space ``OSError`` (ENOSPC, EDQUOT) behind ``exc`` (itself, its cause or context), or None.

    Writers that wrap I/O errors (``torch.save`` raises ``RuntimeError("unexpected pos ...")``) keep the
    original error as the context of theirs.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return current
        current = current.__cause__ or current.__context__
    return None


def sha256_file(path: PathLike, chunk: int = CHUNK_BYTES) -> str:
    """Hex sha256 (64 lowercase digits) of the file at ``path``, read in ``chunk``-byte blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A file written under a temporary name beside ``path`` and renamed onto ``path`` by :meth:`commit`.

    The temporary file is created with mode ``0o666`` minus the umask (like ``open``), in the
    destination's folder (created if missing) so the final rename never crosses file systems. Use it
    as a context manager (commit on a clean exit, :meth:`discard` on an exception) or call the two
    methods yourself when the file outlives one block (a shard filled sample by sample).

    Args:
        path: the destination.
        mode: ``"wb"`` (bytes) or ``"w"`` (text).
        temp_name: file name of the temporary file (same folder); default a fresh hidden
            ``.<name>.<random>.tmp``. A fixed name overwrites a leftover from an interrupted run.
        encoding, newline: text mode only, as for ``open`` (encoding defaults to UTF-8).
    """

    def __init__(
        self,
        path: PathLike,
        mode: str = "wb",
        *,
        temp_name: str | None = None,
        encoding: str | None = None,
        newline: str | None = None,
    ) -> None:
        if mode not in ("wb", "w"):
            raise ValueError(f"atomic writes support mode 'wb' or 'w', got {mode!r}")
        if mode == "wb" and (encoding is not None or newline is not None):
            raise ValueError("encoding and newline apply to text mode ('w') only")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        if temp_name is not None:
            if Path(temp_name).name != temp_name or temp_name == self.path.name:
                raise ValueError(f"temp_name must be a plain file name other than {self.path.name!r}, got {temp_name!r}")
            self.temp_path = self.path.parent / temp_name
            fd = os.open(self.temp_path, flags | os.O_TRUNC, 0o666)
        else:
            for _ in range(100):
                self.temp_path = self.path.parent / f".{self.path.name}.{secrets.token_hex(6)}.tmp"
                try:
                    fd = os.open(self.temp_path, flags | os.O_EXCL, 0o666)
                    break
                except FileExistsError:
                    continue
            else:  # pragma: no cover - 100 collisions of 48 random bits
                raise FileExistsError(f"could not create a temporary file beside {self.path}")
        try:
            if mode == "w":
                self.handle: IO[Any] = open(fd, "w", encoding=encoding or "utf-8", newline=newline)  # noqa: SIM115
            else:
                self.handle = open(fd, "wb")  # noqa: SIM115
        except BaseException:
            os.close(fd)
            self.temp_path.unlink(missing_ok=True)
            raise
        self.done = False

    def write(self, data: Any) -> int:
        """Write ``data`` (bytes or str, per the mode) to the temporary file.

        Raises:
            DiskFullError: the disk is full (the temporary file stays until :meth:`discard`).
        """
        try:
            return self.handle.write(data)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise DiskFullError(self.path, exc.errno) from exc
            raise

    def commit(self) -> Path:
        """Flush, fsync and close the temporary file, then rename it onto the destination; return it.

        On any failure the temporary file is removed and the error propagates (:class:`DiskFullError` when
        the buffered data does not fit on the disk).
        """
        if self.done:
            raise ValueError(f"{self.path}: this atomic write has already been committed or discarded")
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.temp_path, self.path)
        except BaseException as exc:
            self.discard()
            full = no_space_error(exc)
            if full is not None and not isinstance(exc, DiskFullError):
                raise DiskFullError(self.path, full.errno) from exc
            raise
        self.done = True
        _fsync_directory(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Close and delete the temporary file; the destination is left as it was (idempotent).

        Data still buffered is dropped: closing never fails for a disk that filled up.
        """
        self.done = True
        try:
            self.handle.close()
        except OSError:
            pass  # flushing the buffer failed (a full disk): the file is deleted anyway
        finally:
            self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextmanager
def atomic_write(
    path: PathLike, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Context manager yielding a file handle whose content replaces ``path`` only on a clean exit.

    Example::

        with atomic_write("out/model.bin") as handle:
            handle.write(payload)          # an exception here leaves out/model.bin as it was

    Args:
        path: destination (parent folders are created).
        mode: ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise).

    Raises:
        DiskFullError: the disk filled up while writing (also when the writer in the block wrapped the
            ``ENOSPC`` error in its own, as ``torch.save`` does).
    """
    target = AtomicFile(path, mode, encoding=encoding, newline=newline)
    try:
        yield target.handle
    except BaseException as exc:
        target.discard()
        full = no_space_error(exc)
        if full is not None and not isinstance(exc, DiskFullError):
            raise DiskFullError(target.path, full.errno) from exc
        raise
    target.commit()


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``; return the path."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Atomically replace ``path`` with ``text`` (no newline translation); return the path."""
    with atomic_write(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
    return Path(path)


_CONTAINER_KEYS = ("state_dict", "model", "module", "net", "weights")


def _unwrap(state: Any) -> Any:
    """Descend through ``{"state_dict": {...}}``-style containers until a mapping of tensors is reached."""
    import torch

    for _ in range(4):
        if not isinstance(state, Mapping) or all(isinstance(v, torch.Tensor) for v in state.values()):
            return state
        inner = next((state[k] for k in _CONTAINER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            return state
        state = inner
    return state


def load_state_dict(
    path: PathLike, *, what: str, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Name -> tensor mapping stored in a weight file.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``,
    which refuses pickled objects other than tensors and plain containers. A state dict wrapped as
    ``{"state_dict": ...}`` (Lightning checkpoints), ``{"model": ...}`` and the like is unwrapped, and a
    ``module.`` prefix on every key (DataParallel / DDP) is removed.

    Args:
        path: the file.
        what: what the file is, for error messages (``"RetinaFace weights"``).
        map_location: device the tensors are loaded onto.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        StateDictError: the file is unreadable or corrupt, holds forbidden pickled objects, or is not a
            mapping of names to tensors.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: weight file {path} does not exist")
    device = torch.device(map_location) if isinstance(map_location, str) else map_location
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device=str(device))
        else:
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # corrupt archives, forbidden globals, truncated headers: report them all alike
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StateDictError(
            f"{what}: cannot read {path} as a weight file ({type(exc).__name__}: {first_line})"
        ) from exc
    state = _unwrap(state)
    if not isinstance(state, Mapping):
        raise StateDictError(f"{what}: {path} holds a {type(state).__name__}, not a mapping of names to tensors")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise StateDictError(
            f"{what}: {path} is not a mapping of names to tensors; offending entries: {', '.join(bad[:5])}"
            + (f" ... ({len(bad)} in all)" if len(bad) > 5 else "")
        )
    out = dict(state)
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def load_checkpoint_file(path: PathLike) -> Any:
    """``torch.load`` of a checkpoint with ``weights_only=True``, memory-mapped (tensor data is read lazily);
    files in torch's legacy (non-zip) format, which cannot be mapped, are read whole."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def safetensors_metadata(path: PathLike, *, what: str) -> dict[str, str]:
    """The string metadata in a ``.safetensors`` header (empty when it has none).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        StateDictError: the header is unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: weight file {path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:
        raise StateDictError(f"{what}: cannot read the safetensors header of {path} ({exc})") from exc
