"""Repair of a cut-short file: consistent descriptors and the incomplete flag (docs/kdump-format.md §12)."""

from __future__ import annotations

import os

import numpy as np

from vmcorepack import bitmap
from vmcorepack.errors import (
    OutputError,
)
from vmcorepack.formats import kdump
from vmcorepack.pack.bitmaps import _cycles
from vmcorepack.writer import DumpPlan, FileOutput, mark_incomplete

_TABLE_SLICE = 1 << 18


def finalize_incomplete(path: str, plan: DumpPlan) -> int:
    """Make a cut-short dump consistent and flag it incomplete (docs/kdump-format.md §12).

    Every descriptor that does not point at stored data lying wholly inside the
    file (including shared-zero descriptors whose zero page was cut) is set to
    all zeros, which crash reports as "page incomplete" and libkdumpfile as
    corrupt, instead of leaving makedumpfile's dangling entries (§17.2.4).
    Then ``DUMP_DH_COMPRESSED_INCOMPLETE`` is set in the main header.

    Args:
        path: The dump file.
        plan: Its plan.

    Returns:
        The number of pages that can be read back.
    """
    geo = plan.geometry
    ps = geo.block_size
    item = kdump.PAGE_DESC.itemsize
    readable = 0
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise OutputError(path, f"cannot reopen to mark incomplete: {e.strerror}") from e
    try:
        size = os.fstat(fd).st_size
        for first in range(0, geo.nr_dumpable, _TABLE_SLICE):
            count = min(_TABLE_SLICE, geo.nr_dumpable - first)
            pos = geo.table_offset + first * item
            if pos >= size:
                break
            raw = os.pread(fd, count * item, pos)
            have = len(raw) // item
            d = np.frombuffer(raw[: have * item], kdump.PAGE_DESC).copy()
            off = d["offset"].astype(np.int64)
            sz = d["size"].astype(np.int64)
            fl = d["flags"].astype(np.int64)
            empty = (off == 0) & (sz == 0) & (fl == 0) & (d["page_flags"] == 0)
            ok = (
                (off >= geo.data_offset)
                & (sz > 0)
                & (sz <= ps)
                & (off + sz <= size)
                & ((fl == plan.codec_flag) | ((fl == 0) & (sz == ps)))
            )
            bad = ~ok & ~empty
            readable += int(ok.sum())
            if bad.any():
                d[bad] = np.zeros((), kdump.PAGE_DESC)
                os.pwrite(fd, d.tobytes(), pos)
            if len(raw) % item:
                # A descriptor cut by the end of the file: zero its bytes.
                os.pwrite(fd, bytes(len(raw) % item), pos + have * item)
    except OSError as e:
        raise OutputError(path, f"cannot repair the descriptor table: {e.strerror}") from e
    finally:
        os.close(fd)
    mark_incomplete(path)
    return readable


def leave_out(out: FileOutput, plan: DumpPlan, bm2: np.ndarray, pfns: list[int], cycle_pfns: int) -> None:
    """Remove unreadable pages from a finished regular dump.

    Their bits leave the 2nd bitmap and their (all-zero) descriptors leave the
    table, which is compacted in place; data offsets are absolute, so the
    pages after them stay where they are.  Readers then report those pfns as
    excluded rather than returning made-up zeros.

    Args:
        out: The open output.
        plan: The plan.
        bm2: Packed 2nd bitmap (updated in place).
        pfns: Sorted unreadable pfns.
        cycle_pfns: Cycle size, for bounded bitmap work.
    """
    geo = plan.geometry
    item = kdump.PAGE_DESC.itemsize
    bad = np.array(pfns, np.int64)
    # Table index of each bad pfn = set bits of the 2nd bitmap before it.
    ranks = np.zeros(len(bad), np.int64)
    before = 0
    for s, e in _cycles(geo.max_mapnr, cycle_pfns):
        bits = bitmap.unpack(bm2[s // 8 : (e + 7) // 8], e - s)
        sel = (bad >= s) & (bad < e)
        if sel.any():
            csum = np.cumsum(bits) - bits
            ranks[sel] = before + csum[bad[sel] - s]
        before += int(bits.sum())
    # Clear the bits and rewrite the touched bitmap bytes.
    for pfn in np.unique(bad // 8).tolist():
        for p in bad[bad // 8 == pfn].tolist():
            bm2[p >> 3] &= np.uint8(~(1 << (p & 7)) & 0xFF)
        out.pwrite(bm2[pfn : pfn + 1].tobytes(), geo.bitmap2_offset + pfn)
    # Compact the table: stream forward, dropping the bad entries.
    drop = set(ranks.tolist())
    write_at = geo.table_offset
    for first in range(0, geo.nr_dumpable, _TABLE_SLICE):
        count = min(_TABLE_SLICE, geo.nr_dumpable - first)
        raw = os.pread(out.fd, count * item, geo.table_offset + first * item)
        d = np.frombuffer(raw, kdump.PAGE_DESC)
        keep = np.ones(len(d), bool)
        local = [r - first for r in drop if first <= r < first + count]
        keep[local] = False
        kept = d[keep].tobytes()
        out.pwrite(kept, write_at)
        write_at += len(kept)
    out.pwrite(bytes(len(drop) * item), write_at)
