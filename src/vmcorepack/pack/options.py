"""Options and results of a pack run, its progress phases and its chunk size."""

from __future__ import annotations

import dataclasses
import os
from typing import Protocol

from vmcorepack.erase import ErasePlan
from vmcorepack.filter import ExclusionCounts
from vmcorepack.userfilter import PageDecisions

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
        erase: ``--config`` erasures to apply and record (erase.py).
        pages: ``--filter`` keep/drop decisions (userfilter.py).
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
    erase: ErasePlan | None = None
    pages: PageDecisions | None = None


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
