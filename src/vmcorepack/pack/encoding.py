"""Pages of one chunk -> descriptors and data (pure; used by workers and inline)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from vmcorepack import native
from vmcorepack.codecs import Codec, PageLoop, page_loop
from vmcorepack.formats import kdump
from vmcorepack.sources import Source


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
        total = loop.encode_file(fd, offsets.data, ps, share_zero, dst, got.data, source.map_window, source.file_size)
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
