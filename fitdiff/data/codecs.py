"""Safe, deterministic byte codecs for shard members: PNG (OpenCV), ``.npy`` (no pickle) and JSON.

A shard is untrusted input: nothing here can execute code while decoding. Encoders are deterministic
(same array -> same bytes for a given OpenCV/zlib build), which makes shards reproducible.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

import cv2
import numpy as np

__all__ = ["encode_png", "decode_png", "encode_npy", "decode_npy", "encode_json", "decode_json"]

PNG_COMPRESSION = 3  # zlib level: decoding speed is the same at any level; 3 writes fast and small enough


def encode_png(array: np.ndarray, compression: int = PNG_COMPRESSION) -> bytes:
    """Encode a uint8 image to PNG bytes.

    Args:
        array: (H, W) grey, (H, W, 1) grey or (H, W, 3) RGB, dtype uint8.
        compression: zlib level 0-9.

    Returns:
        PNG file bytes (8-bit grey or RGB, no metadata chunks).
    """
    if array.dtype != np.uint8:
        raise ValueError(f"PNG encoding needs uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR)
    elif array.ndim != 2:
        raise ValueError(f"PNG encoding needs (H, W), (H, W, 1) or (H, W, 3), got {array.shape}")
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return buffer.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes without conversion.

    Returns:
        (H, W, C) array with C in {1, 3, 4} (RGB / RGBA order) and the file's own dtype (uint8 or uint16).

    Raises:
        ValueError: the bytes are not a PNG OpenCV can decode.
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG file (bad signature)")
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError("PNG data is corrupt or truncated")
    if array.ndim == 2:
        return array[:, :, None]
    if array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    return array


def encode_npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of a numeric array (C order; object arrays are refused)."""
    if array.dtype.hasobject:
        raise ValueError("refusing to encode an object array (it would need pickle)")
    stream = io.BytesIO()
    np.save(stream, np.ascontiguousarray(array), allow_pickle=False)
    return stream.getvalue()


# A version 1.0 / 2.0 header as numpy writes it, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }
_NPY_HEADER = re.compile(
    rb"\{'descr': '(?P<descr>[<>|=][fiub][1248])', 'fortran_order': (?P<fortran>True|False), "
    rb"'shape': \((?P<shape>(?:\d+, ?)*\d*)\), \} *\n"
)


def decode_npy(data: bytes) -> np.ndarray:
    """Decode ``.npy`` bytes without pickle (object arrays raise ValueError).

    The headers numpy writes for plain numeric arrays are parsed with one regular expression and the
    data viewed in place (``np.load`` spends ~50 us per array in ``ast.literal_eval`` and file-object
    reads, more than decoding a small array takes); anything else goes through
    ``np.load(allow_pickle=False)``, which also produces the error for malformed input.

    Returns:
        A writable array.

    Raises:
        ValueError: object arrays, malformed headers, and data longer or shorter than the header says.
    """
    if data[:6] == b"\x93NUMPY" and len(data) > 10:
        major = data[6]
        length_bytes = 2 if major == 1 else 4
        start = 8 + length_bytes
        header_len = int.from_bytes(data[8:start], "little")
        match = _NPY_HEADER.fullmatch(data, start, start + header_len)
        if match is not None:
            dtype = np.dtype(match["descr"].decode())
            shape = tuple(int(d) for d in match["shape"].split(b",") if d.strip())
            count = math.prod(shape)  # exact (no int64 overflow on hostile headers)
            offset = start + header_len
            if len(data) - offset != count * dtype.itemsize:
                raise ValueError(
                    f".npy data holds {len(data) - offset} bytes, its header ({dtype}, shape {shape}) "
                    f"needs {count * dtype.itemsize}: truncated or damaged"
                )
            array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            order = "F" if match["fortran"] == b"True" else "C"
            return array.reshape(shape, order=order).copy(order="K")
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_json(obj: Any) -> bytes:
    """Canonical UTF-8 JSON: sorted keys, compact separators, no NaN/Infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def decode_json(data: bytes) -> Any:
    """Parse UTF-8 JSON bytes."""
    return json.loads(data.decode("utf-8"))
