"""Input images: ELF vmcores and raw physical-memory images.

A source maps physical addresses to file offsets through a segment table and
reads whole pages into numpy arrays.  Sources are worker-safe: they hold only
the path and tables, open the file lazily in each process, and drop the handle
when pickled (the volatility3 ``FileLayer`` idea).  Reads go through a
short-lived mmap window (bounded memory whatever the image size) or through
``pread``.  The default picks per access pattern and file:

* contiguous runs (levels 0 and 1) use ``pread``: it measured faster here than
  an mmap window (0.11-0.16 s against 0.20-0.21 s for 883 MiB in 2 MiB pieces,
  ``benchmarks/micro.py``; mmap pays a page fault per page);
* scattered pages (the kernel pages -d 31 keeps) of a regular file are picked
  out of one mmap window with numpy, in-process (one ``pread`` per dense
  stretch costs Python work per stretch; forked workers use ``pread``, see
  ``pipeline._worker_main``);
* /proc/vmcore is read with ``pread`` from Python, so that a range the kernel
  cannot read (EIO) is an error we can report and skip rather than a SIGBUS;
  ``--mmap`` maps it there too, as makedumpfile does.  The C read-and-encode
  loop (``pipeline.encode_from_file``) maps it by default (``map_window``): it
  catches a fault in a mapped page and reads that page with ``pread`` instead,
  so EIO is still reported; ``--non-mmap`` turns that off.
"""

from __future__ import annotations

import errno
import mmap
import os
import resource
import stat
from typing import Any, NamedTuple

import numpy as np

from vmcorepack import formats, native
from vmcorepack.errors import ElfFormatError, FormatError, SourceReadError, VmcoreinfoError
from vmcorepack.formats import elf
from vmcorepack.vmcoreinfo import VmcoreInfo

#: Largest page size we accept from PAGESIZE (arm64 and ppc64 use up to 256 KiB).
MAX_PAGE_SIZE = 1 << 18
#: Upper bound on the physical address space we accept (52 bits, x86_64 5-level).
MAX_PHYS_BITS = 52

#: Bytes per window the C loop maps of /proc/vmcore (makedumpfile's MAP_REGION,
#: makedumpfile.h): each window is one remap of the old kernel's pages, where
#: read() maps and unmaps every page (copy_oldmem_page()).
MAP_WINDOW = 4 << 20


class NoteInfo(NamedTuple):
    """What the writer needs from the PT_NOTE blob.

    Attributes:
        blob: The notes bytes, copied verbatim into the dump.
        nr_cpus: Number of ``CORE``/``NT_PRSTATUS`` notes.
        vmcoreinfo_offset: Offset of the VMCOREINFO descriptor in the blob, or -1.
        vmcoreinfo_size: Its ``n_descsz``, or 0.
    """

    blob: bytes
    nr_cpus: int
    vmcoreinfo_offset: int
    vmcoreinfo_size: int

    @classmethod
    def parse(cls, blob: bytes, path: str, base_offset: int) -> NoteInfo:
        """Walk a notes blob.

        Args:
            blob: PT_NOTE contents.
            path: File name for errors.
            base_offset: File offset of the blob.

        Returns:
            The summary.
        """
        nr_cpus = 0
        vi_off, vi_size = -1, 0
        for note in elf.iter_notes(blob, path, base_offset):
            if note.name == b"CORE" and note.type == elf.NT_PRSTATUS:
                nr_cpus += 1
            elif note.name == b"VMCOREINFO" and vi_off < 0:
                vi_off, vi_size = note.desc_offset, len(note.desc)
        return cls(blob, nr_cpus, vi_off, vi_size)

    @property
    def vmcoreinfo_bytes(self) -> bytes | None:
        """The VMCOREINFO descriptor, or None."""
        if self.vmcoreinfo_offset < 0:
            return None
        return self.blob[self.vmcoreinfo_offset : self.vmcoreinfo_offset + self.vmcoreinfo_size]


class Source:
    """Base class of physical-memory inputs.

    Attributes:
        path: The input file.
        segments: ``elf.SEGMENT_DTYPE`` array: physical ranges and where their
            data lies in the file, in the order a lookup prefers them.
        notes: The notes blob summary (empty for raw images).
        vmcoreinfo: Parsed VMCOREINFO, or None.
        page_size: Page size of the dumped kernel.
        use_mmap: Read through mmap windows (else pread); None picks per file.
        e_machine: The dumped machine's ELF machine number, as the input
            records it, or None where it records none (a raw image).
        machine_offset: File offset of that record, for messages.
        recorded_phys_base: The kernel's relocation where the input records
            it (a kdump file's sub header), else None: the architecture
            works it out (kernel/arch).
    """

    def __init__(
        self,
        path: str,
        segments: np.ndarray,
        notes: NoteInfo,
        vmcoreinfo: VmcoreInfo | None,
        page_size: int,
        file_size: int,
        use_mmap: bool | None = None,
    ) -> None:
        """Create a source (use the ``open_*`` functions instead).

        Args:
            path: File name.
            segments: Segment table.
            notes: Notes summary.
            vmcoreinfo: VMCOREINFO or None.
            page_size: Page size.
            file_size: Size of the file.
            use_mmap: Whether to read through mmap (None: for regular files, never under /proc).
        """
        self.path = path
        self.segments = segments
        self.notes = notes
        self.vmcoreinfo = vmcoreinfo
        self.page_size = page_size
        self.file_size = file_size
        is_proc = os.path.realpath(path).startswith("/proc/")
        self.probe_holes = not is_proc
        self.use_mmap = bool(use_mmap)
        self.mmap_scattered = (not is_proc) if use_mmap is None else use_mmap
        # Outside the C read-and-encode loop (pipeline.encode_from_file), dense
        # stretches of a regular file are mapped rather than copied.
        # /proc/vmcore is read with pread, where an unreadable page is an
        # error, not a SIGBUS.
        self.map_dense = (not is_proc) if use_mmap is None else use_mmap
        #: Window size for the C read-and-encode loop, 0 to read with preadv:
        #: mapped for /proc/vmcore (a fault there is caught, see MAP_WINDOW)
        #: and with --mmap; preadv for regular files, as fast there.
        self.map_window = MAP_WINDOW if (is_proc if use_mmap is None else use_mmap) else 0
        self._fd: int | None = None
        self._runs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # _file_runs(), built on first use
        self._partial: dict[int, list[tuple[int, int]]] | None = None  # partial_pages(), built on first use
        #: Dump level recorded in the input: 0 except for kdump inputs
        #: (refilter.KdumpSource), whose excluded pages stay excluded.
        self.recorded_level = 0
        self.e_machine: int | None = None
        self.machine_offset: int | None = None
        self.recorded_phys_base: int | None = None
        max_paddr = int(segments["phys_end"].max()) if len(segments) else 0
        self.max_mapnr = -(-max_paddr // page_size)

    # -- pickling: workers reopen the file themselves -------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Drop the open file descriptor."""
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def _file(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as e:
                raise SourceReadError(self.path, 0, f"cannot open: {e.strerror}") from e
        return self._fd

    def close(self) -> None:
        """Close the file descriptor if open."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Source:
        """Return self."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()

    # -- facts ----------------------------------------------------------------
    @property
    def nr_cpus(self) -> int:
        """Number of NT_PRSTATUS notes."""
        return self.notes.nr_cpus

    # -- raw file access ------------------------------------------------------
    def read_file(self, offset: int, size: int) -> bytes:
        """Read file bytes (short at end of file).

        Args:
            offset: File offset.
            size: Number of bytes.

        Returns:
            The bytes read.
        """
        try:
            return os.pread(self._file(), size, offset)
        except OSError as e:
            raise SourceReadError(
                self.path, offset, f"read of {size} bytes at file offset {offset:#x} failed: {e.strerror}"
            ) from e

    def _read_into(self, out: memoryview, offset: int) -> int:
        """Fill ``out`` from file ``offset``; return the number of bytes read."""
        n = len(out)
        end = min(offset + n, self.file_size)
        if end <= offset:
            return 0
        fd = self._file()
        mod = native.module() if self.map_window else None
        if mod is not None:
            # The page pass's mem_map reads of /proc/vmcore: mapped, a fault read with pread.
            try:
                got: int = mod.read_range(fd, offset, out[: end - offset], self.map_window, self.file_size)
            except OSError as e:
                raise SourceReadError(self.path, offset, f"read failed at file offset {offset:#x}: {e.strerror}") from e
            return got
        if self.use_mmap:
            gran = mmap.ALLOCATIONGRANULARITY
            base = offset - offset % gran
            try:
                with mmap.mmap(fd, end - base, mmap.MAP_SHARED, mmap.PROT_READ, offset=base) as mm:
                    # One copy, straight from the mapping into the caller's buffer;
                    # the view must be gone before the mapping closes.
                    view = np.frombuffer(mm, np.uint8, end - offset, offset - base)
                    np.copyto(np.frombuffer(out, np.uint8, end - offset), view)
                    del view
                return end - offset
            except (OSError, ValueError):
                # /proc/vmcore of old kernels and some filesystems refuse mmap:
                # fall back to read() for good, like makedumpfile's --non-mmap.
                self.use_mmap = False
        done = 0
        while done < end - offset:
            try:
                got = os.preadv(fd, [out[done : end - offset]], offset + done)
            except OSError as e:
                raise SourceReadError(
                    self.path, offset + done, f"read failed at file offset {offset + done:#x}: {e.strerror}"
                ) from e
            if got == 0:
                break
            done += got
        return done

    # -- physical memory ------------------------------------------------------
    def read_phys(self, paddr: int, size: int) -> bytes:
        """Read physical memory that lies inside one segment's file data.

        Args:
            paddr: Physical address.
            size: Number of bytes.

        Returns:
            Exactly ``size`` bytes.

        Raises:
            SourceReadError: Part of the range is not backed by the file.
        """
        buf = bytearray(size)
        self.read_phys_into(paddr, memoryview(buf))
        return bytes(buf)

    def read_phys_into(self, paddr: int, out: memoryview) -> None:
        """Fill ``out`` with physical memory from ``paddr`` (no intermediate copy).

        mem_map scans read tens of MiB this way: straight into the array
        that is decoded, instead of through a bytes object.

        Args:
            paddr: Physical address.
            out: Writable byte buffer; its length is the size read.

        Raises:
            SourceReadError: Part of the range is not backed by the file.
        """
        size = len(out)
        segs = self.segments
        hit = np.nonzero((segs["phys_start"] <= paddr) & (paddr < segs["phys_start"] + segs["file_size"]))[0]
        if not len(hit):
            raise SourceReadError(self.path, paddr, "physical address not in the dump")
        seg = segs[hit[0]]
        avail = int(seg["phys_start"]) + int(seg["file_size"]) - paddr
        if avail < size:
            # Cross into the next segment (rare: page tables read 8 bytes).
            self.read_phys_into(paddr, out[:avail])
            self.read_phys_into(paddr + avail, out[avail:])
            return
        got = self._read_into(out, int(seg["file_offset"]) + paddr - int(seg["phys_start"]))
        if got < size:
            raise SourceReadError(self.path, paddr + got, "file ends inside a segment")

    def page_owner(self, start_pfn: int, count: int) -> np.ndarray:
        """Return, per pfn, the index of the segment its data comes from, or -1.

        The owner is the first segment (in table order) whose file-backed part
        contains the page's start address: makedumpfile's ``paddr_to_offset``
        (docs/kdump-format.md §9.1, §17.1.1).

        Args:
            start_pfn: First pfn.
            count: Number of pfns.

        Returns:
            int32 array of length ``count``.
        """
        owner = np.full(count, -1, np.int32)
        ps = self.page_size
        end_pfn = start_pfn + count
        for i, seg in enumerate(self.segments):
            s = int(seg["phys_start"])
            e = s + int(seg["file_size"])
            lo = max(-(-s // ps), start_pfn)
            hi = min(-(-e // ps), end_pfn)
            if lo >= hi:
                continue
            sl = owner[lo - start_pfn : hi - start_pfn]
            sl[sl < 0] = i
        return owner

    def _read_bytes(self, offset: int, size: int) -> bytes:
        """Read file bytes as one bytes object, zero-padded past end of file."""
        end = min(offset + size, self.file_size)
        if end <= offset:
            return bytes(size)
        if self.use_mmap:
            gran = mmap.ALLOCATIONGRANULARITY
            base = offset - offset % gran
            try:
                with mmap.mmap(self._file(), end - base, mmap.MAP_SHARED, mmap.PROT_READ, offset=base) as mm:
                    data = mm[offset - base : end - base]
            except (OSError, ValueError):
                self.use_mmap = False
            else:
                return data if len(data) == size else data.ljust(size, b"\0")
        data = self._pread(end - offset, offset)
        if len(data) < end - offset:
            buf = bytearray(data.ljust(end - offset, b"\0"))
            got = len(data)
            # Short read: keep going (pipes, slow devices) until end of file.
            while got < end - offset:
                more = self._pread(end - offset - got, offset + got)
                if not more:
                    break
                buf[got : got + len(more)] = more
                got += len(more)
            data = bytes(buf)
        return data if len(data) == size else data.ljust(size, b"\0")

    def _pread(self, size: int, offset: int) -> bytes:
        """One ``pread``; an I/O error (EIO from /proc/vmcore) becomes SourceReadError."""
        try:
            return os.pread(self._file(), size, offset)
        except OSError as e:
            raise SourceReadError(self.path, offset, f"read failed at file offset {offset:#x}: {e.strerror}") from e

    def file_offsets(self, pfns: np.ndarray) -> np.ndarray:
        """Return the file offset of each page's data, or -1 where there is none.

        Vectorised form of :meth:`page_owner`: the first segment (in table
        order) whose file data holds the page's start address wins.  One
        binary search per page in :meth:`_file_runs`, whatever the number of
        segments: a vmcore of a large machine has dozens of PT_LOAD segments,
        and a mask pass per segment made every worker chunk pay for each.

        Args:
            pfns: int64 pfns.

        Returns:
            int64 file offsets.
        """
        lo, hi, delta = self._file_runs()
        pa = pfns.astype(np.int64) * self.page_size
        if len(lo) == 0:
            return np.full(len(pfns), -1, np.int64)
        i = np.searchsorted(lo, pa, side="right") - 1
        j = np.maximum(i, 0)
        return np.where((i >= 0) & (pa < hi[j]), pa + delta[j], -1)

    def _file_runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Disjoint physical byte ranges backed by file data, each owned by one segment.

        Returns:
            Sorted int64 arrays (start, end, file offset minus physical
            address), where an earlier segment keeps an overlap.
        """
        if self._runs is not None:
            return self._runs
        seg = self.segments
        start = seg["phys_start"].astype(np.int64)
        end = start + seg["file_size"].astype(np.int64)
        delta = seg["file_offset"].astype(np.int64) - start
        keep = end > start
        start, end, delta = start[keep], end[keep], delta[keep]
        order = np.argsort(start, kind="stable")
        s, e = start[order], end[order]
        if len(s) and not bool((s[1:] >= e[:-1]).all()):
            # Overlapping segments (rare): cut each one around the ranges that
            # earlier segments own, in table order.
            pieces: list[tuple[int, int, int]] = []
            for a0, b0, d in zip(start.tolist(), end.tolist(), delta.tolist(), strict=True):
                parts = [(a0, b0)]
                for ps_, pe_, _ in pieces:
                    parts = [q for a, b in parts for q in ((a, min(b, ps_)), (max(a, pe_), b)) if q[0] < q[1]]
                pieces.extend((a, b, d) for a, b in parts)
            pieces.sort()
            arr = np.array(pieces, np.int64).reshape(-1, 3)
            self._runs = (arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())
        else:
            self._runs = (s, e, delta[order])
        return self._runs

    def read_pfns_bytes(self, pfns: np.ndarray, bad: list[int] | None = None, gap: int = 1 << 16) -> bytes:
        """Read the pages of a sorted pfn list as one bytes object, holes included.

        Args:
            pfns: Sorted int64 pfns.
            bad: As for :meth:`read_pfns_sparse`.
            gap: As for :meth:`read_pfns_sparse`.

        Returns:
            ``len(pfns) * page_size`` bytes.
        """
        data, known_zero = self.read_pfns_sparse(pfns, bad, gap)
        if not known_zero.any():
            return bytes(data)
        out = np.zeros((len(pfns), self.page_size), np.uint8)
        out[~known_zero] = np.frombuffer(data, np.uint8).reshape(-1, self.page_size)
        return out.tobytes()

    def page_plan(self, pfns: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
        """Say where the pages of a sorted pfn list lie in the file, for a reader in C.

        Args:
            pfns: Sorted int64 pfns.

        Returns:
            (open file descriptor; ascending int64 file offsets of the pages
            that are not known zero; the known-zero mask), or None when the
            pages are not plain file bytes (a kdump input decodes them, a
            page PT_LOAD data covers in part is zero-filled).
        """
        partial = self.partial_pages()
        if partial and len(pfns):
            # pfns is sorted: one binary search per partial page (a handful per vmcore),
            # where np.isin sorted every chunk's pfns again.
            want = np.fromiter(partial, np.int64, len(partial))
            if (pfns[np.minimum(np.searchsorted(pfns, want), len(pfns) - 1)] == want).any():
                return None  # read_pfns_sparse zeroes what no PT_LOAD holds of those pages
        off = self._data_offsets(pfns)
        known_zero = off < 0
        return self._file(), np.ascontiguousarray(off[~known_zero]), known_zero

    def _data_offsets(self, pfns: np.ndarray) -> np.ndarray:
        """File offset of each page's data; -1 where there is none or it lies in a file hole."""
        off = self.file_offsets(pfns)
        return self._drop_holes(off) if self.probe_holes else off

    def read_pfns_sparse(
        self, pfns: np.ndarray, bad: list[int] | None = None, gap: int = 1 << 16
    ) -> tuple[bytes | bytearray | memoryview, np.ndarray]:
        """Read the pages of a sorted pfn list, except those known to be zero.

        A page that a PT_LOAD's file data covers only in part (its first or
        last page, when ``p_paddr`` or ``p_paddr + p_filesz`` is not page
        aligned) reads as zeros outside that data, as makedumpfile's
        ``readpage_elf`` fills it: /proc/vmcore itself shows the rest of the
        page there.

        Args:
            pfns: Sorted int64 pfns.
            bad: Collects pfns whose read fails (their pages read as zeros);
                None to raise instead.
            gap: Largest file hole read through rather than skipped.

        Returns:
            (the pages that are not known zero, concatenated; the known-zero mask).
        """
        data, known_zero = self._read_pfns_plain(pfns, bad, gap)
        partial = self.partial_pages()
        if not partial:
            return data, known_zero
        have = pfns[~known_zero]
        hit = np.flatnonzero(np.isin(have, np.fromiter(partial, np.int64, len(partial))))
        if not len(hit):
            return data, known_zero
        buf = bytearray(data)
        ps = self.page_size
        for i in hit.tolist():
            for lo, hi in partial[int(have[i])]:
                buf[i * ps + lo : i * ps + hi] = bytes(hi - lo)
        return buf, known_zero

    def partial_pages(self) -> dict[int, list[tuple[int, int]]]:
        """Pages that PT_LOAD file data covers in part, and the byte ranges of each that none covers.

        Returns:
            ``{pfn: [(start, end), ...]}`` of bytes within the page (cached).
        """
        if self._partial is None:
            ps = self.page_size
            # The disjoint, sorted runs of file-backed bytes: a page's coverage is the runs
            # between two binary searches, whatever the number of PT_LOADs.
            lo, hi, _ = self._file_runs()
            edges = np.unique(np.concatenate((lo[lo % ps != 0] // ps, hi[hi % ps != 0] // ps)))
            found: dict[int, list[tuple[int, int]]] = {}
            for pfn in edges.tolist():
                start = pfn * ps
                a = int(np.searchsorted(hi, start, "right"))
                b = int(np.searchsorted(lo, start + ps, "left"))
                gaps, at = [], 0
                for r0, r1 in zip(lo[a:b].tolist(), hi[a:b].tolist(), strict=True):
                    if r0 - start > at:
                        gaps.append((at, r0 - start))
                    at = max(at, min(r1, start + ps) - start)
                if at < ps:
                    gaps.append((at, ps))
                if b > a and gaps:
                    found[pfn] = gaps
            self._partial = found
        return self._partial

    def _read_pfns_plain(
        self, pfns: np.ndarray, bad: list[int] | None = None, gap: int = 1 << 16
    ) -> tuple[bytes | bytearray | memoryview, np.ndarray]:
        """Read the pages of a sorted pfn list, except those known to be zero, as the file has them.

        Pages with no file data, or lying in a hole of a sparse file, are
        zero without being read or even materialised.  A contiguous stretch
        is mapped (:meth:`_map_dense`) or read with one ``pread``; scattered
        pages (the kernel pages -d 31 keeps) are gathered by the C reader,
        else through mmap windows or one ``pread`` per dense stretch (holes
        of at most ``gap`` bytes read through): no Python work per page.
        Arguments and result as for :meth:`read_pfns_sparse`.
        """
        ps = self.page_size
        n = len(pfns)
        if n == 0:
            return b"", np.zeros(0, bool)
        off = self._data_offsets(pfns)
        known_zero = off < 0
        have = np.flatnonzero(~known_zero)
        m = len(have)
        if m == 0:
            return b"", known_zero
        o = off[have]
        if m == 1 or bool((np.diff(o) == ps).all()):
            # One contiguous stretch of the file: the common case at -d 0/1.
            mapped = self._map_dense(int(o[0]), m * ps)
            if mapped is not None:
                return mapped, known_zero
            return self._read_guarded(int(o[0]), m * ps, pfns[have], bad), known_zero
        gathered = self._gather_native(o, pfns[have], bad)
        if gathered is not None:
            return gathered, known_zero
        out = np.zeros((m, ps), np.uint8)
        if self.mmap_scattered and self._gather_mapped(o, out):
            return out.tobytes(), known_zero
        d = np.diff(o)
        # A span goes forward in whole pages with small holes: its pages are
        # rows of one read.
        brk = np.flatnonzero((d < ps) | (d > ps + gap) | (d % ps != 0)) + 1
        starts = np.concatenate(([0], brk)).tolist()
        ends = np.concatenate((brk, [m])).tolist()
        for a, b in zip(starts, ends, strict=True):
            lo = int(o[a])
            span = int(o[b - 1]) + ps - lo
            raw = np.frombuffer(self._read_guarded(lo, span, pfns[have[a:b]], bad), np.uint8).reshape(-1, ps)
            out[a:b] = raw[(o[a:b] - lo) // ps]
        return out.tobytes(), known_zero

    def _drop_holes(self, off: np.ndarray, max_extents: int = 256, probe: int = 4) -> np.ndarray:
        """Return ``off`` with -1 for pages that lie wholly in a hole of the file (SEEK_DATA/SEEK_HOLE).

        Generator images and copied vmcores are sparse; makedumpfile reads
        their holes as zeros page by page.  Only large holes are worth
        skipping: once ``probe`` extents show that data fills more than half
        of the stretch walked so far, the range is read through instead.
        Walking every extent until data covered half of the range cost
        319,183 lseek calls and 0.9 s of 5.7 s on the 4 GiB generator image,
        whose zero pages are small scattered holes (cProfile of ``vmcorepack
        -l -d 1 --workers 0``); stopping after 8 extents instead read the
        sparse 64 GiB image's holes (about 11 data extents per 8 MiB) and
        took 41.7 s at -d 1.  A filesystem without the lseek extension
        answers EINVAL, and then the probing stops for good.
        """
        valid = off >= 0
        if not valid.any():
            return off
        ps = self.page_size
        lo, hi = int(off[valid].min()), int(off[valid].max()) + ps
        fd = self._file()
        starts: list[int] = []
        ends: list[int] = []
        pos = lo
        data = 0
        try:
            while pos < hi:
                if len(starts) >= max_extents:
                    # Too fragmented to map out: treat the rest as data.
                    starts.append(pos)
                    ends.append(hi)
                    break
                try:
                    d = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # no data after pos
                        break
                    raise
                if d >= hi:
                    break
                h = os.lseek(fd, d, os.SEEK_HOLE)
                starts.append(d)
                ends.append(h)
                data += min(h, hi) - d
                if len(starts) >= probe and data * 2 > min(h, hi) - lo:
                    return off  # dense: one read beats picking pages around small holes
                pos = h
        except OSError:
            self.probe_holes = False
            return off
        if not starts:
            return np.where(valid, -1, off)
        if data * 2 > hi - lo:
            return off
        s_arr, e_arr = np.array(starts, np.int64), np.array(ends, np.int64)
        j = np.searchsorted(e_arr, off, side="right")
        inside = (j < len(e_arr)) & (s_arr[np.minimum(j, len(s_arr) - 1)] < off + ps)
        return np.where(valid & ~inside, -1, off)

    def _map_dense(self, offset: int, size: int, least: int = 1 << 20) -> memoryview | None:
        """Map ``size`` bytes of the file at ``offset`` read-only, or None to read them instead.

        Used where pages are read before they are encoded (``--dedup``, the
        Python page loop, ``VMCOREPACK_FUSED_READ=0``): a mapping saves the copy.
        With liblzo2's encoder, reading 4 GiB and compressing it in one
        process took 2.33-2.41 s through 8 MiB preads and 1.80-1.99 s from
        8 MiB mappings; with our encoder the two are within this machine's
        noise (warm page cache: pread 1.68-2.00 s, mmap 1.47-2.03 s;
        ``benchmarks/micro.py``, "C page loop").  The mapping lives as long
        as the returned view.

        Args:
            offset: File offset.
            size: Bytes.
            least: Smaller stretches are read (a mapping costs system calls).

        Returns:
            A view of the mapping, or None.
        """
        if not self.map_dense or size < least or offset + size > self.file_size:
            return None
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            mm = mmap.mmap(
                self._file(), offset + size - base, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ, offset=base
            )
        except (OSError, ValueError):
            self.map_dense = False
            return None
        return memoryview(mm)[offset - base :]

    def _gather_native(self, o: np.ndarray, pfns: np.ndarray, bad: list[int] | None) -> bytes | bytearray | None:
        """Gather the pages at file offsets ``o`` with the C reader (one preadv per stretch).

        At -d 31 on the 4 GiB generator image (352k scattered pages, cProfile
        of ``vmcorepack -l -d 31 --workers 0``) gathering took 2.1 s through
        mmap windows and 2.0 s with Python preads and numpy row copies.

        Returns:
            The pages, or None when the extension is absent (the caller
            falls back).  An I/O error goes to the page-by-page path.
        """
        mod = native.module()
        if mod is None:
            return None
        out = bytearray(len(o) * self.page_size)
        try:
            mod.read_pages(self._file(), np.ascontiguousarray(o, np.int64), self.page_size, out)
        except OSError:
            return self._read_scattered_guarded(o, pfns, bad)
        return out

    def _read_scattered_guarded(self, o: np.ndarray, pfns: np.ndarray, bad: list[int] | None) -> bytes:
        """Read pages one by one after an I/O error, recording the unreadable pfns."""
        ps = self.page_size
        parts = [self._read_guarded(off, ps, pfns[i : i + 1], bad) for i, off in enumerate(o.tolist())]
        return b"".join(parts)

    def _gather_mapped(self, o: np.ndarray, out: np.ndarray, window: int = 1 << 28) -> bool:
        """Copy the pages at file offsets ``o`` into the rows of ``out`` through mmap windows.

        Args:
            o: File offset per page (all with data), ascending.
            out: ``(len(o), page_size)`` array to fill.
            window: Largest mapping, bytes.

        Returns:
            False (nothing done) when mmap is refused, so the caller reads instead.
        """
        ps = self.page_size
        d = np.diff(o)
        # A window holds pages that go forward in whole pages and lie within
        # `window` bytes of its first page.
        bucket = (o - o[0]) // window
        brk = np.flatnonzero((d < ps) | (d % ps != 0) | (np.diff(bucket) != 0)) + 1
        starts = np.concatenate(([0], brk)).tolist()
        ends = np.concatenate((brk, [len(o)])).tolist()
        fd = self._file()
        try:
            for a, b in zip(starts, ends, strict=True):
                lo = int(o[a])
                base = lo - lo % mmap.ALLOCATIONGRANULARITY
                hi = min(int(o[b - 1]) + ps, self.file_size)
                with mmap.mmap(fd, hi - base, mmap.MAP_SHARED, mmap.PROT_READ, offset=base) as mm:
                    arr = np.frombuffer(mm, np.uint8)
                    full = (hi - lo) // ps
                    rows = (o[a:b] - lo) // ps
                    ok = rows < full
                    view = arr[lo - base : lo - base + full * ps].reshape(full, ps)
                    dest = np.arange(a, b)
                    out[dest[ok]] = view[rows[ok]]
                    if not ok.all():
                        # The last page runs past the end of the file: zero-padded.
                        tail = arr[lo - base + full * ps :]
                        out[dest[~ok][0], : len(tail)] = tail
                    del arr, view
        except (OSError, ValueError):
            self.mmap_scattered = False
            return False
        return True

    def _read_guarded(self, offset: int, size: int, pfns: np.ndarray, bad: list[int] | None) -> bytes:
        """Read file bytes; on an I/O error, retry page by page and record the bad pfns."""
        try:
            return self._read_bytes(offset, size)
        except SourceReadError:
            if bad is None:
                raise
        # Error path only: isolate the unreadable pages one by one.
        ps = self.page_size
        offs = self.file_offsets(pfns)
        buf = bytearray(size)
        for pfn, o in zip(pfns.tolist(), offs.tolist(), strict=True):
            rel = o - offset
            if rel < 0 or rel + ps > size:
                continue
            try:
                buf[rel : rel + ps] = self._read_bytes(o, ps)
            except SourceReadError:
                bad.append(pfn)
        return bytes(buf)

    def read_pages_bytes(self, start_pfn: int, count: int) -> bytes:
        """Read ``count`` pages from ``start_pfn`` as one bytes object.

        Same contents as :meth:`read_pages`, with one copy fewer: codec
        bindings want ``bytes``, and a single ``pread`` of a contiguous run
        already returns them.

        Args:
            start_pfn: First pfn.
            count: Number of pages.

        Returns:
            ``count * page_size`` bytes.
        """
        ps = self.page_size
        owner = self.page_owner(start_pfn, count)
        change = np.flatnonzero(np.diff(owner)) + 1
        starts = np.concatenate(([0], change)).tolist()
        ends = np.concatenate((change, [count])).tolist()
        parts: list[bytes] = []
        for a, b in zip(starts, ends, strict=True):
            o = int(owner[a])
            if o < 0:
                parts.append(bytes((b - a) * ps))
                continue
            seg = self.segments[o]
            foff = int(seg["file_offset"]) + (start_pfn + a) * ps - int(seg["phys_start"])
            parts.append(self._read_bytes(foff, (b - a) * ps))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def dumpable_mask(self, start: int, end: int) -> np.ndarray | None:
        """Pages an input still has in ``[start, end)``, if it dropped some (a dump); else None."""
        return None

    def stored_pages(self, pfns: np.ndarray) -> tuple[np.ndarray, list[bytes], np.ndarray] | None:
        """The pages as an input dump stores them (flags, bytes, zero mask); None for memory images."""
        return None

    def eraseinfo(self) -> bytes:
        """The erase info an input dump records (carried into its re-filtered output); b"" for memory images."""
        return b""

    def read_pages(self, start_pfn: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Read ``count`` pages from ``start_pfn`` into a ``(count, page_size)`` uint8 array.

        Pages with no file data read as zeros; bytes past the end of a segment's
        data but inside the page are the raw file bytes that follow, as
        makedumpfile's mmap path reads them (docs/kdump-format.md §17.1.6).

        Args:
            start_pfn: First pfn.
            count: Number of pages.
            out: Optional preallocated array to fill.

        Returns:
            The page array.
        """
        ps = self.page_size
        if out is None:
            out = np.zeros((count, ps), np.uint8)
        else:
            out[:count] = 0
        owner = self.page_owner(start_pfn, count)
        flat = out.reshape(-1)
        # Runs of consecutive pfns with the same owner are one contiguous file range.
        change = np.flatnonzero(np.diff(owner)) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [count]))
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            o = int(owner[a])
            if o < 0:
                continue
            seg = self.segments[o]
            foff = int(seg["file_offset"]) + (start_pfn + a) * ps - int(seg["phys_start"])
            self._read_into(memoryview(flat[a * ps : b * ps].data), foff)
        return out


def _host_page_size() -> int:
    return resource.getpagesize()


def _page_size_from(vmcoreinfo: VmcoreInfo | None, path: str) -> int:
    ps = vmcoreinfo.page_size if vmcoreinfo is not None else None
    if ps is None:
        return _host_page_size()
    if ps < 1024 or ps > MAX_PAGE_SIZE or ps & (ps - 1):
        raise VmcoreinfoError("PAGESIZE", f"{path}: VMCOREINFO PAGESIZE={ps} is not a power of two in [1K, 256K]")
    return ps


def check_input(path: str) -> int:
    """Refuse what cannot be an input file, before anything opens or reads it.

    A directory would fail later, inside some read, with EISDIR; a FIFO would
    block ``open()`` and cannot seek; a device reports ``st_size`` 0 (a char
    device like /dev/null reads as empty, /dev/zero as endless zeros).
    /proc/vmcore is a regular file with its true size.

    Args:
        path: The input.

    Returns:
        Its size in bytes.

    Raises:
        FormatError: It does not exist, is not a regular file, or is empty.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise FormatError(path, None, f"cannot open: {e.strerror}") from e
    mode = st.st_mode
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
    )
    for test, kind in kinds:
        if test(mode):
            raise FormatError(path, None, f"is {kind}, not a regular file")
    if st.st_size == 0:
        raise FormatError(path, None, "is empty (0 bytes)")
    return st.st_size


def open_elf(path: str, vmcoreinfo_file: str | None = None, use_mmap: bool | None = None) -> Source:
    """Open an ELF64 little-endian vmcore (/proc/vmcore, QEMU dump-guest-memory).

    Args:
        path: The vmcore.
        vmcoreinfo_file: Optional ``-i`` file whose VMCOREINFO replaces the note's.
        use_mmap: Read through mmap windows (None: choose per file).

    Returns:
        The source.

    Raises:
        ElfFormatError: Malformed ELF.
        VmcoreinfoError: Malformed VMCOREINFO.
        FormatError: Not a regular, non-empty file (:func:`check_input`).
    """
    check_input(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise FormatError(path, None, f"cannot open: {e.strerror}") from e
    try:
        size = os.fstat(fd).st_size

        def read(off: int, n: int) -> bytes:
            return os.pread(fd, n, off)

        core = elf.parse_core(read, path, size)
        blob = read(core.note_offset, core.note_size) if core.note_size else b""
        if len(blob) < core.note_size:
            raise ElfFormatError(path, core.note_offset + len(blob), "truncated PT_NOTE")
    finally:
        os.close(fd)
    notes = NoteInfo.parse(blob, path, core.note_offset)
    vi: VmcoreInfo | None = None
    if vmcoreinfo_file is not None:
        vi = load_vmcoreinfo_file(vmcoreinfo_file)
    elif notes.vmcoreinfo_bytes is not None:
        vi = VmcoreInfo.parse(
            notes.vmcoreinfo_bytes, f"{path}: VMCOREINFO note at offset {core.note_offset + notes.vmcoreinfo_offset:#x}"
        )
    page_size = _page_size_from(vi, path)
    segs = core.segments
    if len(segs) and int(segs["phys_end"].max()) > 1 << MAX_PHYS_BITS:
        raise ElfFormatError(
            path, int(core.ehdr["e_phoff"]), f"PT_LOAD beyond the {MAX_PHYS_BITS}-bit physical address space"
        )
    if len(segs):
        # p_paddr + p_memsz sizes the bitmaps (max_mapnr / 8 bytes each): check
        # it against this machine before anything that size is allocated.
        end = int(segs["phys_end"].max())
        need = 2 * -(-end // page_size // 8)
        limit = _memory_limit()
        if need > limit:
            raise ElfFormatError(
                path,
                int(core.ehdr["e_phoff"]),
                f"PT_LOAD ends at physical {end:#x}: its bitmaps need {need >> 20} MiB, "
                f"more than the {limit >> 20} MiB allowed (half of the memory available)",
            )
    source = Source(path, segs, notes, vi, page_size, size, use_mmap)
    source.e_machine = core.e_machine
    source.machine_offset = formats.field_offset(core.layout.ehdr, "e_machine")
    return source


def _memory_limit() -> int:
    """Half of the memory this process may use (RAM, or a lower RLIMIT_AS)."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        ram = 1 << 40
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        ram = min(ram, soft)
    return ram // 2


def load_vmcoreinfo_file(path: str) -> VmcoreInfo:
    """Read a VMCOREINFO text file (makedumpfile ``-g`` output, for ``-i``).

    Args:
        path: The file.

    Returns:
        The parsed VMCOREINFO.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20 + 1)
    except OSError as e:
        raise FormatError(path, None, f"cannot read VMCOREINFO file: {e.strerror}") from e
    return VmcoreInfo.parse(data, path)


def open_raw(
    path: str,
    phys_start: int = 0,
    page_size: int | None = None,
    vmcoreinfo_file: str | None = None,
    use_mmap: bool | None = None,
) -> Source:
    """Open a raw physical-memory image: file offset 0 is ``phys_start``.

    Args:
        path: The image.
        phys_start: Physical address of the first byte.
        page_size: Page size (default: VMCOREINFO's, else the host's).
        vmcoreinfo_file: Optional VMCOREINFO text file.
        use_mmap: Read through mmap windows (None: choose per file).

    Returns:
        The source.
    """
    size = check_input(path)
    vi = load_vmcoreinfo_file(vmcoreinfo_file) if vmcoreinfo_file else None
    ps = page_size or _page_size_from(vi, path)
    if phys_start % ps:
        raise FormatError(path, None, f"--phys-start {phys_start:#x} is not page aligned")
    segs = np.zeros(1, elf.SEGMENT_DTYPE)
    segs["phys_start"] = phys_start
    segs["phys_end"] = phys_start + size
    segs["virt_start"] = 0
    segs["file_offset"] = 0
    segs["file_size"] = size
    return Source(path, segs, NoteInfo(b"", 0, -1, 0), vi, ps, size, use_mmap)
