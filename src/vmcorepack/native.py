"""Access to the optional C extension (``vmcorepack._native``, built from _native.c).

The extension holds the per-page loops Python is too slow for: reading and
encoding a chunk of pages (codecs, pipeline), encoding pages already in memory,
and gathering scattered pages from the input (sources).  Without it, those
modules fall back to Python and numpy and write the same bytes more slowly.
It is also the LZO1X codec (encoder and decoder) when it is built; without it,
LZO needs python-lzo.
"""

from __future__ import annotations

import functools
import os
from typing import Any

#: Use the C loops when they are built; VMCOREPACK_NATIVE=0 forces the Python
#: ones (tests compare the two, benchmarks can time both).
ENABLED = os.environ.get("VMCOREPACK_NATIVE", "1") != "0"


@functools.cache
def _load() -> Any:
    try:
        from vmcorepack import _native
    except ImportError:  # built without a C compiler or the zlib headers
        return None
    return _native


def built() -> bool:
    """Tell whether the extension is built (whatever :data:`ENABLED` says).

    Returns:
        True if ``vmcorepack._native`` imports.
    """
    return _load() is not None


def library() -> Any:
    """Return the extension module whenever it is built, whatever :data:`ENABLED` says.

    Its LZO1X codec is a library, not a loop: with VMCOREPACK_NATIVE=0 the
    Python loops still call it, as they would python-lzo.

    Returns:
        ``vmcorepack._native`` or None.
    """
    return _load()


def module() -> Any:
    """Return the extension module, or None when it is absent or disabled.

    Returns:
        ``vmcorepack._native`` or None.
    """
    return _load() if ENABLED else None
