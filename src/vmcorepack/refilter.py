"""A kdump-compressed dump (or flattened stream) as the input of a new dump.

makedumpfile re-filters an existing dump (``makedumpfile -d 31 old.kdump
new.kdump``): the new level is OR-ed with the recorded one, the 1st bitmap is
carried over, pages already excluded stay excluded, and the pfns it examines
are those of the old 1st bitmap (``is_in_segs`` for ``flag_refiltering``).
:class:`KdumpSource` presents the old dump as a :class:`~vmcorepack.sources.Source`
so that the kernel layer, the filter and the pipeline work on it unchanged:
each run of set 1st-bitmap bits becomes one segment, and pages are read by
decoding their descriptors.  Pages whose stored codec is the new codec are
handed to the writer as they are stored, without a decompress and compress.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from vmcorepack import bitmap, formats
from vmcorepack.codecs import codec_for_flags, decode_page
from vmcorepack.errors import KdumpFormatError, MachineError, SourceReadError, UnsupportedError
from vmcorepack.formats import elf, kdump
from vmcorepack.kernel import arch
from vmcorepack.reader import KdumpReader
from vmcorepack.sources import NoteInfo, Source
from vmcorepack.vmcoreinfo import VmcoreInfo

#: pfns unpacked at a time when turning the 1st bitmap into segments.
_WINDOW = 1 << 23


def bitmap_runs(packed: np.ndarray, max_mapnr: int) -> np.ndarray:
    """Return ``[start, end)`` pfn runs of set bits, shape ``(n, 2)``, in bounded memory.

    Args:
        packed: Packed bitmap bytes.
        max_mapnr: Number of pfns.

    Returns:
        int64 array of runs.
    """
    runs: list[np.ndarray] = []
    carry_start = -1
    for s in range(0, max_mapnr, _WINDOW):
        e = min(s + _WINDOW, max_mapnr)
        bits = bitmap.unpack(packed[s // 8 : (e + 7) // 8], e - s).astype(np.int8)
        edges = np.diff(np.concatenate(([0], bits, [0])))
        starts = np.flatnonzero(edges == 1) + s
        ends = np.flatnonzero(edges == -1) + s
        if carry_start >= 0 and len(starts) and starts[0] == s:
            starts[0] = carry_start
        elif carry_start >= 0:
            runs.append(np.array([[carry_start, s]], np.int64))
        carry_start = -1
        if len(ends) and ends[-1] == e and e < max_mapnr:
            carry_start = int(starts[-1])
            starts, ends = starts[:-1], ends[:-1]
        runs.append(np.stack([starts, ends], axis=1).astype(np.int64))
    if carry_start >= 0:
        runs.append(np.array([[carry_start, max_mapnr]], np.int64))
    return np.concatenate(runs) if runs else np.zeros((0, 2), np.int64)


class KdumpSource(Source):
    """An existing kdump file as input (re-filtering, recompressing).

    Attributes:
        reader: The open dump.
        recorded_level: The dump level recorded in the input.
    """

    def __init__(self, path: str) -> None:
        """Open ``path`` (regular file, flattened stream, or a compressed stream).

        Args:
            path: The dump.

        Raises:
            KdumpFormatError: Malformed input, or a split part.
        """
        self.reader = KdumpReader(path)
        h = self.reader.header
        if h.split:
            self.reader.close()
            raise KdumpFormatError(path, h.block_size + 12, "a split part: --reassemble the set first")
        header_dt = kdump.X86_64.disk_dump_header
        machine_offset = formats.field_offset(header_dt, "utsname") + formats.field_offset(
            header_dt["utsname"], "machine"
        )
        try:
            e_machine = arch.e_machine_of_uname(h.utsname.get("machine", ""), path, machine_offset)
            codec_for_flags(h.status)  # a codec that is not installed fails here, before any output
        except (MachineError, UnsupportedError):
            self.reader.close()
            raise
        ps = h.block_size
        runs = bitmap_runs(self.reader.bitmap1, h.max_mapnr)
        segs = np.zeros(len(runs), elf.SEGMENT_DTYPE)
        segs["phys_start"] = runs[:, 0] * ps
        segs["phys_end"] = runs[:, 1] * ps
        segs["file_size"] = (runs[:, 1] - runs[:, 0]) * ps
        blob = self.reader.notes
        notes = NoteInfo.parse(blob, path, h.offset_note) if blob else NoteInfo(b"", 0, -1, 0)
        raw_vi = self.reader.vmcoreinfo or notes.vmcoreinfo_bytes
        vi = VmcoreInfo.parse(raw_vi, f"{path}: VMCOREINFO") if raw_vi else None
        super().__init__(path, segs, notes, vi, ps, self.reader.file.size, use_mmap=False)
        self.max_mapnr = h.max_mapnr
        self.recorded_level = h.dump_level
        self.recorded_phys_base = h.phys_base
        self.e_machine = e_machine
        self.machine_offset = machine_offset

    def __getstate__(self) -> dict[str, Any]:
        """Workers are forked: the open reader is inherited, not pickled."""
        raise TypeError("KdumpSource is shared with workers by fork, not pickled")

    def close(self) -> None:
        """Close the input."""
        self.reader.close()

    def dumpable_mask(self, start: int, end: int) -> np.ndarray:
        """Pages the input still has: its 2nd bitmap for ``[start, end)``."""
        return bitmap.unpack(self.reader.bitmap2[start // 8 : (end + 7) // 8], end - start + start % 8)[start % 8 :]

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one cache per open dump, dropped with it
    def _page(self, pfn: int) -> bytes:
        try:
            return self.reader.read_page(pfn)
        except KdumpFormatError as e:
            raise SourceReadError(self.path, pfn * self.page_size, e.msg) from e

    def read_phys(self, paddr: int, size: int) -> bytes:
        """Read physical memory from the pages the input kept.

        Args:
            paddr: Physical address.
            size: Number of bytes.

        Returns:
            The bytes.

        Raises:
            SourceReadError: A page is excluded or not in the dump.
        """
        ps = self.page_size
        out = bytearray()
        pa = paddr
        while len(out) < size:
            pfn, off = divmod(pa, ps)
            take = min(ps - off, size - len(out))
            out += self._page(pfn)[off : off + take]
            pa += take
        return bytes(out)

    def read_phys_into(self, paddr: int, out: memoryview) -> None:
        """Fill ``out`` from the pages the input kept (see :meth:`read_phys`).

        Args:
            paddr: Physical address.
            out: Writable byte buffer.
        """
        out[:] = self.read_phys(paddr, len(out))

    def _descs_for(self, pfns: np.ndarray) -> np.ndarray:
        """Descriptors of sorted pfns the input has, read as one slice of the table."""
        r = self.reader
        p0, p1 = int(pfns[0]), int(pfns[-1]) + 1
        have = self.dumpable_mask(p0, p1)
        if not have[pfns - p0].all():
            missing = int(pfns[~have[pfns - p0]][0])
            raise SourceReadError(self.path, missing * self.page_size, f"pfn {missing:#x} is not in the input dump")
        rank = np.cumsum(have) - have
        first = r.table_index(p0)
        idx = rank[pfns - p0]
        table = r.descriptors(first + int(idx[0]), int(idx[-1]) - int(idx[0]) + 1)
        picked: np.ndarray = table[idx - idx[0]]
        return picked

    def _stored(self, descs: np.ndarray) -> list[bytes]:
        """Stored bytes of each descriptor: one read per dense stretch of the data region."""
        off = descs["offset"].astype(np.int64)
        size = descs["size"].astype(np.int64)
        out: list[bytes] = [b""] * len(descs)
        if not len(descs):
            return out
        order = np.argsort(off, kind="stable")
        o, sz = off[order], size[order]
        brk = np.flatnonzero(o[1:] - (o[:-1] + sz[:-1]) > (1 << 16)) + 1
        for a, b in zip(np.concatenate(([0], brk)).tolist(), np.concatenate((brk, [len(o)])).tolist(), strict=True):
            lo = int(o[a])
            hi = int((o[a:b] + sz[a:b]).max())
            blob = self.reader.file.read(lo, hi - lo)
            if len(blob) < hi - lo:
                raise KdumpFormatError(self.path, lo + len(blob), "page data runs past end of file")
            for j in range(a, b):
                k = int(order[j])
                rel = int(o[j]) - lo
                out[k] = blob[rel : rel + int(sz[j])]
        return out

    def read_pfns_bytes(self, pfns: np.ndarray, bad: list[int] | None = None, gap: int = 0) -> bytes:
        """Decode the pages of ``pfns``.

        Args:
            pfns: Sorted pfns the input has.
            bad: Unused (a dump has no unreadable ranges, only excluded pages).
            gap: Unused.

        Returns:
            The decoded pages.
        """
        if not len(pfns):
            return b""
        descs = self._descs_for(pfns)
        ps = self.page_size
        return b"".join(
            decode_page(int(d["flags"]), blob, ps, pfn)
            for d, blob, pfn in zip(descs, self._stored(descs), pfns.tolist(), strict=True)
        )

    def page_plan(self, pfns: np.ndarray) -> None:
        """No plain file bytes here: pages are decoded from the input's own format."""
        return None

    def read_pfns_sparse(
        self, pfns: np.ndarray, bad: list[int] | None = None, gap: int = 0
    ) -> tuple[bytes, np.ndarray]:
        """Decode the pages of ``pfns``; none is known zero without decoding."""
        return self.read_pfns_bytes(pfns, bad, gap), np.zeros(len(pfns), bool)

    def read_pages(self, start_pfn: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Decode a run of pages into an array (pages the input lacks read as zeros)."""
        if out is None:
            out = np.zeros((count, self.page_size), np.uint8)
        out[:count] = 0
        have = np.flatnonzero(self.dumpable_mask(start_pfn, start_pfn + count))
        if len(have):
            raw = self.read_pfns_bytes(have.astype(np.int64) + start_pfn)
            out[have] = np.frombuffer(raw, np.uint8).reshape(len(have), self.page_size)
        return out

    def eraseinfo(self) -> bytes:
        """Return the input's erase info text (makedumpfile copies it first when re-filtering)."""
        h = self.reader.header
        if not h.size_eraseinfo:
            return b""
        return self.reader.file.read(h.offset_eraseinfo, h.size_eraseinfo)

    def stored_pages(self, pfns: np.ndarray) -> tuple[np.ndarray, list[bytes], np.ndarray]:
        """Return the pages as stored: flags, stored bytes, and which are shared-zero pages.

        Args:
            pfns: Sorted pfns the input has.

        Returns:
            (``page_desc.flags`` per page, stored bytes per page, zero mask).
        """
        r = self.reader
        descs = self._descs_for(pfns)
        zero = np.zeros(len(pfns), bool)
        if r.header.dump_level & 1:
            zero_at = r.geometry.table_offset + r.nr_dumpable * kdump.PAGE_DESC.itemsize
            zero = (descs["offset"] == zero_at) & (descs["size"] == self.page_size) & (descs["flags"] == 0)
        it = iter(self._stored(descs[~zero]))
        full = [b"" if z else next(it) for z in zero.tolist()]
        return descs["flags"].astype(np.uint32), full, zero
