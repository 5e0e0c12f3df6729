"""Chunks as tasks, the worker loop, and the main side that starts workers and collects their reports."""

from __future__ import annotations

import dataclasses
import functools
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from vmcorepack import native, procs
from vmcorepack.codecs import Codec, decode_page
from vmcorepack.erase import Erasure
from vmcorepack.errors import (
    DiskFullError,
    OutputError,
    VmcorepackError,
)
from vmcorepack.formats import kdump
from vmcorepack.pack.bitmaps import Task
from vmcorepack.pack.encoding import EncodedChunk, encode_chunk, encode_dedup, encode_from_file, use_scratch
from vmcorepack.pack.options import FUSED_READ, PackOptions, PackResult
from vmcorepack.pack.sequencer import Sequencer
from vmcorepack.sources import Source
from vmcorepack.writer import FileOutput, Output


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
    erase: Erasure | None = None


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
    # --config erasure: a chunk holding erased bytes takes the raw-page path.
    erase = job.erase if job.erase is not None and job.erase.touched(task.pfns).any() else None
    stored = job.source.stored_pages(task.pfns) if job.passthrough and erase is None else None
    direct = None
    if stored is None and not job.dedup and FUSED_READ and erase is None:
        direct = encode_from_file(job.source, task.pfns, job.codec, job.share_zero)
    if stored is not None:
        enc = encode_stored(stored, job.source.page_size, job.codec, job.share_zero)
    elif direct is not None:
        enc = direct
    else:
        raw, known_zero = job.source.read_pfns_sparse(task.pfns, bad)
        if erase is not None:
            raw, known_zero = erase.apply_sparse(raw, known_zero, task.pfns)
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
