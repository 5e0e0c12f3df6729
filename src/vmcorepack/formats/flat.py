"""makedumpfile's flattened stream (``-F``/``-R``): headers are always big-endian.

A 4096-byte header, then records of ``(offset, buf_size)`` followed by
``buf_size`` bytes to place at ``offset``, then a ``(-1, -1)`` end marker
(docs/kdump-format.md §7).
"""

from __future__ import annotations

import numpy as np

from vmcorepack.constants import FLAT_HEADER_SIZE, FLAT_SIGNATURE, FLAT_TYPE, FLAT_VERSION
from vmcorepack.errors import FlatFormatError

FLAT_HEADER = np.dtype([("signature", "S16"), ("type", ">i8"), ("version", ">i8")])
RECORD_HEADER = np.dtype([("offset", ">i8"), ("buf_size", ">i8")])
END_MARKER = b"\xff" * RECORD_HEADER.itemsize


def encode_flat_header() -> bytes:
    """Return the 4096-byte flattened-stream header."""
    h = np.zeros((), FLAT_HEADER)
    h["signature"] = FLAT_SIGNATURE
    h["type"] = FLAT_TYPE
    h["version"] = FLAT_VERSION
    return h.tobytes().ljust(FLAT_HEADER_SIZE, b"\0")


def encode_record_header(offset: int, size: int) -> bytes:
    """Return a 16-byte record header.

    Args:
        offset: Target file offset.
        size: Number of payload bytes.

    Returns:
        The encoded header.
    """
    h = np.zeros((), RECORD_HEADER)
    h["offset"] = offset
    h["buf_size"] = size
    return h.tobytes()


def is_flat_header(prefix: bytes) -> bool:
    """Tell whether ``prefix`` starts with a flattened-stream signature.

    makedumpfile compares the signature as a C string, so byte 12 must be NUL.

    Args:
        prefix: At least 16 bytes.

    Returns:
        True if this looks like a flattened stream.
    """
    return prefix[:13] == FLAT_SIGNATURE[:13]


def check_flat_header(buf: bytes, path: str) -> None:
    """Validate the 4096-byte header as makedumpfile -R does.

    Args:
        buf: The header bytes.
        path: Stream name for errors.

    Raises:
        FlatFormatError: Short header, wrong signature or type.
    """
    if len(buf) < FLAT_HEADER_SIZE:
        raise FlatFormatError(path, len(buf), f"truncated flattened header ({len(buf)} of 4096 bytes)")
    if not is_flat_header(buf):
        raise FlatFormatError(path, 0, f"bad flattened signature {buf[:16]!r}")
    h = np.frombuffer(buf, FLAT_HEADER, count=1)[0]
    if int(h["type"]) != FLAT_TYPE:
        raise FlatFormatError(path, 16, f"expected flattened type 1, got {int(h['type'])}")


def decode_record_header(buf: bytes) -> tuple[int, int]:
    """Decode a record header into ``(offset, buf_size)``.

    Args:
        buf: 16 bytes.

    Returns:
        The two signed values.
    """
    h = np.frombuffer(buf, RECORD_HEADER, count=1)[0]
    return int(h["offset"]), int(h["buf_size"])
