"""A whole run: pass 1 (:func:`prepare`) and pass 2 (:func:`write_dump`)."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import NamedTuple

import numpy as np

from vmcorepack.codecs import Codec, get_codec
from vmcorepack.constants import DumpLevel, DumpStatus
from vmcorepack.errors import (
    DiskFullError,
    IncompleteDumpError,
    OutputError,
)
from vmcorepack.filter import PageFilter
from vmcorepack.pack.bitmaps import _chunks, _count_bits, bitmap_in_file, compute_bitmaps, memory_stats, write_bitmaps
from vmcorepack.pack.encoding import zero_mask
from vmcorepack.pack.options import PackOptions, PackResult, chunk_pages
from vmcorepack.pack.repair import finalize_incomplete, leave_out
from vmcorepack.pack.workers import _Job, _run_tasks
from vmcorepack.sources import Source
from vmcorepack.writer import FileOutput, FlatOutput, Output, make_plan, write_eraseinfo, write_headers


class Prepared(NamedTuple):
    """Pass 1 of a run: the decisions, before anything is written.

    Attributes:
        codec: The codec.
        bm2: Packed 2nd bitmap of the whole dump.
        result: Counters so far (bitmap counts, exclusion counts).
        utsname: utsname fields for the header, if known.
        started: ``time.monotonic()`` at the start.
        round_up: The 1st bitmap counts partial last pages (:func:`bitmap_in_file`).
    """

    codec: Codec
    bm2: np.ndarray
    result: PackResult
    utsname: dict[str, bytes] | None
    started: float
    round_up: bool = False


def prepare(source: Source, options: PackOptions, nfiles: int = 1) -> Prepared:
    """Build the 2nd bitmap and the counters (no output).

    Args:
        source: The input.
        options: What to produce.
        nfiles: Number of ``--split`` files (makedumpfile sizes buffers by it).

    Returns:
        The prepared run.
    """
    t0 = time.monotonic()
    codec = get_codec(options.codec)
    round_up = bitmap_in_file(source.max_mapnr, nfiles, options.cyclic_buffer_given, options.work_dir)
    flt = PageFilter(source, options.dump_level, round_up)
    bm2, ram, dumpable = compute_bitmaps(source, flt, options.cycle_pfns, round_up, options.progress, options.pages)
    result = PackResult(max_mapnr=source.max_mapnr, ram_pages=ram, dumpable=dumpable)
    result.counts = flt.counts
    result.original_pages, result.memory_hole = memory_stats(source, round_up)
    utsname = options.utsname if options.utsname is not None else flt.utsname()
    return Prepared(codec, bm2, result, utsname, t0, round_up)


def pack(source: Source, output: str | int, options: PackOptions) -> PackResult:
    """Write a kdump-compressed dump of ``source``.

    Args:
        source: The input.
        output: Output path, or for ``options.flat`` a writable descriptor.
        options: What to produce.

    Returns:
        What was done.

    Raises:
        IncompleteDumpError: Writing stopped (disk full, ``-L``, a worker died,
            a signal): a regular file keeps every page written before, every
            descriptor in it is valid or all zero, and the header carries
            ``DUMP_DH_COMPRESSED_INCOMPLETE``; a stream gets no end marker.
        VmcorepackError: Failure before anything was written (nothing is left).
    """
    return write_dump(source, prepare(source, options), output, options)


def write_dump(
    source: Source,
    prep: Prepared,
    output: str | int,
    options: PackOptions,
    part: tuple[int, int] | None = None,
) -> PackResult:
    """Pass 2: write the dump (or one ``--split`` part of it).

    Args:
        source: The input.
        prep: Result of :func:`prepare`.
        output: Output path, or for ``options.flat`` a writable descriptor.
        options: What to produce.
        part: ``[start, end)`` pfns of a split part: the headers say so, the
            table is reserved for the whole dump and filled from index 0
            with this part's pages only (docs/kdump-format.md §8).

    Returns:
        What was done (for a part, its own page counts).
    """
    codec, bm2 = prep.codec, prep.bm2
    result = dataclasses.replace(prep.result, counts=prep.result.counts, unreadable=[], warnings=[])
    dumpable = result.dumpable
    plan = make_plan(source, options.dump_level, codec.flag, dumpable, prep.utsname)
    if part is not None:
        sub = plan.sub_header
        sub["split"] = 1
        sub["start_pfn"] = min(part[0], 0xFFFFFFFF)
        sub["end_pfn"] = min(part[1], 0xFFFFFFFF)
        sub["start_pfn_64"] = part[0]
        sub["end_pfn_64"] = part[1]
    geo = plan.geometry
    lo, hi = part if part is not None else (0, source.max_mapnr)
    part_pages = dumpable if part is None else _count_bits(bm2, lo, hi)
    if options.dry_run:
        if options.dump_level & DumpLevel.ZERO:
            result.zero_pages = _count_zero(source, bm2, options)
            result.counts.zero = result.zero_pages
        result.seconds = time.monotonic() - prep.started
        return result
    out: Output
    if options.flat:
        fd = output if isinstance(output, int) else os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        out = FlatOutput("<stdout>" if isinstance(output, int) else output, fd)
    else:
        if not isinstance(output, str):
            raise OutputError(str(output), "a regular dump needs a path")
        out = FileOutput.create(output, options.force)
    out.limit = options.limit
    try:
        write_headers(out, plan)
        if isinstance(out, FileOutput):
            # Flagged incomplete until the end: a run killed outright (the OOM
            # killer in a small capture kernel) leaves a file readers know is cut.
            flagged = plan.header.copy()
            # In the field's own type: numpy < 2 (Debian bookworm's 1.24) promotes a 0-d array
            # or'ed with a Python int to int64 and refuses to cast that back in place.
            flagged["status"] |= flagged.dtype["status"].type(DumpStatus.COMPRESSED_INCOMPLETE)
            out.pwrite(flagged.tobytes(), 0)
        write_bitmaps(out, source, plan, bm2, options.cycle_pfns, prep.round_up)
        share_zero = bool(options.dump_level & DumpLevel.ZERO)
        first = geo.data_offset
        if share_zero:
            # One raw zero page first in the data region (§5.4).
            out.pwrite(bytes(geo.block_size), first)
            first += geo.block_size
        # Pages of an input dump are copied as stored unless a shared zero page
        # must be found among pages that the input stored as data.
        passthrough = not share_zero or bool(source.recorded_level & DumpLevel.ZERO)
        erasure = options.erase.pieces(bm2, source.max_mapnr, source.page_size) if options.erase else None
        job = _Job(
            source,
            out,
            codec,
            share_zero,
            geo.data_offset,
            geo.table_offset,
            options.flat,
            passthrough,
            options.dedup,
            erasure,
        )
        end = _run_tasks(
            job,
            functools.partial(_chunks, bm2, source.max_mapnr, options.cycle_pfns, chunk_pages(options), lo, hi),
            first,
            part_pages,
            options,
            result,
        )
        if result.unreadable and isinstance(out, FileOutput) and part is None:
            leave_out(out, plan, bm2, sorted(result.unreadable), options.cycle_pfns)
        # makedumpfile's write_kdump_eraseinfo: an input dump's text, then this run's.
        end = write_eraseinfo(
            out, plan, source.eraseinfo() + (options.erase.eraseinfo() if options.erase else b""), end
        )
        result.file_size = end
        if isinstance(out, FileOutput):
            # The data region normally ends the file; with no page at all it
            # still must cover the (hole) table and bitmaps crash maps.
            out.truncate(max(end, geo.data_offset))
            result.file_size = max(end, geo.data_offset)
            out.pwrite(plan.header.tobytes(), 0)  # whole: clear the INCOMPLETE flag
        out.finish()
    except (Exception, KeyboardInterrupt) as e:
        full = isinstance(e, DiskFullError)
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else e.msg if isinstance(e, OutputError) else str(e)
        if isinstance(out, FileOutput):
            out.close()
            pages = finalize_incomplete(out.path, plan)
            raise IncompleteDumpError(
                out.path, f"{why}; dump marked incomplete, {pages} of {dumpable} pages readable", pages, full
            ) from e
        out.close()
        raise IncompleteDumpError(out.path, f"{why}; stream left without its end marker", 0, full) from e
    out.close()
    result.raw_pages = part_pages - result.zero_pages - result.compressed_pages
    if share_zero:
        result.counts.zero = result.zero_pages
    result.seconds = time.monotonic() - prep.started
    return result


def _count_zero(source: Source, bm2: np.ndarray, options: PackOptions) -> int:
    n = 0
    for task in _chunks(bm2, source.max_mapnr, options.cycle_pfns, chunk_pages(options)):
        raw, known_zero = source.read_pfns_sparse(task.pfns)
        n += int(known_zero.sum()) + int(zero_mask(raw, source.page_size).sum())
    return n
