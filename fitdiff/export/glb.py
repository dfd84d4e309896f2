"""The binary glTF 2.0 container (``.glb``): a JSON chunk and one BIN chunk, and a builder for the buffer.

Layout (glTF 2.0 §4.4, all integers little-endian uint32)::

    header  magic 0x46546C67 ("glTF"), version 2, total length in bytes
    chunk 0 length, type 0x4E4F534A ("JSON"), UTF-8 JSON padded with spaces to a multiple of 4
    chunk 1 length, type 0x004E4942 ("BIN\\0"), the buffer padded with zeros to a multiple of 4

The JSON's ``buffers[0]`` has no ``uri``: it is the BIN chunk. :class:`BufferBuilder` appends buffer views
at 4-byte aligned offsets (enough for every accessor component type used here) and accessors with the
``min`` / ``max`` the specification requires for positions.

Written here rather than through trimesh: trimesh's glTF exporter renames non-standard vertex attributes
with a leading underscore (so no ``TANGENT``) and writes no ``KHR_materials_specular``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BufferBuilder", "pack_glb", "unpack_glb", "GLB_MAGIC", "JSON_CHUNK", "BIN_CHUNK"]

GLB_MAGIC = 0x46546C67
JSON_CHUNK = 0x4E4F534A
BIN_CHUNK = 0x004E4942
_VERSION = 2

#: numpy dtype -> glTF accessor componentType
_COMPONENT_TYPES = {
    np.dtype(np.int8): 5120,
    np.dtype(np.uint8): 5121,
    np.dtype(np.int16): 5122,
    np.dtype(np.uint16): 5123,
    np.dtype(np.uint32): 5125,
    np.dtype(np.float32): 5126,
}
#: number of components -> glTF accessor type
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
#: bufferView targets
ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963


def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


class BufferBuilder:
    """Collects binary data for the BIN chunk and the matching ``bufferViews`` / ``accessors`` entries."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._length = 0
        self.buffer_views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def add_view(self, data: bytes, target: int | None = None) -> int:
        """Append ``data`` at the next 4-byte aligned offset; return its bufferView index."""
        padding = -self._length % 4
        if padding:
            self._parts.append(b"\0" * padding)
            self._length += padding
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self._length, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self._parts.append(bytes(data))
        self._length += len(data)
        self.buffer_views.append(view)
        return len(self.buffer_views) - 1

    def add_accessor(self, array: np.ndarray, target: int | None = None, bounds: bool = False) -> int:
        """Append a (N,) or (N, C) array (dtype float32, uint8/16/32, int8/16) as a tightly packed view and
        an accessor over it; ``bounds`` adds per-component ``min`` / ``max``. Returns the accessor index."""
        array = np.asarray(array)
        if array.dtype not in _COMPONENT_TYPES:
            raise TypeError(f"accessor data of dtype {array.dtype} has no glTF component type")
        if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] not in _TYPES):
            raise ValueError(
                f"accessor data must be (N,) or (N, C) with C in {sorted(_TYPES)}, got {array.shape}"
            )
        if len(array) == 0:
            raise ValueError("accessor data must not be empty")
        columns = array.reshape(len(array), -1)
        data = np.ascontiguousarray(columns, dtype=array.dtype.newbyteorder("<")).tobytes()
        accessor: dict[str, Any] = {
            "bufferView": self.add_view(data, target),
            "componentType": _COMPONENT_TYPES[array.dtype],
            "count": int(len(array)),
            "type": _TYPES[columns.shape[1]],
        }
        if bounds:
            kind = float if array.dtype.kind == "f" else int
            accessor["min"] = [kind(x) for x in columns.min(axis=0)]
            accessor["max"] = [kind(x) for x in columns.max(axis=0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    @property
    def data(self) -> bytes:
        """The buffer so far (unpadded)."""
        return b"".join(self._parts)


def pack_glb(document: dict[str, Any], binary: bytes) -> bytes:
    """A ``.glb`` file's bytes: ``document`` (its ``buffers`` are set to the one BIN buffer) + ``binary``."""
    document = dict(document)
    bin_chunk = _pad(binary, b"\0")
    if binary:
        document["buffers"] = [{"byteLength": len(bin_chunk)}]
    json_chunk = _pad(json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8"), b" ")
    total = 12 + 8 + len(json_chunk) + (8 + len(bin_chunk) if binary else 0)
    out = [
        struct.pack("<III", GLB_MAGIC, _VERSION, total),
        struct.pack("<II", len(json_chunk), JSON_CHUNK),
        json_chunk,
    ]
    if binary:
        out += [struct.pack("<II", len(bin_chunk), BIN_CHUNK), bin_chunk]
    return b"".join(out)


def unpack_glb(source: bytes | str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    """The JSON document and the BIN chunk (b"" when absent) of a ``.glb`` file or its bytes.

    Raises:
        ValueError: not a glTF 2.0 binary, or a truncated / inconsistent chunk (the message says which).
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    where = "glb data" if isinstance(source, bytes) else os.fspath(source)
    if len(data) < 20:
        raise ValueError(f"{where}: too short for a glTF binary ({len(data)} bytes)")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != _VERSION:
        raise ValueError(f"{where}: not a glTF 2.0 binary (magic {magic:#x}, version {version})")
    if total != len(data):
        raise ValueError(f"{where}: header length {total} != file length {len(data)}")
    chunks: list[tuple[int, bytes]] = []
    offset = 12
    while offset < total:
        if offset + 8 > total:
            raise ValueError(f"{where}: truncated chunk header at byte {offset}")
        length, kind = struct.unpack_from("<II", data, offset)
        if length % 4 or offset + 8 + length > total:
            raise ValueError(f"{where}: chunk at byte {offset} has bad length {length}")
        chunks.append((kind, data[offset + 8 : offset + 8 + length]))
        offset += 8 + length
    if not chunks or chunks[0][0] != JSON_CHUNK:
        raise ValueError(f"{where}: the first chunk must be JSON")
    document = json.loads(chunks[0][1].decode("utf-8"))
    binary = chunks[1][1] if len(chunks) > 1 and chunks[1][0] == BIN_CHUNK else b""
    return document, binary
