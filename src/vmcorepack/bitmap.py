"""kdump bitmaps as numpy arrays.

Bit ``p & 7`` of byte ``p >> 3`` (LSB first) describes pfn ``p``
(docs/kdump-format.md §4.2).  Bitmaps are built per pfn window so memory stays
bounded however large the physical address space is.
"""

from __future__ import annotations

import numpy as np


def pack(bits: np.ndarray) -> np.ndarray:
    """Pack a bool array into kdump bitmap bytes (LSB first).

    Args:
        bits: One bool per pfn.

    Returns:
        ``ceil(len(bits) / 8)`` uint8 values.
    """
    return np.packbits(bits, bitorder="little")


def unpack(data: bytes | np.ndarray, count: int) -> np.ndarray:
    """Unpack kdump bitmap bytes into ``count`` bools.

    Args:
        data: Bitmap bytes covering at least ``count`` bits.
        count: Number of pfns.

    Returns:
        A bool array of length ``count``.
    """
    raw = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray | memoryview) else data
    return np.unpackbits(raw, count=count, bitorder="little").astype(bool)


def load_ranges(segments: np.ndarray, page_size: int, max_mapnr: int, round_up: bool = False) -> np.ndarray:
    """Return each PT_LOAD's pfn range for the 1st bitmap, shape ``(n, 2)``.

    makedumpfile sets pfns ``floor(p_paddr/bs)`` up to, not including,
    ``floor((p_paddr + p_memsz)/bs)``, clipped to ``max_mapnr``
    (``create_1st_bitmap_cyclic``; docs/kdump-format.md §4.3).

    When makedumpfile keeps its bitmaps in a temporary file instead
    (``create_1st_bitmap_file``: ``--work-dir``, or whenever both bitmaps fit
    its cyclic buffer), it also counts a trailing partial page.

    Args:
        segments: ``SEGMENT_DTYPE`` array.
        page_size: Page size.
        max_mapnr: Number of pfns.
        round_up: Count a partial last page (the bitmap-file variant).

    Returns:
        int64 array of ``[start, end)`` pairs (empty ranges have start >= end).
    """
    start = (segments["phys_start"] // page_size).astype(np.int64)
    end = np.minimum(segments["phys_end"] // page_size, max_mapnr).astype(np.int64)
    if round_up:
        # makedumpfile clips to max_mapnr first, then adds the partial page.
        end = end + (segments["phys_end"] % page_size != 0)
    return np.stack([start, end], axis=1) if len(segments) else np.zeros((0, 2), np.int64)


def nodata_ranges(segments: np.ndarray, page_size: int) -> np.ndarray:
    """Return pfn ranges that lie in a PT_LOAD's memory but not its file data.

    For each PT_LOAD, pfns ``ceil((p_paddr+p_filesz)/bs)`` to
    ``ceil((p_paddr+p_memsz)/bs) - 1`` leave the 2nd bitmap; the partial page
    holding the end of the file data keeps its bit (``exclude_nodata_pages``;
    docs/kdump-format.md §17.1.6).

    Args:
        segments: ``SEGMENT_DTYPE`` array.
        page_size: Page size.

    Returns:
        int64 array of ``[start, end)`` pairs.
    """
    ps = np.uint64(page_size)
    fend = segments["phys_start"] + segments["file_size"]
    start = ((fend + ps - np.uint64(1)) // ps).astype(np.int64)
    end = ((segments["phys_end"] + ps - np.uint64(1)) // ps).astype(np.int64)
    return np.stack([start, end], axis=1) if len(segments) else np.zeros((0, 2), np.int64)


def fill_ranges(bits: np.ndarray, ranges: np.ndarray, base: int, value: bool) -> None:
    """Set ``bits[r0-base : r1-base] = value`` for each range, clipped to the window.

    Args:
        bits: Bool array describing pfns ``[base, base + len(bits))``.
        ranges: ``(n, 2)`` array of pfn ranges.
        base: First pfn of the window.
        value: Value to store.
    """
    n = len(bits)
    for r0, r1 in ranges.tolist():
        a = max(r0 - base, 0)
        b = min(r1 - base, n)
        if a < b:
            bits[a:b] = value


def first_bitmap(
    segments: np.ndarray, page_size: int, max_mapnr: int, start: int, end: int, round_up: bool = False
) -> np.ndarray:
    """Build the 1st bitmap (pfn is RAM in the vmcore) for ``[start, end)``.

    Args:
        segments: ``SEGMENT_DTYPE`` array.
        page_size: Page size.
        max_mapnr: Number of pfns.
        start: First pfn of the window.
        end: End of the window.
        round_up: Count partial last pages (see :func:`load_ranges`).

    Returns:
        Bool array of ``end - start`` entries.
    """
    bits = np.zeros(end - start, bool)
    fill_ranges(bits, load_ranges(segments, page_size, max_mapnr, round_up), start, True)
    return bits


def count_set(data: np.ndarray) -> int:
    """Count set bits in packed bitmap bytes.

    Args:
        data: uint8 array.

    Returns:
        Population count.
    """
    return int(np.unpackbits(data).sum()) if data.size else 0
