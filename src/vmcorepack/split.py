"""``--split`` and ``--reassemble``: one dump as several files, and back.

Every part carries the full headers and bitmaps, reserves the descriptor
table of the whole dump, and fills it from index 0 with the pages of its own
``[start_pfn, end_pfn)`` range (docs/kdump-format.md §8).  Boundaries follow
makedumpfile's ``calculate_end_pfn_by_splitblock`` (§17.2.5).  Parts are
written one after another, each by the whole worker pool, which keeps every
core busy without makedumpfile's one-process-per-file.
"""

from __future__ import annotations

import os

import numpy as np

from vmcorepack import bitmap
from vmcorepack.constants import DumpStatus
from vmcorepack.errors import KdumpFormatError, OutputError
from vmcorepack.formats import kdump
from vmcorepack.pack.dump import prepare, write_dump
from vmcorepack.pack.options import PackOptions, PackResult
from vmcorepack.reader import KdumpReader
from vmcorepack.sources import Source
from vmcorepack.writer import create_output_file

#: makedumpfile's default --splitblock-size: 1 GiB.
DEFAULT_SPLITBLOCK_KIB = 1 << 20
#: Bytes copied per read/write when reassembling.
_COPY = 8 << 20


def block_counts(bm2: np.ndarray, max_mapnr: int, pages_per_block: int) -> np.ndarray:
    """Count the dumpable pages of each splitblock.

    Args:
        bm2: Packed 2nd bitmap.
        max_mapnr: Number of pfns.
        pages_per_block: pfns per splitblock.

    Returns:
        One count per splitblock (the last one may be short).
    """
    nblocks = -(-max_mapnr // pages_per_block)
    counts = np.zeros(nblocks, np.int64)
    for b0 in range(0, nblocks, max(1, (1 << 23) // pages_per_block)):
        b1 = min(nblocks, b0 + max(1, (1 << 23) // pages_per_block))
        s, e = b0 * pages_per_block, min(b1 * pages_per_block, max_mapnr)
        bits = bitmap.unpack(bm2[s // 8 : (e + 7) // 8], e - s)
        padded = np.zeros((b1 - b0) * pages_per_block, bool)
        padded[: len(bits)] = bits
        counts[b0:b1] = padded.reshape(b1 - b0, pages_per_block).sum(axis=1)
    return counts


def cut_blocks(counts: np.ndarray, max_mapnr: int, nfiles: int, pages_per_block: int) -> list[tuple[int, int, int]]:
    """Cut splitblocks into ``nfiles`` parts of about equal dumpable pages.

    ``target = floor(N / nfiles)``; each part but the last takes whole
    splitblocks, starting with the first unused one, while its remaining
    target is positive; the last part runs to ``max_mapnr`` (§17.2.5).

    Args:
        counts: Dumpable pages per splitblock (:func:`block_counts`).
        max_mapnr: Number of pfns.
        nfiles: Number of parts.
        pages_per_block: pfns per splitblock.

    Returns:
        ``(start, end, pages)`` per part.
    """
    nblocks = len(counts)
    target = int(counts.sum()) // nfiles
    parts: list[tuple[int, int, int]] = []
    taken = 0
    for i in range(nfiles):
        first = taken
        remaining = target
        while (remaining > 0 or i == nfiles - 1) and taken < nblocks:
            remaining -= int(counts[taken])
            taken += 1
        start = min(first * pages_per_block, max_mapnr)
        end = max_mapnr if i == nfiles - 1 else min(taken * pages_per_block, max_mapnr)
        parts.append((start, end, int(counts[first:taken].sum())))
    return parts


def split_boundaries(bm2: np.ndarray, max_mapnr: int, nfiles: int, pages_per_block: int) -> list[tuple[int, int]]:
    """Cut ``[0, max_mapnr)`` into ``nfiles`` ranges of about equal dumpable pages (:func:`cut_blocks`).

    Args:
        bm2: Packed 2nd bitmap.
        max_mapnr: Number of pfns.
        nfiles: Number of parts.
        pages_per_block: pfns per splitblock.

    Returns:
        ``[start, end)`` per part.
    """
    counts = block_counts(bm2, max_mapnr, pages_per_block)
    return [(s, e) for s, e, _ in cut_blocks(counts, max_mapnr, nfiles, pages_per_block)]


def spreading_splitblock(
    bm2: np.ndarray, max_mapnr: int, nfiles: int, page_size: int, splitblock_kib: int
) -> int | None:
    """Find the largest ``--splitblock-size`` (KiB, halving from ``splitblock_kib``) that leaves no part empty.

    With one page per block every part gets ``floor(N / nfiles)`` pages or
    more, so there is an answer whenever there are at least ``nfiles`` pages.

    Args:
        bm2: Packed 2nd bitmap.
        max_mapnr: Number of pfns.
        nfiles: Number of parts.
        page_size: Page size in bytes.
        splitblock_kib: The size that left a part empty.

    Returns:
        The size in KiB, or None (fewer dumpable pages than parts).
    """
    kib = splitblock_kib // 2
    while kib * 1024 >= page_size:
        ppb = kib * 1024 // page_size
        if all(n for _, _, n in cut_blocks(block_counts(bm2, max_mapnr, ppb), max_mapnr, nfiles, ppb)):
            return kib
        kib //= 2
    return None


def pack_split(
    source: Source, outputs: list[str], options: PackOptions, splitblock_kib: int = DEFAULT_SPLITBLOCK_KIB
) -> list[PackResult]:
    """Write one dump as ``len(outputs)`` split files.

    A part can be left without pages (makedumpfile's cut gives each part
    whole splitblocks, so a dump of fewer blocks than parts leaves the last
    ones empty): it is written all the same, as makedumpfile writes it, and
    its result carries a warning naming a ``--splitblock-size`` that would
    spread the pages.

    Args:
        source: The input.
        outputs: Part file names, in pfn order.
        options: What to produce (``flat`` is not allowed, as in makedumpfile).
        splitblock_kib: Granularity of the balancing, KiB.

    Returns:
        One result per part.
    """
    prep = prepare(source, options, len(outputs))
    ppb = max(1, splitblock_kib * 1024 // source.page_size)
    parts = cut_blocks(block_counts(prep.bm2, source.max_mapnr, ppb), source.max_mapnr, len(outputs), ppb)
    empty = [i for i, (_, _, n) in enumerate(parts) if n == 0]
    hint = ""
    if empty:
        total = sum(n for _, _, n in parts)
        better = spreading_splitblock(prep.bm2, source.max_mapnr, len(outputs), source.page_size, splitblock_kib)
        hint = (
            f"--splitblock-size {better} spreads them over all {len(outputs)} parts"
            if better is not None
            else f"no --splitblock-size helps: there are fewer pages ({total}) than parts"
        )
        names = ", ".join(outputs[i] for i in empty)
        hint = (
            f"{names}: {len(empty)} of {len(outputs)} parts hold no pages "
            f"(the {total} pages to dump fill too few splitblocks of {splitblock_kib} KiB); {hint}"
        )
    results = [write_dump(source, prep, path, options, (s, e)) for path, (s, e, _) in zip(outputs, parts, strict=True)]
    if empty:
        results[empty[0]].warnings.append(hint)
    return results


def reassemble(parts: list[str], output: str, force: bool = False) -> int:
    """Merge split files into one dump, as makedumpfile ``--reassemble`` does (§8).

    The main header is that of the first part flagged incomplete, else of the
    last part; the sub header is part 0's with the split fields cleared; notes
    and bitmaps come from part 0.  Each part's pages are copied in order with
    their offsets moved, and every part's shared zero page becomes the one of
    the new file.

    Args:
        parts: Part files.
        output: The merged file.
        force: Overwrite an existing file.

    Returns:
        Size of the merged file.
    """
    readers = [KdumpReader(p) for p in parts]
    try:
        return _reassemble(readers, output, force)
    finally:
        for r in readers:
            r.close()


def _reassemble(readers: list[KdumpReader], output: str, force: bool) -> int:
    first = readers[0]
    geo0 = first.geometry
    for r in readers:
        if not r.header.split:
            raise KdumpFormatError(r.path, first.geometry.block_size + 12, "not a split dump (split = 0)")
        if r.header.max_mapnr != first.header.max_mapnr or r.geometry.table_offset != geo0.table_offset:
            raise KdumpFormatError(r.path, 0, f"does not belong to the same dump as {first.path}")
    ordered = sorted(readers, key=lambda r: r.header.start_pfn)
    hdr_src = next((r for r in readers if r.header.status & DumpStatus.COMPRESSED_INCOMPLETE), readers[-1])
    layout = kdump.X86_64
    bs = geo0.block_size
    head_bytes = layout.disk_dump_header.itemsize
    sub_size = layout.kdump_sub_header.itemsize
    sub = np.frombuffer(first.file.read(bs, sub_size), layout.kdump_sub_header).copy()
    for f in ("split", "start_pfn", "end_pfn", "start_pfn_64", "end_pfn_64"):
        sub[f] = 0
    n_total = first.nr_dumpable
    data_start = geo0.table_offset + n_total * kdump.PAGE_DESC.itemsize
    share_zero = bool(first.header.dump_level & 1)
    fd = create_output_file(output, force)
    try:
        _pwrite(fd, output, hdr_src.file.read(0, head_bytes), 0)
        notes = first.notes
        if notes:
            _pwrite(fd, output, notes, first.header.offset_note)
        _pwrite(fd, output, sub.tobytes(), bs)
        _pwrite(fd, output, first.file.read(geo0.bitmap1_offset, geo0.bitmap_blocks * bs), geo0.bitmap1_offset)
        cursor = data_start
        if share_zero:
            _pwrite(fd, output, bytes(bs), cursor)
            cursor += bs
        index = 0
        for r in ordered:
            count = len(r.dumpable_pfns())
            descs = r.descriptors(0, count).copy()
            zero = share_zero & (descs["offset"] == data_start) & (descs["size"] == bs) & (descs["flags"] == 0)
            stored = ~zero & (descs["offset"] > 0)
            sizes = np.where(stored, descs["size"], 0).astype(np.int64)
            new_off = cursor + np.cumsum(sizes) - sizes
            old_off = descs["offset"].astype(np.int64)
            # Pages were written back to back in pfn order: copy each contiguous
            # stretch of the old data region as one block.
            idx = np.flatnonzero(stored)
            if len(idx):
                jumps = np.flatnonzero(np.diff(old_off[idx]) != sizes[idx][:-1]) + 1
                for a, b in zip(
                    np.concatenate(([0], jumps)).tolist(), np.concatenate((jumps, [len(idx)])).tolist(), strict=True
                ):
                    src = int(old_off[idx[a]])
                    length = int(old_off[idx[b - 1]] + sizes[idx[b - 1]] - src)
                    _copy(r, fd, output, src, length, int(new_off[idx[a]]))
            descs["offset"] = np.where(zero, data_start, np.where(stored, new_off, 0))
            _pwrite(fd, output, descs.tobytes(), geo0.table_offset + index * kdump.PAGE_DESC.itemsize)
            index += count
            cursor += int(sizes.sum())
        os.ftruncate(fd, cursor)
    except BaseException:
        os.close(fd)
        os.unlink(output)
        raise
    os.close(fd)
    return cursor


def _pwrite(fd: int, path: str, data: bytes, offset: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        try:
            done += os.pwrite(fd, view[done:], offset + done)
        except OSError as e:
            raise OutputError(path, f"write failed at offset {offset + done:#x}: {e.strerror}") from e


def _copy(reader: KdumpReader, fd: int, path: str, src: int, length: int, dst: int) -> None:
    done = 0
    while done < length:
        n = min(_COPY, length - done)
        data = reader.file.read(src + done, n)
        if len(data) < n:
            raise KdumpFormatError(reader.path, src + done + len(data), "page data runs past end of file")
        _pwrite(fd, path, data, dst + done)
        done += n
