"""Packing a source into a kdump file: cycles, chunks and worker processes.

The run has makedumpfile's shape (docs/kdump-format.md §10):

1. For each cycle of pfns, build the 2nd bitmap and count the dumpable pages;
   the packed 2nd bitmap is kept (one bit per pfn) and nothing else.
2. Write the headers and both bitmaps.
3. Cut the dumpable pfns into chunks and hand them to workers.  A worker reads
   its pages from the source itself, detects zero pages with one numpy pass,
   compresses the rest, then takes its turn at the sequencer: the turn gives
   the data offset (end of the previous chunk's data), and the worker writes
   its data and its page_desc entries itself.  Page data never passes through
   the main process, which only hands out work and collects counts.

Output is the same whatever the number of workers: offsets are handed out in
chunk order and every chunk's bytes depend only on its pages.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np

from vmcorepack import bitmap, native, procs
from vmcorepack.codecs import Codec, PageLoop, decode_page, get_codec, page_loop
from vmcorepack.constants import DumpLevel, DumpStatus
from vmcorepack.errors import (
    DiskFullError,
    IncompleteDumpError,
    OutputError,
    VmcorepackError,
)
from vmcorepack.filter import ExclusionCounts, PageFilter
from vmcorepack.formats import kdump
from vmcorepack.sources import Source
from vmcorepack.writer import DumpPlan, FileOutput, FlatOutput, Output, make_plan, mark_incomplete, write_headers

#: Phase names of the progress callback: makedumpfile's progress texts
#: (print_info.h PROGRESS_HOLES, PROGRESS_UNN_PAGES, PROGRESS_COPY).
PHASE_HOLES = "Checking for memory holes"
PHASE_EXCLUDE = "Excluding unnecessary pages"
PHASE_COPY = "Copying data"


class Progress(Protocol):
    """A progress callback: ``done`` of ``total`` units of ``phase`` are finished.

    The units are pfns for :data:`PHASE_HOLES` and :data:`PHASE_EXCLUDE`,
    pages for :data:`PHASE_COPY`.  Each pass starts with a call where ``done``
    is 0 (the only call of an empty pass) and ends with one where ``done ==
    total``; the library never prints, so the caller renders (cli._Progress).
    """

    def __call__(self, done: int, total: int, phase: str = PHASE_COPY) -> None:
        """Report progress."""


#: pfns per cycle when not given: a multiple of 8 so bitmap slices are whole bytes.
DEFAULT_CYCLE_PFNS = 1 << 20
#: Dumpable pages per chunk; 0 picks by worker count (:func:`chunk_pages`).
DEFAULT_CHUNK_PAGES = 0
#: Chunk size picked for ``chunk_pages=0``: one process keeps chunks small (a
#: capture kernel has little memory); workers take 2048 pages (8 MiB), where
#: per-chunk numpy and system-call costs stop showing: `benchmarks/phases.py
#: IMG --chunk-pages 512|2048` on the 4 GiB generator image, -l -d 1, 2
#: workers, wrote in 1.85-1.98 s at 512 pages and 1.51-1.66 s at 2048.
CHUNK_PAGES_ONE_PROCESS = 512
CHUNK_PAGES_WORKERS = 2048
#: Read and compress pages in one C loop (:func:`encode_from_file`) where the
#: input allows; VMCOREPACK_FUSED_READ=0 reads whole chunks first (mapped or
#: gathered), for tests and benchmarks that compare the two.
FUSED_READ = os.environ.get("VMCOREPACK_FUSED_READ", "1") != "0"
#: How long a worker may wait for its turn before the run is declared stuck.
TURN_TIMEOUT = 600.0


@dataclasses.dataclass
class PackOptions:
    """What to produce.

    Attributes:
        dump_level: makedumpfile ``-d`` level.
        codec: ``none``, ``zlib``, ``lzo``, ``snappy`` or ``zstd``.
        workers: Worker processes; 0 packs in this process.
        flat: Write a flattened stream instead of a regular file.
        cycle_pfns: pfns per bitmap cycle (bounds memory).
        chunk_pages: Dumpable pages per chunk (0: by worker count).
        dry_run: Do everything but write.
        dedup: Pages of a chunk that equal an earlier page of the chunk share its data.
        force: Overwrite an existing output file.
        limit: makedumpfile ``-L``: cap the output size in bytes.
        cyclic_buffer_given: ``--cyclic-buffer`` was given (see :func:`bitmap_in_file`).
        work_dir: ``--work-dir`` was given (see :func:`bitmap_in_file`).
        progress: :class:`Progress` callback (each pass of the run reports under its phase name).
        utsname: utsname fields to put in the header (from init_uts_ns).
    """

    dump_level: int = 0
    codec: str = "none"
    workers: int = 0
    flat: bool = False
    cycle_pfns: int = DEFAULT_CYCLE_PFNS
    chunk_pages: int = DEFAULT_CHUNK_PAGES
    dry_run: bool = False
    dedup: bool = False
    force: bool = False
    limit: int | None = None
    cyclic_buffer_given: bool = False
    work_dir: bool = False
    progress: Progress | None = None
    utsname: dict[str, bytes] | None = None


@dataclasses.dataclass
class PackResult:
    """What a run did.

    Attributes:
        max_mapnr: pfns covered by the bitmaps.
        ram_pages: Set bits of the 1st bitmap.
        dumpable: Set bits of the 2nd bitmap (page descriptors).
        zero_pages: Dumpable pages stored as the shared zero page.
        compressed_pages: Pages stored compressed.
        raw_pages: Pages stored raw.
        file_size: Bytes of the dump (logical size for streams).
        counts: makedumpfile's exclusion counters.
        original_pages: makedumpfile's "Original pages" (sum of PT_LOAD page counts).
        memory_hole: makedumpfile's "Memory Hole".
        seconds: Wall time.
        unreadable: pfns that could not be read from the source (left out).
        warnings: Things the caller should tell the user (the run still succeeded).
    """

    max_mapnr: int = 0
    ram_pages: int = 0
    dumpable: int = 0
    zero_pages: int = 0
    compressed_pages: int = 0
    raw_pages: int = 0
    file_size: int = 0
    counts: ExclusionCounts = dataclasses.field(default_factory=ExclusionCounts)
    original_pages: int = 0
    memory_hole: int = 0
    seconds: float = 0.0
    unreadable: list[int] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------
# Pages of one chunk -> descriptors and data (pure; used by workers and inline)
# ----------------------------------------------------------------------------


def read_pfns(source: Source, pfns: np.ndarray, bad: list[int] | None = None) -> bytes:
    """Read the pages of a sorted pfn list, one file read per contiguous run.

    /proc/vmcore can fail a read for some ranges (EIO).  When ``bad`` is given,
    a run that fails is read again page by page: unreadable pages read as zeros
    here and their pfns are appended to ``bad`` so the caller leaves them out
    of the dump; without ``bad`` the error propagates.

    Args:
        source: Input.
        pfns: Sorted int64 pfns.
        bad: Collects unreadable pfns; None to raise instead.

    Returns:
        ``len(pfns) * page_size`` bytes.
    """
    return source.read_pfns_bytes(pfns, bad)


def zero_mask(raw: bytes | bytearray | memoryview, page_size: int) -> np.ndarray:
    """Return which pages are all zero (one vectorised pass).

    Args:
        raw: Concatenated pages.
        page_size: Page size (a multiple of 8).

    Returns:
        Bool array, one entry per page.
    """
    words = np.frombuffer(raw, np.uint64).reshape(-1, page_size // 8)
    # max() vectorises better than any(): 0.37 ms against 0.71 ms per 8 MiB here.
    return np.asarray(words.max(axis=1) == 0)


class EncodedChunk(NamedTuple):
    """A chunk's descriptors (offsets relative to the chunk's data start) and data.

    Attributes:
        descs: ``page_desc`` array, ``offset`` relative to the chunk's data start
            except for zero pages, which hold -1 until placed.
        data: Stored bytes: one object, or one per stored page (written with writev).
        zero: Number of shared-zero pages.
        compressed: Number of pages stored compressed.
    """

    descs: np.ndarray
    data: bytes | memoryview | list[bytes]
    zero: int
    compressed: int


@functools.lru_cache(maxsize=8)
def _encoded_zero_page(codec: Codec, page_size: int) -> bytes:
    """How ``codec`` stores an all-zero page (levels without bit 1 store each one)."""
    page = bytes(page_size)
    c = codec.compress(page) if codec.flag else page
    return c if codec.flag and len(c) < page_size else page


def encode_chunk(
    raw: bytes | bytearray | memoryview,
    page_size: int,
    codec: Codec,
    share_zero: bool,
    skip: np.ndarray | None = None,
    known_zero: np.ndarray | None = None,
) -> EncodedChunk:
    """Encode pages as makedumpfile does (docs/kdump-format.md §5.3).

    Args:
        raw: The pages that are not known to be zero, concatenated.
        page_size: Page size.
        codec: Codec.
        share_zero: Dump level has bit 1: all-zero pages use the shared zero page.
        skip: Pages to leave out (unreadable): no data, an all-zero descriptor.
        known_zero: Pages known to be zero without being read (holes of a
            sparse input); ``raw`` holds only the others.

    Returns:
        The encoded chunk.
    """
    ps = page_size
    m = len(raw) // ps
    known = known_zero if known_zero is not None else np.zeros(m, bool)
    n = len(known)
    loop = page_loop(codec, ps)
    if loop is not None and skip is None and (share_zero or not known.any()):
        return _encode_native(loop, raw, ps, codec, share_zero, known)
    raw = bytes(raw)  # codec bindings want bytes slices (python-lzo refuses others)
    data_idx = np.flatnonzero(~known)  # page index of each page in raw
    descs = np.zeros(n, kdump.PAGE_DESC)
    left_out = skip if skip is not None else np.zeros(n, bool)
    zero_raw = zero_mask(raw, ps) if share_zero and m else np.zeros(m, bool)
    is_zero = np.zeros(n, bool)
    if share_zero:
        is_zero[known] = True
        is_zero[data_idx] = zero_raw
        is_zero &= ~left_out
    sizes = np.full(n, ps, np.uint32)
    flags = np.zeros(n, np.uint32)
    todo_pos = np.flatnonzero(~zero_raw & ~left_out[data_idx])  # positions in raw
    todo = data_idx[todo_pos]
    stored_zero = known & ~is_zero & ~left_out  # known zeros stored as pages (no bit 1)
    data: bytes | list[bytes]
    if codec.flag == 0 and not stored_zero.any():
        data = raw if len(todo_pos) == m else np.frombuffer(raw, np.uint8).reshape(m, ps)[todo_pos].tobytes()
        compressed = 0
    else:
        # Codec bindings want bytes (python-lzo refuses memoryviews): each
        # page is a slice of the chunk's bytes.
        offs = (todo_pos * ps).tolist()
        outs = codec.compress_pages(raw, offs, ps) if codec.flag else [raw[o : o + ps] for o in offs]
        got = np.fromiter(map(len, outs), np.int64, len(outs))
        # Stored compressed only when strictly smaller than a page (§5.3).
        small = (got < ps) & bool(codec.flag)
        for j in np.flatnonzero(~small).tolist():
            outs[j] = raw[offs[j] : offs[j] + ps]
        sizes[todo] = np.where(small, got, ps)
        flags[todo] = np.where(small, codec.flag, 0)
        compressed = int(small.sum())
        if stored_zero.any():
            zenc = _encoded_zero_page(codec, ps)
            sizes[stored_zero] = len(zenc)
            flags[stored_zero] = codec.flag if len(zenc) < ps else 0
            compressed += int(stored_zero.sum()) if len(zenc) < ps else 0
            # Interleave in pfn order: data pages and the shared encoding of zero pages.
            slot: list[bytes] = [b""] * n
            for i, c in zip(todo.tolist(), outs, strict=True):
                slot[i] = c
            for i in np.flatnonzero(stored_zero).tolist():
                slot[i] = zenc
            order = np.flatnonzero(~is_zero & ~left_out).tolist()
            outs = [slot[i] for i in order]
        data = outs
    sizes[left_out] = 0
    stored = np.where(is_zero, 0, sizes).astype(np.int64)
    rel = np.cumsum(stored) - stored
    # Markers until the chunk is placed: -1 shared zero page, -2 left out.
    descs["offset"] = np.where(is_zero, -1, np.where(left_out, -2, rel))
    descs["size"] = sizes
    descs["flags"] = flags
    return EncodedChunk(descs, data, int(is_zero.sum()), compressed)


@functools.cache
def _hash_keys(words: int) -> np.ndarray:
    """Odd 64-bit multipliers, one per word of a page, for the duplicate-page hash.

    A splitmix64-style sequence in numpy: numpy.random would add 24 ms to
    every start (``python -X importtime``).
    """
    x = (np.arange(1, words + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(0x6B64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (x ^ (x >> np.uint64(31))) | np.uint64(1)


def duplicate_of(raw: bytes | bytearray | memoryview, page_size: int) -> np.ndarray:
    """Return, per page of ``raw``, the index of the first page equal to it (itself if none).

    One multiply-add hash pass, then a full comparison with the candidate, so
    a hash collision only costs a missed share, never a wrong page.

    Args:
        raw: Concatenated pages.
        page_size: Page size (a multiple of 8).

    Returns:
        int64 array.
    """
    words = np.frombuffer(raw, np.uint64).reshape(-1, page_size // 8)
    m = len(words)
    if m < 2:
        return np.arange(m)
    h = (words * _hash_keys(page_size // 8)).sum(axis=1, dtype=np.uint64)  # wraps modulo 2**64 on purpose
    order = np.argsort(h, kind="stable")  # equal hashes keep page order: the first comes first
    hs = h[order]
    start = np.concatenate(([True], hs[1:] != hs[:-1]))
    first = order[start][np.cumsum(start) - 1]
    rep = np.empty(m, np.int64)
    rep[order] = first
    same = (words == words[rep]).all(axis=1)
    return np.where(same, rep, np.arange(m))


def encode_dedup(
    raw: bytes | bytearray | memoryview,
    page_size: int,
    codec: Codec,
    share_zero: bool,
    known_zero: np.ndarray | None = None,
) -> EncodedChunk:
    """:func:`encode_chunk` where pages equal to an earlier page of the chunk share its data (``--dedup``).

    The format lets any number of descriptors point at one data block, as the
    shared zero page does (docs/kdump-format.md §5.4); readers return every
    page.  Only the first of equal pages is compressed and stored.

    Args:
        raw: The pages not known to be zero, concatenated.
        page_size: Page size.
        codec: Codec.
        share_zero: Dump level has bit 1.
        known_zero: Pages known to be zero without being read (all must be
            shared zeros: ``share_zero`` or no such page).

    Returns:
        The encoded chunk.
    """
    ps = page_size
    m = len(raw) // ps
    known = known_zero if known_zero is not None else np.zeros(m, bool)
    rep = duplicate_of(raw, ps)
    uniq = np.flatnonzero(rep == np.arange(m))
    if len(uniq) == m:
        return encode_chunk(raw, ps, codec, share_zero, None, known)
    rows = np.frombuffer(raw, np.uint8).reshape(m, ps)
    enc = encode_chunk(rows[uniq].tobytes(), ps, codec, share_zero)
    slot = np.empty(m, np.int64)
    slot[uniq] = np.arange(len(uniq))
    descs = np.zeros(len(known), kdump.PAGE_DESC)
    descs[~known] = enc.descs[slot[rep]]
    if known.any():
        descs["offset"][known] = -1  # shared zero page (share_zero holds, see above)
        descs["size"][known] = ps
    zero = int((descs["offset"] == -1).sum())
    compressed = int((descs["flags"] != 0).sum())
    return EncodedChunk(descs, enc.data, zero, compressed)


#: Per-process output buffers of the C page loop, reused from chunk to chunk
#: so that a chunk's data costs no fresh (page-faulting) allocation.  A
#: worker holds at most two encoded chunks (one waiting for its turn, one
#: encoded ahead), in alternate buffers: :func:`use_scratch` picks one.
_scratches = [np.empty(0, np.uint8), np.empty(0, np.uint8)]
_scratch_slot = 0


def use_scratch(slot: int) -> None:
    """Make the next encodings in this process use output buffer ``slot`` (0 or 1).

    Args:
        slot: Buffer index.
    """
    global _scratch_slot
    _scratch_slot = slot


def _scratch_for(need: int) -> memoryview:
    """The current per-process output buffer, grown to ``need`` bytes.

    ``np.empty``, not ``bytearray``: a bytearray is zeroed, so each buffer's
    8 MiB counted in the worker's memory even when a chunk compressed to far
    less (the second buffer raised the fixture's peak summed PSS from 53 to
    69 MiB, `benchmarks/bench.py`); untouched pages of an empty array are
    never faulted in.
    """
    if len(_scratches[_scratch_slot]) < need:
        _scratches[_scratch_slot] = np.empty(need, np.uint8)
    return _scratches[_scratch_slot].data


def _encode_native(
    loop: PageLoop,
    raw: bytes | bytearray | memoryview,
    page_size: int,
    codec: Codec,
    share_zero: bool,
    known: np.ndarray,
) -> EncodedChunk:
    """:func:`encode_chunk` through the C page loop (no unreadable pages, no stored zeros).

    The returned data is a view of a per-process buffer: it is valid until
    the next call in this process, which is after the chunk is written.
    """
    ps = page_size
    m = len(raw) // ps
    dst = _scratch_for(m * ps + loop.headroom)
    got = np.empty(m, np.int64)
    total = loop.encode(raw, ps, share_zero, dst, got.data)
    return _chunk_from_sizes(got, total, known, ps, codec)


def encode_from_file(source: Source, pfns: np.ndarray, codec: Codec, share_zero: bool) -> EncodedChunk | None:
    """Read and encode the pages of ``pfns`` in one C loop, when the input allows it.

    Pages are read 64 KiB at a time and compressed while they are in cache.
    On the 4 GiB generator image with 2 workers (``VMCOREPACK_FUSED_READ=1``
    against ``0``) this took -l -d 31 from 1.26-1.41 s to 0.96-1.12 s and
    -c -d 31 from 3.57 to 3.20 s, where the scattered pages were gathered
    into a chunk buffer first; on dense input (-d 1) it is as fast as
    compressing from a mapping (``benchmarks/micro.py``: "fused" against
    "mmap"), needs no mapping in the peak memory, and reads /proc/vmcore the
    same way.

    Args:
        source: Input.
        pfns: Sorted pfns of the chunk.
        codec: Codec.
        share_zero: As for :func:`encode_chunk`.

    Returns:
        The encoded chunk (data in the per-process buffer, as
        :func:`_encode_native`), or None when this path does not apply (no C
        loop, a kdump input, stored holes without zero sharing) or a read
        failed: the caller then takes the general path, which isolates
        unreadable pages.
    """
    ps = source.page_size
    loop = page_loop(codec, ps)
    if loop is None:
        return None
    plan = source.page_plan(pfns)
    if plan is None:
        return None
    fd, offsets, known = plan
    if not share_zero and known.any():
        return None
    m = len(offsets)
    dst = _scratch_for(m * ps + loop.headroom)
    got = np.empty(m, np.int64)
    try:
        total = loop.encode_file(fd, offsets.data, ps, share_zero, dst, got.data)
    except OSError:
        return None
    return _chunk_from_sizes(got, total, known, ps, codec)


def _chunk_from_sizes(got: np.ndarray, total: int, known: np.ndarray, ps: int, codec: Codec) -> EncodedChunk:
    """Build a chunk's descriptors from the C loop's per-page sizes (-1: zero page).

    Offsets are relative to the chunk's data, -1 for the shared zero page
    (:func:`write_task` places them).
    """
    descs = np.empty(len(known), kdump.PAGE_DESC)
    zero, compressed = native.module().chunk_descs(got, known, ps, codec.flag, descs)
    return EncodedChunk(descs, _scratches[_scratch_slot].data[:total], zero, compressed)


# ----------------------------------------------------------------------------
# The sequencer: chunk k may take its data offset only after chunk k-1
# ----------------------------------------------------------------------------


class Sequencer:
    """Hands out data offsets in chunk order, across processes.

    Only the process whose turn it is writes the shared slots, so no lock is
    needed; it then wakes every waiter, and each checks whether the turn is
    now its own.  The slots are plain stores, which a weakly ordered CPU
    (arm64, ppc64) may show another core out of order: the turn before the
    offset.  So the owner also stores ``offset ^ _mix(turn)``, and a reader
    takes the offset only when the three words agree; an inconsistent read
    is read again.  Each aligned 8-byte store is seen whole on every
    architecture Linux runs on.

    Attributes:
        slots: Shared int64: next chunk whose turn it is, its data offset,
            aborted flag, the check word.
    """

    NEXT_CHUNK, NEXT_OFFSET, ABORTED, CHECK = 0, 1, 2, 3

    def __init__(self, first_offset: int, waiters: int) -> None:
        """Create the shared state.

        Args:
            first_offset: Where the first chunk's data goes.
            waiters: Number of processes that may wait for a turn (indexes 0..waiters-1).
        """
        self.slots = procs.SharedInts(4)
        self.slots.values[self.NEXT_OFFSET] = first_offset
        self.slots.values[self.CHECK] = _check_word(0, first_offset)
        self.wakers = procs.Wakers(waiters)
        self.me = 0

    @property
    def aborted(self) -> bool:
        """Whether the run was abandoned."""
        return bool(self.slots.values[self.ABORTED])

    @property
    def next_offset(self) -> int:
        """Data offset of the chunk whose turn it is (after the last chunk: the end of the data)."""
        return int(self.slots.values[self.NEXT_OFFSET])

    def abort(self) -> None:
        """Make every waiting worker give up."""
        self.slots.values[self.ABORTED] = 1
        self.wakers.wake_all()

    def _wait_turn(self, chunk: int, timeout: float) -> int:
        v = self.slots.values
        deadline = time.monotonic() + timeout
        while True:
            if v[self.ABORTED]:
                raise VmcorepackError("dump abandoned")
            torn = False
            if v[self.NEXT_CHUNK] == chunk:
                offset = int(v[self.NEXT_OFFSET])
                if int(v[self.CHECK]) == _check_word(chunk, offset):
                    return offset
                torn = True  # the turn is seen before its offset: read both again
            left = deadline - time.monotonic()
            if left <= 0:
                raise VmcorepackError(f"chunk {chunk} waited {timeout:.0f} s for its turn")
            if torn:
                time.sleep(0)
            else:
                self.wakers.wait(self.me, min(left, 1.0))

    def _pass_turn(self, chunk: int, offset: int) -> None:
        v = self.slots.values
        v[self.NEXT_OFFSET] = offset
        v[self.CHECK] = _check_word(chunk + 1, offset)
        v[self.NEXT_CHUNK] = chunk + 1
        self.wakers.wake_all()

    def close(self) -> None:
        """Release the wake-up descriptors (after the workers are gone)."""
        self.wakers.close()

    def ready(self, chunk: int) -> bool:
        """Tell, without waiting, whether it is ``chunk``'s turn.

        Args:
            chunk: Chunk index.

        Returns:
            True when :meth:`take` would not wait.
        """
        return bool(self.slots.values[self.NEXT_CHUNK] == chunk)

    def take(self, chunk: int, size: int, timeout: float = TURN_TIMEOUT) -> int:
        """Wait for ``chunk``'s turn, reserve ``size`` bytes, pass the turn on.

        Args:
            chunk: Chunk index.
            size: Bytes of data the chunk writes.
            timeout: Seconds to wait.

        Returns:
            The chunk's data offset.
        """
        off = self._wait_turn(chunk, timeout)
        self._pass_turn(chunk, off + size)
        return off

    def hold(self, chunk: int, timeout: float = TURN_TIMEOUT) -> int:
        """Wait for the turn without passing it on (streams write in turn).

        Args:
            chunk: Chunk index.
            timeout: Seconds to wait.

        Returns:
            The data offset.
        """
        return self._wait_turn(chunk, timeout)

    def release(self, chunk: int, size: int) -> None:
        """Finish a turn taken with :meth:`hold`.

        Args:
            chunk: Chunk index.
            size: Bytes written.
        """
        self._pass_turn(chunk, self.next_offset + size)


def _check_word(turn: int, offset: int) -> int:
    """Return the int64 that vouches for ``offset`` being the data offset of ``turn``."""
    x = (offset ^ (turn * 0x9E3779B97F4A7C15)) & 0xFFFF_FFFF_FFFF_FFFF
    return x - (1 << 64) if x >> 63 else x


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


@dataclasses.dataclass(frozen=True)
class ChunkDone:
    """A worker's report for one chunk.

    Attributes:
        index: Chunk index.
        pages: Pages in the chunk.
        zero: Zero pages.
        compressed: Compressed pages.
        data_bytes: Bytes of data written.
        unreadable: pfns that could not be read from the source.
    """

    index: int
    pages: int
    zero: int
    compressed: int
    data_bytes: int
    unreadable: tuple[int, ...] = ()


class _Job(NamedTuple):
    source: Source
    out: Output
    codec: Codec
    share_zero: bool
    zero_offset: int
    table_offset: int
    stream: bool
    passthrough: bool = False
    dedup: bool = False


def encode_stored(
    stored: tuple[np.ndarray, list[bytes], np.ndarray], page_size: int, codec: Codec, share_zero: bool
) -> EncodedChunk:
    """Encode pages of an input dump, keeping stored bytes that are already in ``codec``.

    A page stored with the output codec is copied as it is: makedumpfile's
    writer would produce the same bytes from the decoded page (same codec,
    level and library).  Raw pages are compressed, pages of another codec are
    decoded and compressed; shared-zero pages stay shared.

    Args:
        stored: ``Source.stored_pages`` result.
        page_size: Page size.
        codec: Output codec.
        share_zero: Output level has bit 1.

    Returns:
        The encoded chunk.
    """
    flags_in, data_in, zero_in = stored
    n = len(data_in)
    ps = page_size
    descs = np.zeros(n, kdump.PAGE_DESC)
    is_zero = zero_in & share_zero
    parts: list[bytes] = []
    sizes = np.full(n, ps, np.uint32)
    flags = np.zeros(n, np.uint32)
    compressed = 0
    for i in np.flatnonzero(~is_zero).tolist():
        f = int(flags_in[i])
        if zero_in[i]:
            page = bytes(ps)
        elif f == codec.flag and f != 0:
            parts.append(data_in[i])
            sizes[i] = len(data_in[i])
            flags[i] = f
            compressed += 1
            continue
        else:
            page = data_in[i] if f == 0 else decode_page(f, data_in[i], ps)
        c = codec.compress(page) if codec.flag else page
        if codec.flag and len(c) < ps:
            parts.append(c)
            sizes[i] = len(c)
            flags[i] = codec.flag
            compressed += 1
        else:
            parts.append(page)
    stored_sizes = np.where(is_zero, 0, sizes).astype(np.int64)
    rel = np.cumsum(stored_sizes) - stored_sizes
    descs["offset"] = np.where(is_zero, -1, rel)
    descs["size"] = sizes
    descs["flags"] = flags
    return EncodedChunk(descs, parts, int(is_zero.sum()), compressed)


def encode_task(job: _Job, task: Task) -> tuple[EncodedChunk, list[int]]:
    """Encode one chunk (nothing is written).

    Args:
        job: Shared run parameters.
        task: The chunk.

    Returns:
        (the encoded chunk, pfns that could not be read).
    """
    bad: list[int] = []
    stored = job.source.stored_pages(task.pfns) if job.passthrough else None
    direct = None
    if stored is None and not job.dedup and FUSED_READ:
        direct = encode_from_file(job.source, task.pfns, job.codec, job.share_zero)
    if stored is not None:
        enc = encode_stored(stored, job.source.page_size, job.codec, job.share_zero)
    elif direct is not None:
        enc = direct
    else:
        raw, known_zero = job.source.read_pfns_sparse(task.pfns, bad)
        skip = np.isin(task.pfns, np.array(bad, np.int64)) if bad else None
        if job.dedup and skip is None and (job.share_zero or known_zero is None or not known_zero.any()):
            enc = encode_dedup(raw, job.source.page_size, job.codec, job.share_zero, known_zero)
        else:
            enc = encode_chunk(raw, job.source.page_size, job.codec, job.share_zero, skip, known_zero)
        del raw
    return enc, bad


def _data_size(enc: EncodedChunk) -> int:
    return len(enc.data) if isinstance(enc.data, bytes | memoryview) else sum(map(len, enc.data))


def write_task(job: _Job, task: Task, enc: EncodedChunk, base: int) -> None:
    """Write an encoded chunk's data at ``base``, then its descriptors.

    Data goes first: a descriptor that reaches the file always points at data
    that is already there (ENOSPC, ``-L``, a kill).

    Args:
        job: Shared run parameters.
        task: The chunk.
        enc: Its encoding.
        base: File offset of its data.
    """
    descs = enc.descs
    table_off = job.table_offset + task.desc_index * kdump.PAGE_DESC.itemsize

    def place() -> bytes:
        mod = native.module()
        if mod is not None and descs.flags.c_contiguous:
            mod.place_descs(descs, base, job.zero_offset)
        else:
            o = descs["offset"]
            descs["offset"] = np.where(o == -1, job.zero_offset, np.where(o == -2, 0, o + base))
        return descs.tobytes()

    try:
        job.out.write_parts(enc.data, base)
    except DiskFullError as e:
        _write_fitting(job, place(), table_off, e.offset)
        raise
    table = place()
    try:
        job.out.pwrite(table, table_off)
    except DiskFullError as e:
        _zero_partial_descriptor(job.out, table_off, e)
        raise


def run_task(job: _Job, seq: Sequencer | None, task: Task, state: dict[str, int]) -> ChunkDone:
    """Encode and write one chunk.

    Args:
        job: Shared run parameters.
        seq: Sequencer, or None when running inline (``state`` holds the offset).
        task: The chunk.
        state: Inline offset state (``{"offset": …}``).

    Returns:
        The chunk's report.
    """
    enc, bad = encode_task(job, task)
    size = _data_size(enc)
    if seq is None:
        base = state["offset"]
        state["offset"] = base + size
        write_task(job, task, enc, base)
    elif job.stream:
        base = seq.hold(task.index)
        try:
            write_task(job, task, enc, base)
        finally:
            seq.release(task.index, size)
    else:
        write_task(job, task, enc, seq.take(task.index, size))
    return ChunkDone(task.index, len(task.pfns), enc.zero, enc.compressed, size, tuple(bad))


def _write_fitting(job: _Job, table: bytes, table_off: int, end: int) -> None:
    """After a data write stopped at ``end``: write the descriptors of the chunk's pages that are whole.

    A chunk holds up to 8 MiB of pages; without this, a full disk or ``-L``
    would lose every page of the chunk it cut.  Descriptors of pages whose
    data did not fit stay all zero (readers skip them, as makedumpfile's).
    """
    if not isinstance(job.out, FileOutput):
        return  # a stream without its end marker is unusable anyway
    descs = np.frombuffer(table, kdump.PAGE_DESC).copy()
    off = descs["offset"].astype(np.int64)
    shared = (off == job.zero_offset) & job.share_zero  # the zero page was written first
    whole = shared | (off + descs["size"].astype(np.int64) <= end)
    whole &= descs["size"] > 0
    descs[~whole] = np.zeros(1, kdump.PAGE_DESC)
    if not whole.any():
        return
    try:
        job.out.pwrite(descs.tobytes(), table_off)
    except DiskFullError as e:
        _zero_partial_descriptor(job.out, table_off, e)


def _zero_partial_descriptor(out: Output, table_off: int, e: DiskFullError) -> None:
    """Overwrite a descriptor cut in the middle by a failed write with zeros."""
    item = kdump.PAGE_DESC.itemsize
    written = e.offset - table_off
    partial = written % item
    if partial and isinstance(out, FileOutput):
        try:
            out.pwrite(bytes(partial), e.offset - partial)
        except OutputError:
            pass  # the final validation pass zeroes whatever is still inconsistent


class _Board:
    """What the workers share with the main process besides the sequencer.

    Workers take chunks themselves (a shared claim counter) from their own
    copy of the chunk list, which they compute from the 2nd bitmap inherited
    at fork: no task crosses a queue.  Each worker adds its counts to its row
    of ``stats``, which the main process reads for progress; only the final
    report (with unreadable pfns) or an error travels through its pipe.
    With a task queue and one report per chunk, the main process and its
    queue threads took about 0.6 s of CPU away from two workers on a 4 GiB
    image; now the main process uses 0.11-0.13 s while they write
    (``benchmarks/phases.py``, "CPU main").

    Attributes:
        lock: Guards the claim counter.
        shared: Slot 0: index of the next chunk nobody has taken; then per
            worker: pages, zero, compressed, data bytes, first and last pfn
            of the chunk in hand (+1, 0 when idle).
    """

    FIELDS = 6

    def __init__(self, workers: int) -> None:
        """Create the shared state.

        Args:
            workers: Number of workers.
        """
        self.lock = procs.Semaphore(1)
        self.shared = procs.SharedInts(1 + self.FIELDS * workers)
        self.stats = self.shared.values[1:].reshape(workers, self.FIELDS)

    def close(self) -> None:
        """Release the lock's descriptor (after the workers are gone)."""
        self.lock.close()

    def claim(self) -> int:
        """Take the next chunk index."""
        v = self.shared.values
        with self.lock:
            k = int(v[0])
            v[0] = k + 1
            return k

    def row(self, worker: int) -> np.ndarray:
        """Return a worker's counters as a (shared) int64 array."""
        row: np.ndarray = self.stats[worker]
        return row


def _worker_main(
    job: _Job,
    seq: Sequencer,
    board: _Board,
    worker: int,
    make_tasks: Callable[[], Iterator[Task]],
    send: Callable[[Any], None],
) -> None:
    # The main process handles SIGINT and SIGTERM; a worker just stops when told
    # (or is killed by the main process).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    seq.me = worker
    if not job.source.use_mmap:
        # Measured on a 4 GiB generator image at -d 31 (`/usr/bin/time -f %R`
        # on `vmcorepack --mmap` against the default): mmap gathers in forked
        # workers took 738,328 minor faults and 3.3 s of system time, against
        # 91,597 and 1.2 s with one pread per dense stretch.
        job.source.mmap_scattered = False
    row = board.row(worker)
    state: dict[str, int] = {}
    unreadable: list[int] = []
    tasks = make_tasks()
    task: Task | None = None
    current: Task | None = None  # the chunk being encoded or written, for error reports
    slot = 0

    def claim_and_encode() -> tuple[Task, EncodedChunk, list[int]] | None:
        nonlocal slot, current
        want = board.claim()
        got = next((t for t in tasks if t.index == want), None)
        if got is None:
            return None
        current = got  # an error report names the chunk being encoded
        if len(got.pfns):
            row[4] = row[4] or int(got.pfns[0]) + 1
            row[5] = int(got.pfns[-1]) + 1
        use_scratch(slot)
        slot ^= 1
        enc, bad = encode_task(job, got)
        return got, enc, bad

    try:
        if job.stream:
            # A stream writes in turn (hold/release): no chunk is encoded ahead.
            while not seq.aborted:
                want = board.claim()
                task = next((t for t in tasks if t.index == want), None)
                if task is None:
                    break
                if len(task.pfns):
                    row[4], row[5] = int(task.pfns[0]) + 1, int(task.pfns[-1]) + 1
                done = run_task(job, seq, task, state)
                unreadable.extend(done.unreadable)
                row[:4] += (done.pages, done.zero, done.compressed, done.data_bytes)
                row[4] = row[5] = 0
        else:
            pending = claim_and_encode()
            while pending is not None and not seq.aborted:
                task, enc, bad = pending
                current = task
                ahead = None
                if not seq.ready(task.index):
                    # Its turn has not come (the previous chunk, in another
                    # worker, is still being encoded): encode the next one
                    # meanwhile instead of waiting.  `benchmarks/phases.py
                    # IMG --level 1 --runs 3` on the 8 GiB generator image,
                    # write phase, twice each: 2.06-2.35 s waiting, 1.62-2.07 s
                    # encoding ahead.
                    ahead = claim_and_encode()
                size = _data_size(enc)
                write_task(job, task, enc, seq.take(task.index, size))
                unreadable.extend(bad)
                row[:4] += (len(task.pfns), enc.zero, enc.compressed, size)
                row[4] = int(ahead[0].pfns[0]) + 1 if ahead is not None and len(ahead[0].pfns) else 0
                if ahead is None:
                    row[5] = 0
                    pending = claim_and_encode()
                else:
                    pending = ahead
        send(("done", tuple(unreadable)))
    except BaseException as e:
        kind = "full" if isinstance(e, DiskFullError) else "output" if isinstance(e, OutputError) else "error"
        if isinstance(e, OutputError):
            text = e.msg
        else:
            text = str(e) if isinstance(e, VmcorepackError) else f"{type(e).__name__}: {e}"
        at = current if current is not None else task
        lo, hi = (int(at.pfns[0]), int(at.pfns[-1])) if at is not None and len(at.pfns) else (0, 0)
        send((kind, text, lo, hi))


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------


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
        b2 = flt.second_bitmap(s, e) & b1
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
    bm2, ram, dumpable = compute_bitmaps(source, flt, options.cycle_pfns, round_up, options.progress)
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
        job = _Job(
            source, out, codec, share_zero, geo.data_offset, geo.table_offset, options.flat, passthrough, options.dedup
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


def chunk_pages(options: PackOptions) -> int:
    """Return the pages per chunk a run uses (``options.chunk_pages``, or the default for its worker count).

    Args:
        options: Run options.

    Returns:
        Pages per chunk.
    """
    if options.chunk_pages > 0:
        return options.chunk_pages
    if options.dedup:
        # Pages share data within a chunk: the same chunks for any worker count.
        return CHUNK_PAGES_WORKERS
    return CHUNK_PAGES_WORKERS if options.workers > 0 else CHUNK_PAGES_ONE_PROCESS


def _count_zero(source: Source, bm2: np.ndarray, options: PackOptions) -> int:
    n = 0
    for task in _chunks(bm2, source.max_mapnr, options.cycle_pfns, chunk_pages(options)):
        raw, known_zero = source.read_pfns_sparse(task.pfns)
        n += int(known_zero.sum()) + int(zero_mask(raw, source.page_size).sum())
    return n


def _account(result: PackResult, done: ChunkDone) -> None:
    result.zero_pages += done.zero
    result.compressed_pages += done.compressed
    result.unreadable.extend(done.unreadable)


def _run_tasks(
    job: _Job,
    make_tasks: Callable[[], Iterator[Task]],
    first_offset: int,
    total: int,
    options: PackOptions,
    result: PackResult,
) -> int:
    progress = options.progress
    if progress:
        progress(0, total)
    if options.workers <= 0:
        done_pages = 0
        state = {"offset": first_offset}
        for task in make_tasks():
            done = run_task(job, None, task, state)
            _account(result, done)
            done_pages += done.pages
            if progress:
                progress(done_pages, total)
        return state["offset"]
    try:
        seq = Sequencer(first_offset, options.workers)
        board = _Board(options.workers)
    except OSError as e:
        # eventfd or a shared mapping refused (an exotic kernel or sandbox).
        result.warnings.append(f"cannot start worker processes ({e.strerror or e}): packing in one process")
        return _run_tasks(job, make_tasks, first_offset, total, dataclasses.replace(options, workers=0), result)
    # Load the C extension once here, so that every worker inherits it
    # instead of loading it after the fork.
    native.module()
    workers: list[procs.Worker] = []
    stats = board.stats
    finished: set[int] = set()
    reported = 0
    clean = False
    try:
        for k in range(options.workers):
            # One at a time, so that a failed fork leaves the started ones listed for the cleanup below.
            workers.append(procs.Worker(functools.partial(_worker_main, job, seq, board, k, make_tasks)))  # noqa: PERF401
        while len(finished) < len(workers):
            # Woken by a report or a pipe closing (a worker gone); the timeout
            # only paces the progress updates.
            procs.wait_any([w for k, w in enumerate(workers) if k not in finished], 0.05)
            for k, w in enumerate(workers):
                if k in finished:
                    continue
                eof, msg = w.read_report()
                if msg is not None and msg[0] == "done":
                    finished.add(k)
                    result.unreadable.extend(msg[1])
                elif msg is not None:
                    _stop(seq, workers)
                    kind, text, lo, hi = msg
                    where = f"pfns {lo:#x}-{hi:#x}"
                    if kind == "full":
                        raise DiskFullError(job.out.path, f"{text} (writing {where})", 0, 0)
                    if kind == "output":
                        # The output failed (a broken pipe, an I/O error): not the worker's fault.
                        raise OutputError(job.out.path, text)
                    raise VmcorepackError(f"worker failed on {where}: {text}")
                elif eof:
                    # Gone without a report: killed (the OOM killer, a signal) or crashed.
                    lo, hi = (int(stats[k, 4]) - 1, int(stats[k, 5]) - 1) if stats[k, 4] else (0, 0)
                    w.join(1.0)
                    _stop(seq, workers)
                    pending = f"with pfns {lo:#x}-{hi:#x} pending" if hi else "between chunks"
                    raise VmcorepackError(
                        f"worker process {w.pid} died (exit status {w.exitcode}) {pending}; dump abandoned"
                    )
            now = int(stats[:, 0].sum())
            if progress and now != reported:
                reported = now
                progress(now, total)
        for w in workers:
            w.join(5)
        clean = True
    finally:
        if not clean:
            _stop(seq, workers)
        for w in workers:
            w.kill()
            w.join(5)
            w.close()
        # A library caller may pack many times in one process: no descriptor leaks.
        seq.close()
        board.close()
    totals = stats[:, :4].sum(axis=0)
    result.zero_pages += int(totals[1])
    result.compressed_pages += int(totals[2])
    return seq.next_offset


def _stop(seq: Sequencer, workers: list[procs.Worker], grace: float = 2.0) -> None:
    """Stop workers: no new chunks, wake the waiting, let running writes finish, then kill."""
    seq.abort()
    deadline = time.monotonic() + grace
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
    for w in workers:
        w.kill()


#: Descriptors per slice when the table is re-read (bounded memory).
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
