"""On-disk formats: ELF cores, kdump-compressed files, flattened streams (pure bytes)."""

from __future__ import annotations

import numpy as np


def field_offset(dtype: np.dtype[np.void], name: str) -> int:
    """Return the byte offset of field ``name`` in a structured dtype (for error messages).

    Args:
        dtype: A header dtype of this module or of formats.kdump.
        name: One of its fields.

    Returns:
        The offset.
    """
    fields = dtype.fields
    assert fields is not None, "not a structured dtype"
    return int(fields[name][1])
