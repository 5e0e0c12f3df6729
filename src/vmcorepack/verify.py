"""Check a kdump file against the vmcore (or raw image) it was made from.

:func:`verify` never prints; it returns a :class:`VerifyReport` whose findings
are grouped by kind, each naming the first pfns concerned.  What is checked:

1. The headers agree with the source (page size, ``max_mapnr``).
2. The 1st bitmap is the source's RAM (§4.3).
3. The 2nd bitmap is what the dump level allows.  With VMCOREINFO (or at
   levels 0 and 1, which need none) it is recomputed with
   :class:`~vmcorepack.filter.PageFilter` and compared bit for bit: a page
   the level keeps but the dump dropped is an error, a descriptor for a page
   the level drops is a warning.  Without VMCOREINFO at higher levels only
   "dropped pages are RAM" can be checked, and a warning says so.
4. Every descriptor: offset and size inside the file, known flags, raw size.
5. Every page read back (decompressed) equals the source page; shared
   zero-page descriptors must stand for all-zero source pages.

Step 5 reads descriptors, page data and source pages for whole windows of
pages with numpy; only decompression is per page.  Windows are spread over a
fork-started pool of worker processes (2 by default), each reading the files
itself through the descriptors it inherited.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import signal
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vmcorepack import bitmap
from vmcorepack.codecs import CODEC_FLAGS, Codec, codec_for_flags
from vmcorepack.constants import DumpStatus
from vmcorepack.errors import UnsupportedError, VmcoreinfoError
from vmcorepack.filter import PageFilter
from vmcorepack.info import open_parts, window_bits, zero_page_offset
from vmcorepack.pack.encoding import read_pfns
from vmcorepack.pack.options import PHASE_EXCLUDE, Progress
from vmcorepack.reader import KdumpReader
from vmcorepack.sources import Source

#: Progress phase of step 5 (steps 2 and 3 report under pack.options.PHASE_EXCLUDE).
PHASE_COMPARE = "Comparing pages"

#: Pages compared per worker task.
CHUNK_PAGES = 4096
#: pfns per bitmap comparison slice.
BITMAP_WINDOW = 1 << 22
#: pfns named per finding.
MAX_PFNS = 8

# Finding codes.
CONTENT = "content-mismatch"
DROPPED_KEPT = "dropped-kept-page"
KEPT_DROPPED = "kept-dropped-page"
PAST_EOF = "descriptor-past-eof"
BAD_DESC = "bad-descriptor"
DECODE = "decode-failed"
INCOMPLETE = "incomplete-page"
BITMAP1 = "bitmap1-mismatch"
HEADER = "header-mismatch"
ZERO_PAGE = "zero-page-not-zero"
UNCHECKED = "filter-unchecked"


@dataclasses.dataclass
class Finding:
    """One kind of problem, with how many pfns have it and the first of them.

    Attributes:
        severity: ``"error"`` or ``"warning"``.
        code: Short kind name (module constants).
        message: What was expected and what was found.
        count: Number of pfns (or 1 for non-page findings).
        pfns: The first pfns concerned, ascending.
    """

    severity: str
    code: str
    message: str
    count: int = 0
    pfns: list[int] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        """One line: severity, message, count and first pfns."""
        where = ""
        if self.pfns:
            more = ", ..." if self.count > len(self.pfns) else ""
            first = ", ".join(f"{p:#x}" for p in self.pfns)
            where = f" ({self.count} page{'s' if self.count != 1 else ''}: pfn {first}{more})"
        return f"{self.severity}: {self.message}{where}"


@dataclasses.dataclass
class VerifyReport:
    """The outcome of :func:`verify`.

    Attributes:
        dump_paths: The dump (or its parts).
        source_path: The source image.
        dump_level: The dump's level.
        pages_checked: Descriptors whose page was read back and compared.
        pages_expected: Descriptors the dump has room for (2nd-bitmap bits
            of its parts): ``pages_checked`` of a complete, sound dump.
        flagged_incomplete: A part's header has ``DUMP_DH_COMPRESSED_INCOMPLETE``.
        filter_checked: The 2nd bitmap was recomputed and compared exactly.
        findings: Problems, errors first.
        seconds: Wall time.
    """

    dump_paths: list[str]
    source_path: str
    dump_level: int = 0
    pages_checked: int = 0
    pages_expected: int = 0
    flagged_incomplete: bool = False
    filter_checked: bool = False
    findings: list[Finding] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> list[Finding]:
        """Findings of severity error."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """Findings of severity warning."""
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def consistent(self) -> bool:
        """No error: every page the dump has equals the source's (warnings allowed)."""
        return not self.errors

    @property
    def missing_pages(self) -> int:
        """Pages with a zeroed descriptor (never written: the dump was cut, §12)."""
        f = next((f for f in self.findings if f.code == INCOMPLETE), None)
        return f.count if f is not None else 0

    @property
    def incomplete(self) -> bool:
        """The dump is flagged incomplete or lacks pages: it cannot be called OK, however sound the rest."""
        return self.flagged_incomplete or self.missing_pages > 0

    @property
    def ok(self) -> bool:
        """No error, and the dump is complete."""
        return self.consistent and not self.incomplete

    def first_bad_pfns(self) -> list[int]:
        """Return the first pfns named by error findings, ascending."""
        return sorted({p for f in self.errors for p in f.pfns})[:MAX_PFNS]


class _Collector:
    """Accumulates findings by code, keeping counts and the lowest pfns."""

    def __init__(self) -> None:
        self.by_code: dict[str, Finding] = {}

    def add(self, severity: str, code: str, message: str, pfns: np.ndarray | Sequence[int] | None = None) -> None:
        f = self.by_code.get(code)
        if f is None:
            f = self.by_code[code] = Finding(severity, code, message)
        if pfns is None:
            f.count += 1
            return
        arr = np.asarray(pfns, np.int64)
        f.count += len(arr)
        f.pfns = sorted(set(f.pfns) | set(np.sort(arr)[:MAX_PFNS].tolist()))[:MAX_PFNS]

    def merge(self, other: dict[str, Finding]) -> None:
        for code, f in other.items():
            mine = self.by_code.get(code)
            if mine is None:
                self.by_code[code] = f
                continue
            mine.count += f.count
            mine.pfns = sorted(set(mine.pfns) | set(f.pfns))[:MAX_PFNS]

    def findings(self) -> list[Finding]:
        return sorted(self.by_code.values(), key=lambda f: (f.severity != "error", f.pfns[:1] or [-1]))


# ----------------------------------------------------------------------------
# Page comparison (runs in workers)
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Task:
    part: int
    desc_index: int
    pfns: np.ndarray


_STATE: dict[str, Any] = {}


def _decode(codec: Codec, data: bytes, page_size: int) -> bytes | None:
    try:
        out = codec.decompress(data, page_size)
    except Exception:  # any codec failure is a finding, not a crash
        return None
    return out if len(out) == page_size else None


def _check_chunk(task: _Task) -> tuple[int, int, dict[str, Finding]]:
    readers: list[KdumpReader] = _STATE["readers"]
    source: Source = _STATE["source"]
    r = readers[task.part]
    ps = r.header.block_size
    incomplete_hdr = bool(r.header.status & DumpStatus.COMPRESSED_INCOMPLETE)
    zoff = zero_page_offset(r)
    out = _Collector()
    pfns = task.pfns
    n = len(pfns)
    descs = r.descriptors(task.desc_index, n)
    off = descs["offset"].astype(np.int64)
    size = descs["size"].astype(np.int64)
    flags = descs["flags"].astype(np.int64)
    fsize = r.file.size
    zeroed = off == 0
    if zeroed.any():
        sev = "warning" if incomplete_hdr else "error"
        out.add(sev, INCOMPLETE, "page descriptor is zeroed (page not written)", pfns[zeroed])
    is_zero = (off == zoff) & ~zeroed if zoff is not None else np.zeros(n, bool)
    bad = ~zeroed & (
        (off < 0) | (size <= 0) | (size > ps) | ((flags & ~CODEC_FLAGS) != 0) | ((flags == 0) & (size != ps))
    )
    if bad.any():
        out.add(
            "error", BAD_DESC, f"bad page descriptor (offset < 0, size not in 1..{ps}, or unknown flags)", pfns[bad]
        )
    past = ~zeroed & ~bad & (off + size > fsize)
    if past.any():
        out.add("error", PAST_EOF, f"page descriptor points past the end of the file ({fsize:#x} bytes)", pfns[past])
    good = ~zeroed & ~bad & ~past
    got = np.zeros((n, ps), np.uint8)
    ok = np.zeros(n, bool)
    ok[is_zero & good] = True
    stored = np.flatnonzero(good & ~is_zero)
    if len(stored):
        lo = int(off[stored].min())
        hi = int((off[stored] + size[stored]).max())
        total = int(size[stored].sum())
        # Pages of a window are stored together: one read when they are dense.
        if hi - lo <= 2 * total + (1 << 20):
            blob = r.file.read(lo, hi - lo)
            pieces = [
                blob[o - lo : o - lo + s] for o, s in zip(off[stored].tolist(), size[stored].tolist(), strict=True)
            ]
        else:
            pieces = [r.file.read(o, s) for o, s in zip(off[stored].tolist(), size[stored].tolist(), strict=True)]
        fl = flags[stored]
        raw = fl == 0
        raw_idx = stored[raw]
        if len(raw_idx):
            got[raw_idx] = np.frombuffer(
                b"".join(p for p, is_raw in zip(pieces, raw.tolist(), strict=True) if is_raw), np.uint8
            ).reshape(-1, ps)
            ok[raw_idx] = True
        for j in np.flatnonzero(~raw).tolist():
            i = int(stored[j])
            try:
                codec = codec_for_flags(int(fl[j]))
            except UnsupportedError:
                out.add("error", DECODE, f"codec of flags {int(fl[j]):#x} is not installed", [int(pfns[i])])
                continue
            page = _decode(codec, pieces[j], ps)
            if page is None:
                out.add("error", DECODE, "stored page does not decompress to exactly one page", [int(pfns[i])])
                continue
            got[i] = np.frombuffer(page, np.uint8)
            ok[i] = True
    want = np.frombuffer(read_pfns(source, pfns), np.uint8).reshape(n, ps)
    differ = ok & np.any(got.view(np.uint64) != want.view(np.uint64), axis=1)
    if differ.any():
        zero_differ = differ & is_zero
        if zero_differ.any():
            out.add(
                "error",
                CONTENT,
                "shared zero-page descriptor for a page that is not zero in the source",
                pfns[zero_differ],
            )
        data_differ = differ & ~is_zero
        if data_differ.any():
            out.add("error", CONTENT, "page contents differ from the source", pfns[data_differ])
    return n, int(ok.sum()), out.by_code


def _worker_init() -> None:
    # The parent handles ^C and SIGTERM; Pool.terminate() must simply end a worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _tasks(readers: list[KdumpReader], chunk: int) -> Iterator[_Task]:
    for part, r in enumerate(readers):
        h = r.header
        desc_index = 0
        for s in range(h.start_pfn, min(h.end_pfn, h.max_mapnr), BITMAP_WINDOW):
            e = min(s + BITMAP_WINDOW, h.end_pfn, h.max_mapnr)
            pfns = np.flatnonzero(window_bits(r.bitmap2, s, e)).astype(np.int64) + s
            for a in range(0, len(pfns), chunk):
                part_pfns = pfns[a : a + chunk]
                yield _Task(part, desc_index, part_pfns)
                desc_index += len(part_pfns)


# ----------------------------------------------------------------------------
# Bitmaps
# ----------------------------------------------------------------------------


def _check_bitmaps(
    readers: list[KdumpReader], source: Source, col: _Collector, report: VerifyReport, progress: Progress | None
) -> None:
    r = readers[0]
    h = r.header
    level = h.dump_level
    round_up = _bitmap_file_variant(r, source)
    try:
        flt = PageFilter(source, level, round_up)
        report.filter_checked = True
    except (VmcoreinfoError, UnsupportedError) as err:
        col.add(
            "warning",
            UNCHECKED,
            f"cannot recompute dump level {level} from the source ({err}); only checked that dropped pages are RAM",
        )
        flt = PageFilter(source, level & 1, round_up)
    if progress:
        progress(0, h.max_mapnr, PHASE_EXCLUDE)
    for s in range(0, h.max_mapnr, BITMAP_WINDOW):
        e = min(s + BITMAP_WINDOW, h.max_mapnr)
        b1 = bitmap.first_bitmap(source.segments, source.page_size, h.max_mapnr, s, e, round_up)
        d1 = window_bits(r.bitmap1, s, e)
        d2 = window_bits(r.bitmap2, s, e)
        base = np.arange(s, e, dtype=np.int64)
        if (b1 != d1).any():
            col.add("error", BITMAP1, "1st bitmap differs from the source's RAM", base[b1 != d1])
        expect = flt.second_bitmap(s, e) & b1
        if report.filter_checked:
            dropped = expect & ~d2
            extra = d2 & ~expect
        else:
            dropped = np.zeros(e - s, bool)
            extra = d2 & ~expect
        if dropped.any():
            col.add("error", DROPPED_KEPT, f"page dropped that dump level {level} keeps", base[dropped])
        if extra.any():
            col.add(
                "warning",
                KEPT_DROPPED,
                f"descriptor for a page dump level {level} drops (or that has no data)",
                base[extra],
            )
        if progress:
            progress(e, h.max_mapnr, PHASE_EXCLUDE)


def _bitmap_file_variant(r: KdumpReader, source: Source) -> bool:
    """Tell whether the dump's 1st bitmap is makedumpfile's bitmap-file variant.

    That variant (pack.bitmaps.bitmap_in_file) also counts each PT_LOAD's partial
    last page, and its 2nd bitmap starts from it: the dump says which one it
    is by the bit of such a page that no other PT_LOAD covers.
    """
    ps = source.page_size
    down = bitmap.load_ranges(source.segments, ps, r.header.max_mapnr)
    for end in source.segments["phys_end"].tolist():
        pfn = int(end) // ps
        if int(end) % ps and pfn < r.header.max_mapnr and not ((down[:, 0] <= pfn) & (pfn < down[:, 1])).any():
            return r.is_ram(pfn)
    return False


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------


def _collect(
    results: Iterator[tuple[int, int, dict[str, Finding]]],
    report: VerifyReport,
    col: _Collector,
    progress: Progress | None,
    total: int,
) -> int:
    done = 0
    for pages, checked, found in results:
        report.pages_checked += checked
        col.merge(found)
        done += pages
        if progress:
            progress(done, total, PHASE_COMPARE)
    return done


def verify(
    dump_paths: Sequence[str],
    source: Source,
    workers: int = 2,
    chunk_pages: int = CHUNK_PAGES,
    progress: Progress | None = None,
) -> VerifyReport:
    """Compare a dump with its source page by page.

    Args:
        dump_paths: The dump file, or all parts of a split dump.
        source: The vmcore or raw image it was made from.
        workers: Worker processes (0: compare in this process).
        chunk_pages: Pages per task.
        progress: :class:`~vmcorepack.pack.options.Progress` callback: pfns of the
            bitmap check, then pages compared (:data:`PHASE_COMPARE`).

    Returns:
        The report: ``report.ok`` when the dump is complete and has no error,
        ``report.consistent`` when what it holds is right but it is incomplete.

    Raises:
        KdumpFormatError: The dump cannot be parsed at all.
    """
    t0 = time.monotonic()
    report = VerifyReport(list(dump_paths), source.path)
    readers = open_parts(dump_paths)
    col = _Collector()
    try:
        h = readers[0].header
        report.dump_level = h.dump_level
        report.flagged_incomplete = any(r.header.status & DumpStatus.COMPRESSED_INCOMPLETE for r in readers)
        if h.block_size != source.page_size or h.max_mapnr != source.max_mapnr:
            col.add(
                "error",
                HEADER,
                f"dump has block_size {h.block_size} and max_mapnr {h.max_mapnr:#x}, "
                f"source has page size {source.page_size} and {source.max_mapnr:#x} pfns: not made from this source",
            )
            report.findings = col.findings()
            return report
        for r in readers:
            zoff = zero_page_offset(r)
            if zoff is not None and r.nr_dumpable and r.file.read(zoff, h.block_size).strip(b"\0"):
                col.add("error", ZERO_PAGE, f"{r.path}: shared zero page at {zoff:#x} is not all zero")
        _check_bitmaps(readers, source, col, report, progress)
        total = sum(
            int(np.count_nonzero(window_bits(r.bitmap2, r.header.start_pfn, min(r.header.end_pfn, h.max_mapnr))))
            for r in readers
        )
        report.pages_expected = total
        if progress:
            progress(0, total, PHASE_COMPARE)
        tasks = _tasks(readers, chunk_pages)
        _STATE.update(readers=readers, source=source)
        try:
            if workers <= 0:
                results: Iterator[tuple[int, int, dict[str, Finding]]] = map(_check_chunk, tasks)
                _collect(results, report, col, progress, total)
            else:
                pool = mp.get_context("fork").Pool(workers, initializer=_worker_init)
                try:
                    _collect(pool.imap(_check_chunk, tasks, chunksize=1), report, col, progress, total)
                    pool.close()
                except BaseException:
                    pool.terminate()
                    raise
                finally:
                    pool.join()
        finally:
            _STATE.clear()
    finally:
        for r in readers:
            r.close()
    report.findings = col.findings()
    report.seconds = time.monotonic() - t0
    return report
