"""Reading kdump-compressed files: regular files and flattened streams.

:class:`KdumpReader` parses the headers and bitmaps, then returns pages by
pfn, checking what crash and libkdumpfile check (docs/kdump-format.md §13.2).
Flattened streams are read in place through an index of their records, and
:func:`reassemble_flat` rebuilds the regular file (makedumpfile ``-R``).
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import tempfile
from typing import BinaryIO

import numpy as np

from vmcorepack import bitmap, streams
from vmcorepack.codecs import decode_page
from vmcorepack.constants import DISKDUMP_SIGNATURE, FLAT_HEADER_SIZE, KDUMP_SIGNATURE
from vmcorepack.errors import FlatFormatError, KdumpFormatError, OutputError
from vmcorepack.formats import flat, kdump
from vmcorepack.sources import check_input
from vmcorepack.writer import create_output_file

#: Refuse bitmaps larger than this (2^52 bytes of RAM at 4 KiB pages = 128 GiB of bitmap).
MAX_BITMAP_BYTES = 1 << 37
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)
#: Bitmap bytes per rank-table entry (4096 pfns, as crash's table).
_RANK_BLOCK = 512


class RandomAccess:
    """Positioned reads over a dump (regular file or flattened stream)."""

    path: str
    size: int
    #: Bytes the input really holds (a flattened stream's records; else ``size``).
    stored: int

    def _clamp(self, offset: int, size: int) -> int:
        """Check a read range taken from the input; return its size clipped to the end.

        Raises:
            KdumpFormatError: A negative offset or size (no buffer is allocated first).
        """
        if offset < 0 or size < 0:
            raise KdumpFormatError(self.path, offset, f"read of {size} bytes at negative offset or size")
        return max(0, min(size, self.size - offset))

    def read(self, offset: int, size: int) -> bytes:
        """Read bytes (zero-filled in holes; short only past the end).

        Args:
            offset: Logical file offset.
            size: Number of bytes.

        Returns:
            The bytes.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the file."""


class RegularFile(RandomAccess):
    """A plain file."""

    def __init__(self, path: str) -> None:
        """Open ``path``.

        Args:
            path: File name.
        """
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise KdumpFormatError(path, None, f"cannot open: {e.strerror}") from e
        self.size = self.stored = os.fstat(self.fd).st_size

    def read(self, offset: int, size: int) -> bytes:
        """Read with pread (the size is clipped to the file before a buffer is made)."""
        return os.pread(self.fd, self._clamp(offset, size), offset)

    def close(self) -> None:
        """Close."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FlatFile(RandomAccess):
    """A flattened stream stored in a file, read through an index of its records."""

    def __init__(self, path: str) -> None:
        """Index the records of the stream.

        Args:
            path: Stream file.

        Raises:
            FlatFormatError: Bad header, bad record, or no end marker.
        """
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        try:
            self._index(path)
        except BaseException:
            # A malformed stream must not leak the descriptor (found by fuzzing).
            os.close(self.fd)
            raise

    def _index(self, path: str) -> None:
        file_size = os.fstat(self.fd).st_size
        flat.check_flat_header(os.pread(self.fd, FLAT_HEADER_SIZE, 0), path)
        pos = FLAT_HEADER_SIZE
        recs: list[tuple[int, int, int]] = []
        while True:
            hdr = os.pread(self.fd, 16, pos)
            if len(hdr) < 16:
                raise FlatFormatError(path, pos, "stream ends without the end marker (truncated or incomplete)")
            off, size = flat.decode_record_header(hdr)
            if off == -1 and size == -1:
                break
            if off < 0 or size <= 0:
                raise FlatFormatError(path, pos, f"bad record header (offset {off}, size {size})")
            if pos + 16 + size > file_size:
                raise FlatFormatError(path, pos, f"record of {size} bytes runs past end of stream")
            recs.append((off, size, pos + 16))
            pos += 16 + size
        # Later records win: keep insertion order and search newest first.
        self._recs = recs
        order = sorted(range(len(recs)), key=lambda i: recs[i][0])
        self._starts = [recs[i][0] for i in order]
        self._order = order
        self.size = max((o + s for o, s, _ in recs), default=0)
        self.stored = sum(s for _, s, _ in recs)

    def read(self, offset: int, size: int) -> bytes:
        """Read the logical file, assembling overlapping records (newest wins)."""
        size = self._clamp(offset, size)
        buf = bytearray(size)
        filled = np.zeros(size, bool) if size else np.zeros(0, bool)
        end = offset + size
        hi = bisect.bisect_left(self._starts, end)
        cands = sorted((self._order[j] for j in range(hi)), reverse=True)
        for i in cands:
            off, rsize, spos = self._recs[i]
            a, b = max(off, offset), min(off + rsize, end)
            if a >= b:
                continue
            mask = ~filled[a - offset : b - offset]
            if not mask.any():
                continue
            data = os.pread(self.fd, b - a, spos + (a - off))
            arr = np.frombuffer(data, np.uint8)
            view = np.frombuffer(buf, np.uint8)
            view[a - offset : b - offset][mask] = arr[mask]
            filled[a - offset : b - offset] = True
            if filled.all():
                break
        return bytes(buf)

    def close(self) -> None:
        """Close."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_random_access(path: str) -> RandomAccess:
    """Open a dump file, recognising flattened streams by their signature.

    Args:
        path: File name.

    Returns:
        The reader.
    """
    check_input(path)
    try:
        with open(path, "rb") as f:
            prefix = f.read(16)
    except OSError as e:
        raise KdumpFormatError(path, None, f"cannot open: {e.strerror}") from e
    if flat.is_flat_header(prefix):
        return FlatFile(path)
    compression = streams.detect(prefix)
    if compression is not None:
        return DecompressedFile(path, compression)
    return RegularFile(path)


class DecompressedFile(RegularFile):
    """A dump or flattened stream inside a whole-stream compressor (gzip, xz, lz4, ...).

    Random access through a compressor would mean decompressing from the start
    for every read, so the input is read once, streaming: a flattened stream's
    records are placed as ``-R`` places them, anything else is copied, into a
    temporary file (in ``$TMPDIR``, unlinked at once, sparse where the stream
    has gaps).  Memory stays bounded (one 4 MiB piece at a time); disk use is
    the size of the regular dump.

    Attributes:
        compression: The compressor's name.
        flat: Whether the decompressed bytes were a flattened stream.
    """

    def __init__(self, path: str, compression: str, tmpdir: str | None = None) -> None:
        """Decompress ``path`` into an unlinked temporary file.

        Args:
            path: The compressed file.
            compression: Name from :data:`streams.MAGICS`.
            tmpdir: Directory of the temporary file (default ``$TMPDIR``).
        """
        self.path = path
        self.compression = compression
        tmp = tempfile.mkdtemp(prefix="vmcorepack-", dir=tmpdir)
        out = os.path.join(tmp, "dump")
        try:
            with open(path, "rb") as f:
                stream = streams.wrap(f, compression, path)
                head = streams.read_exact(stream, FLAT_HEADER_SIZE)
                self.flat = flat.is_flat_header(head)
                if self.flat:
                    reassemble_flat(streams.Prefixed(head, stream), out, name=path)  # type: ignore[arg-type]
                else:
                    _copy_stream(head, stream, out)
            self.fd = os.open(out, os.O_RDONLY)
        except OSError as e:
            raise KdumpFormatError(path, None, f"cannot decompress into {tmp}: {e.strerror}") from e
        finally:
            if os.path.exists(out):
                os.unlink(out)
            os.rmdir(tmp)
        self.size = self.stored = os.fstat(self.fd).st_size


def _copy_stream(head: bytes, stream: BinaryIO, output: str) -> None:
    with os.fdopen(create_output_file(output, False), "wb") as f:
        f.write(head)
        while piece := stream.read(1 << 22):
            f.write(piece)


@dataclasses.dataclass(frozen=True)
class KdumpHeader:
    """Decoded main and sub header fields as plain Python values.

    Attributes:
        signature: 8-byte signature.
        header_version: Version.
        utsname: utsname fields (decoded, NULs stripped).
        tv_sec: Crash time.
        status: Status bits.
        block_size: Page size.
        sub_hdr_size: Blocks of sub header and notes.
        bitmap_blocks: Blocks of both bitmaps.
        max_mapnr: pfn count (64-bit value).
        nr_cpus: CPUs.
        phys_base: Kernel relocation.
        dump_level: Dump level.
        split: Split flag.
        start_pfn: Split part start.
        end_pfn: Split part end.
        offset_vmcoreinfo: File offset of VMCOREINFO.
        size_vmcoreinfo: Its size.
        offset_note: File offset of the notes blob.
        size_note: Its size.
        offset_eraseinfo: File offset of erase info.
        size_eraseinfo: Its size.
    """

    signature: bytes
    header_version: int
    utsname: dict[str, str]
    tv_sec: int
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    nr_cpus: int
    phys_base: int
    dump_level: int
    split: int
    start_pfn: int
    end_pfn: int
    offset_vmcoreinfo: int
    size_vmcoreinfo: int
    offset_note: int
    size_note: int
    offset_eraseinfo: int
    size_eraseinfo: int


class KdumpReader:
    """A kdump-compressed file (regular, flattened, or one split part).

    Attributes:
        path: File name.
        header: Decoded headers.
        geometry: Region offsets.
    """

    def __init__(self, path: str) -> None:
        """Open and parse ``path``.

        Args:
            path: The dump.

        Raises:
            KdumpFormatError: Malformed headers or bitmaps.
            FlatFormatError: Malformed flattened stream.
        """
        self.path = path
        self.file = open_random_access(path)
        try:
            self._parse()
        except BaseException:
            self.file.close()
            raise

    def _parse(self) -> None:
        path = self.path
        layout = kdump.X86_64
        raw = self.file.read(0, layout.disk_dump_header.itemsize)
        if len(raw) < layout.disk_dump_header.itemsize:
            raise KdumpFormatError(path, len(raw), "truncated main header")
        if raw[:8] not in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE):
            raise KdumpFormatError(path, 0, f"bad signature {raw[:8]!r}, expected b'KDUMP   '")
        h = np.frombuffer(raw, layout.disk_dump_header, count=1)[0]
        bs = int(h["block_size"])
        if bs < 4096 or bs > 1 << 18 or bs & (bs - 1):
            raise KdumpFormatError(path, 428, f"block_size {bs} is not a power of two in [4096, 262144]")
        version = int(h["header_version"])
        if version < 0:
            raise KdumpFormatError(path, 8, f"negative header_version {version}")
        sub_raw = self.file.read(bs, layout.kdump_sub_header.itemsize)
        if len(sub_raw) < layout.kdump_sub_header.itemsize:
            raise KdumpFormatError(path, bs, "truncated sub header")
        s = np.frombuffer(sub_raw, layout.kdump_sub_header, count=1)[0]
        max_mapnr = int(s["max_mapnr_64"]) if version >= 6 else int(h["max_mapnr"])
        sub_hdr_size = int(h["sub_hdr_size"])
        bitmap_blocks = int(h["bitmap_blocks"])
        if sub_hdr_size < 1 or sub_hdr_size > 1 << 20:
            raise KdumpFormatError(path, 432, f"unreasonable sub_hdr_size {sub_hdr_size}")
        if bitmap_blocks * bs > MAX_BITMAP_BYTES or 8 * bitmap_blocks * bs < int(h["max_mapnr"]):
            raise KdumpFormatError(
                path, 436, f"bitmap_blocks {bitmap_blocks} does not cover max_mapnr {int(h['max_mapnr'])}"
            )
        if max_mapnr > 4 * bitmap_blocks * bs * 8:
            raise KdumpFormatError(path, bs + 96, f"max_mapnr_64 {max_mapnr} larger than the bitmaps")
        uts = {name: bytes(h["utsname"][name]).rstrip(b"\0").decode("latin-1") for name in kdump.UTSNAME_FIELDS}
        split = int(s["split"]) if version >= 2 else 0
        self.header = KdumpHeader(
            signature=bytes(h["signature"]),
            header_version=version,
            utsname=uts,
            tv_sec=int(h["tv_sec"]),
            status=int(h["status"]),
            block_size=bs,
            sub_hdr_size=sub_hdr_size,
            bitmap_blocks=bitmap_blocks,
            max_mapnr=max_mapnr,
            nr_cpus=int(h["nr_cpus"]),
            phys_base=int(s["phys_base"]),
            dump_level=int(s["dump_level"]) if version >= 1 else 0,
            split=split,
            start_pfn=int(s["start_pfn_64"]) if split else 0,
            end_pfn=int(s["end_pfn_64"]) if split else max_mapnr,
            offset_vmcoreinfo=int(s["offset_vmcoreinfo"]) if version >= 3 else 0,
            size_vmcoreinfo=int(s["size_vmcoreinfo"]) if version >= 3 else 0,
            offset_note=int(s["offset_note"]) if version >= 4 else 0,
            size_note=int(s["size_note"]) if version >= 4 else 0,
            offset_eraseinfo=int(s["offset_eraseinfo"]) if version >= 5 else 0,
            size_eraseinfo=int(s["size_eraseinfo"]) if version >= 5 else 0,
        )
        self.geometry = kdump.FileGeometry(bs, sub_hdr_size, bitmap_blocks, max_mapnr, 0)
        half = self.geometry.bitmap_bytes
        nbytes = -(-max_mapnr // 8)
        if nbytes > half or self.geometry.bitmap2_offset + nbytes > self.file.size or 2 * nbytes > self.file.stored:
            # Checked before reading: a hostile max_mapnr must not size a buffer.
            raise KdumpFormatError(
                path, self.geometry.bitmap1_offset, f"bitmaps of {nbytes} bytes each run past the end of the file"
            )
        b1 = self.file.read(self.geometry.bitmap1_offset, nbytes)
        b2 = self.file.read(self.geometry.bitmap2_offset, nbytes)
        if len(b1) < nbytes or len(b2) < nbytes or nbytes > half:
            raise KdumpFormatError(path, self.geometry.bitmap1_offset, "bitmaps are truncated")
        self.bitmap1 = np.frombuffer(b1, np.uint8)
        self.bitmap2 = np.frombuffer(b2, np.uint8)
        # Descriptor index = popcount of the 2nd bitmap from start_pfn (§5.2),
        # via a per-4096-pfn prefix table like crash's (no per-pfn array).
        per_byte = _POPCOUNT[self.bitmap2]
        nblk = -(-len(per_byte) // _RANK_BLOCK)
        padded = np.zeros(nblk * _RANK_BLOCK, np.int64)
        padded[: len(per_byte)] = per_byte
        sums = padded.reshape(nblk, _RANK_BLOCK).sum(axis=1)
        self._blk_prefix = np.concatenate(([0], np.cumsum(sums)))
        self.nr_dumpable = int(self._blk_prefix[-1])
        self._rank_base = self._rank(self.header.start_pfn) if self.header.start_pfn < max_mapnr else 0

    def _rank(self, pfn: int) -> int:
        byte = pfn >> 3
        blk = byte // _RANK_BLOCK
        n = int(self._blk_prefix[blk]) + int(_POPCOUNT[self.bitmap2[blk * _RANK_BLOCK : byte]].sum())
        return n + int(_POPCOUNT[int(self.bitmap2[byte]) & ((1 << (pfn & 7)) - 1)])

    # -- content ------------------------------------------------------------
    @property
    def notes(self) -> bytes:
        """The notes blob."""
        return self.file.read(self.header.offset_note, self.header.size_note) if self.header.size_note else b""

    @property
    def vmcoreinfo(self) -> bytes:
        """The VMCOREINFO text."""
        h = self.header
        return self.file.read(h.offset_vmcoreinfo, h.size_vmcoreinfo) if h.size_vmcoreinfo else b""

    def is_ram(self, pfn: int) -> bool:
        """Tell whether ``pfn`` has a 1st-bitmap bit."""
        return 0 <= pfn < self.header.max_mapnr and bool(self.bitmap1[pfn >> 3] >> (pfn & 7) & 1)

    def is_dumpable(self, pfn: int) -> bool:
        """Tell whether ``pfn`` has a page descriptor (2nd bitmap)."""
        return 0 <= pfn < self.header.max_mapnr and bool(self.bitmap2[pfn >> 3] >> (pfn & 7) & 1)

    def dumpable_pfns(self) -> np.ndarray:
        """All pfns with a descriptor, in this part's range."""
        bits = bitmap.unpack(self.bitmap2, self.header.max_mapnr)
        pfns = np.flatnonzero(bits)
        return pfns[(pfns >= self.header.start_pfn) & (pfns < self.header.end_pfn)]

    def descriptors(self, index: int, count: int) -> np.ndarray:
        """Read ``count`` descriptors starting at table ``index``.

        Args:
            index: First entry.
            count: Number of entries.

        Returns:
            ``page_desc`` array.
        """
        item = kdump.PAGE_DESC.itemsize
        raw = self.file.read(self.geometry.table_offset + index * item, count * item)
        if len(raw) < count * item:
            raw = raw.ljust(count * item, b"\0")
        return np.frombuffer(raw, kdump.PAGE_DESC)

    def table_index(self, pfn: int) -> int:
        """Index in this file's page_desc table of the descriptor of ``pfn`` (if dumpable).

        Args:
            pfn: Page frame number.

        Returns:
            The table index (2nd-bitmap bits before ``pfn``, from this part's start).
        """
        return self._rank(pfn) - self._rank_base

    def descriptor(self, pfn: int) -> np.void:
        """Return the descriptor of ``pfn`` (which must be dumpable)."""
        idx = self._rank(pfn) - self._rank_base
        d: np.void = self.descriptors(idx, 1)[0]
        return d

    def read_page(self, pfn: int) -> bytes:
        """Return page ``pfn`` decoded.

        Args:
            pfn: Page frame number.

        Returns:
            ``block_size`` bytes.

        Raises:
            KdumpFormatError: Not dumpable, outside this part, or a bad descriptor.
        """
        h = self.header
        if not 0 <= pfn < h.max_mapnr or not self.is_ram(pfn):
            raise KdumpFormatError(self.path, None, f"pfn {pfn:#x} is not in the dump (memory hole)")
        if not self.is_dumpable(pfn):
            raise KdumpFormatError(self.path, None, f"pfn {pfn:#x} was excluded")
        if not h.start_pfn <= pfn < h.end_pfn:
            raise KdumpFormatError(self.path, None, f"pfn {pfn:#x} is outside this split part")
        d = self.descriptor(pfn)
        off, size, flags = int(d["offset"]), int(d["size"]), int(d["flags"])
        pos = self.geometry.table_offset + (self._rank(pfn) - self._rank_base) * kdump.PAGE_DESC.itemsize
        if off == 0:
            raise KdumpFormatError(self.path, pos, f"pfn {pfn:#x}: page incomplete (zeroed descriptor)")
        if off < 0 or size > h.block_size:
            raise KdumpFormatError(self.path, pos, f"pfn {pfn:#x}: bad descriptor offset {off} size {size}")
        data = self.file.read(off, size)
        if len(data) < size:
            raise KdumpFormatError(self.path, off, f"pfn {pfn:#x}: page data runs past end of file")
        return decode_page(flags, data, h.block_size, pfn)

    def close(self) -> None:
        """Close the file."""
        self.file.close()

    def __enter__(self) -> KdumpReader:
        """Return self."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()


def reassemble_flat(stream: BinaryIO, output: str, force: bool = False, name: str = "<stdin>") -> int:
    """Rebuild a regular dump from a flattened stream (makedumpfile ``-R``, §7.2).

    Args:
        stream: Binary stream positioned at the flat header.
        output: Path of the file to write (created 0600).
        force: Overwrite an existing file.
        name: Stream name for errors.

    Returns:
        Size of the written file.

    Raises:
        FlatFormatError: Bad header or record, or no end marker (output removed).
    """
    fd = create_output_file(output, force)
    size = 0
    pos = 0

    def read_exact(n: int) -> bytes:
        nonlocal pos
        b = streams.read_exact(stream, n)
        pos += len(b)
        return b

    try:
        flat.check_flat_header(read_exact(FLAT_HEADER_SIZE), name)
        while True:
            at = pos
            hdr = read_exact(16)
            if len(hdr) < 16:
                raise FlatFormatError(name, at, "stream ends without the end marker (truncated or incomplete)")
            off, n = flat.decode_record_header(hdr)
            if off == -1 and n == -1:
                break
            if off < 0 or n <= 0 or n > 1 << 40:
                raise FlatFormatError(name, at, f"bad record header (offset {off}, size {n})")
            remaining = n
            woff = off
            while remaining:
                piece = read_exact(min(remaining, 1 << 22))
                if not piece:
                    raise FlatFormatError(name, pos, f"record of {n} bytes is truncated")
                try:
                    os.pwrite(fd, piece, woff)
                except OSError as e:
                    raise OutputError(output, f"write failed at offset {woff:#x}: {e.strerror}") from e
                woff += len(piece)
                remaining -= len(piece)
            size = max(size, off + n)
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        os.unlink(output)
        raise
    os.close(fd)
    return size
