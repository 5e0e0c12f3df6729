"""The bitmap pass: cycles, chunk cutting, memory statistics and the bitmaps written to the file."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from vmcorepack import bitmap
from vmcorepack.filter import PageFilter
from vmcorepack.pack.options import PHASE_EXCLUDE, PHASE_HOLES, Progress
from vmcorepack.sources import Source
from vmcorepack.userfilter import PageDecisions
from vmcorepack.writer import DumpPlan, Output


@dataclasses.dataclass(frozen=True)
class Task:
    """One chunk of work.

    Attributes:
        index: Chunk index (turn order).
        pfns: Sorted pfns of the chunk's dumpable pages.
        desc_index: Index of the first descriptor in the table.
    """

    index: int
    pfns: np.ndarray
    desc_index: int


def _cycles(max_mapnr: int, cycle_pfns: int) -> Iterator[tuple[int, int]]:
    step = max(8, cycle_pfns - cycle_pfns % 8)
    for s in range(0, max_mapnr, step):
        yield s, min(s + step, max_mapnr)


#: pfns unpacked at a time when cutting chunks (bounds the pfn arrays to 2 MiB).
_CHUNK_WINDOW = 1 << 18


def _chunks(
    bm2: np.ndarray, max_mapnr: int, cycle_pfns: int, chunk_pages: int, lo: int = 0, hi: int | None = None
) -> Iterator[Task]:
    index = 0
    desc_index = 0
    hi = max_mapnr if hi is None else hi
    pending = np.zeros(0, np.int64)
    for s in range(lo - lo % 8, hi, _CHUNK_WINDOW):
        e = min(s + _CHUNK_WINDOW, hi)
        bits = bitmap.unpack(bm2[s // 8 : (e + 7) // 8], e - s)
        pfns = np.flatnonzero(bits).astype(np.int64) + s
        pfns = pfns[pfns >= lo]
        if len(pending):
            pfns = np.concatenate((pending, pfns))
        full = len(pfns) - len(pfns) % chunk_pages if e < hi else len(pfns)
        for a in range(0, full, chunk_pages):
            part = pfns[a : min(a + chunk_pages, full)]
            yield Task(index, part, desc_index)
            index += 1
            desc_index += len(part)
        pending = pfns[full:]


def _count_bits(bm2: np.ndarray, lo: int, hi: int) -> int:
    """Set bits of the packed bitmap in pfns ``[lo, hi)`` (bounded memory)."""
    n = 0
    for s in range(lo - lo % 8, hi, 1 << 23):
        e = min(s + (1 << 23), hi)
        bits = bitmap.unpack(bm2[s // 8 : (e + 7) // 8], e - s)
        n += int(bits[max(lo - s, 0) :].sum())
    return n


def bitmap_in_file(max_mapnr: int, nfiles: int = 1, cyclic_buffer: bool = False, work_dir: bool = False) -> bool:
    """Tell whether makedumpfile would keep this dump's bitmaps in a temporary file.

    makedumpfile 1.7.x (``initial``, ``calculate_cyclic_buffer_size``) sizes its
    bitmap buffer as ``min(60 % of MemFree, 4 MiB, max_mapnr * 2 / 8 [/ files])``
    and, when that holds both bitmaps, runs one non-cyclic pass with the bitmaps
    in a file; so does ``--work-dir``, and ``--cyclic-buffer`` never does.  The
    file variant counts a PT_LOAD's partial last page in the 1st bitmap, so this
    decides one bit (for example pfn 0x9f below 640 KiB) whenever ``max_mapnr``
    is a multiple of 4.

    Args:
        max_mapnr: Number of pfns.
        nfiles: Number of ``--split`` files.
        cyclic_buffer: ``--cyclic-buffer`` was given.
        work_dir: ``--work-dir`` was given.

    Returns:
        True for the bitmap-file variant.
    """
    if work_dir:
        return True
    if cyclic_buffer:
        return False
    free = 1 << 62
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemFree:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    bitmap_size = max_mapnr * 2 // 8
    if nfiles > 1:
        bitmap_size //= nfiles
    bufsize = min(int(free * 0.6), 4 << 20, bitmap_size)
    return bufsize * 8 >= max_mapnr * 2


def memory_stats(source: Source, round_up: bool = False) -> tuple[int, int]:
    """Return makedumpfile's (Original pages, Memory Hole) (§17.1.7).

    Args:
        source: The input.
        round_up: The bitmap-file variant (partial last pages count).

    Returns:
        The two counts.
    """
    r = bitmap.load_ranges(source.segments, source.page_size, source.max_mapnr, round_up)
    original = int(np.clip(r[:, 1] - r[:, 0], 0, None).sum()) if len(r) else 0
    return original, source.max_mapnr - original


def compute_bitmaps(
    source: Source,
    flt: PageFilter,
    cycle_pfns: int,
    round_up: bool = False,
    progress: Progress | None = None,
    pages: PageDecisions | None = None,
) -> tuple[np.ndarray, int, int]:
    """Pass 1: the packed 2nd bitmap of the whole dump, and bit counts.

    Two walks over the cycles, as makedumpfile reports them (its cyclic mode
    prints "Checking for memory holes" for the 1st bitmap, then "Excluding
    unnecessary pages" for the 2nd): the 1st bitmap is made again in the
    second walk rather than kept, as it costs little next to the filter.

    Args:
        source: Input.
        flt: The filter.
        cycle_pfns: Cycle size.
        round_up: 1st bitmap of makedumpfile's bitmap-file variant.
        progress: Called after each cycle (:data:`PHASE_HOLES`, then :data:`PHASE_EXCLUDE`).
        pages: Filters' keep/drop decisions, applied over the level's answer.

    Returns:
        (packed 2nd bitmap, 1st-bitmap bits, 2nd-bitmap bits).
    """
    max_mapnr = source.max_mapnr
    bm2 = np.zeros(-(-max_mapnr // 8), np.uint8)
    ram = dumpable = 0
    if progress:
        progress(0, max_mapnr, PHASE_HOLES)
    for s, e in _cycles(max_mapnr, cycle_pfns):
        ram += int(bitmap.first_bitmap(source.segments, source.page_size, max_mapnr, s, e, round_up).sum())
        if progress:
            progress(e, max_mapnr, PHASE_HOLES)
    if progress:
        progress(0, max_mapnr, PHASE_EXCLUDE)
    for s, e in _cycles(max_mapnr, cycle_pfns):
        b1 = bitmap.first_bitmap(source.segments, source.page_size, max_mapnr, s, e, round_up)
        b2 = flt.second_bitmap(s, e)
        if pages is not None:
            pages.apply(s, e, b2)
        b2 &= b1
        kept = source.dumpable_mask(s, e)
        if kept is not None:
            # Re-filtering a dump: what it already dropped stays dropped.
            b2 &= kept
        dumpable += int(b2.sum())
        bm2[s // 8 : s // 8 + -(-(e - s) // 8)] = bitmap.pack(b2)
        if progress:
            progress(e, max_mapnr, PHASE_EXCLUDE)
    return bm2, ram, dumpable


def write_bitmaps(
    out: Output, source: Source, plan: DumpPlan, bm2: np.ndarray, cycle_pfns: int, round_up: bool = False
) -> None:
    """Write both bitmaps, slice by slice (the unused tails stay holes).

    Args:
        out: Target.
        source: Input.
        plan: The plan.
        bm2: Packed 2nd bitmap.
        cycle_pfns: Cycle size.
        round_up: 1st bitmap of makedumpfile's bitmap-file variant.
    """
    geo = plan.geometry
    for s, e in _cycles(source.max_mapnr, cycle_pfns):
        b1 = bitmap.first_bitmap(source.segments, source.page_size, source.max_mapnr, s, e, round_up)
        out.pwrite(bitmap.pack(b1).tobytes(), geo.bitmap1_offset + s // 8)
    for s, e in _cycles(source.max_mapnr, cycle_pfns):
        out.pwrite(bm2[s // 8 : s // 8 + -(-(e - s) // 8)].tobytes(), geo.bitmap2_offset + s // 8)
