"""The public names of a pack run (the code lives in :mod:`vmcorepack.pack`).

Kept so that callers and examples keep importing ``vmcorepack.pipeline``;
modules of the package import from :mod:`vmcorepack.pack` directly.
"""

from __future__ import annotations

from vmcorepack.pack.bitmaps import bitmap_in_file, compute_bitmaps, memory_stats, write_bitmaps
from vmcorepack.pack.dump import Prepared, pack, prepare, write_dump
from vmcorepack.pack.encoding import EncodedChunk, duplicate_of, encode_chunk, encode_dedup, read_pfns, zero_mask
from vmcorepack.pack.options import (
    DEFAULT_CHUNK_PAGES,
    DEFAULT_CYCLE_PFNS,
    PHASE_COPY,
    PHASE_EXCLUDE,
    PHASE_HOLES,
    PackOptions,
    PackResult,
    Progress,
    chunk_pages,
)
from vmcorepack.pack.repair import finalize_incomplete, leave_out
from vmcorepack.pack.sequencer import Sequencer

__all__ = [
    "DEFAULT_CHUNK_PAGES",
    "DEFAULT_CYCLE_PFNS",
    "PHASE_COPY",
    "PHASE_EXCLUDE",
    "PHASE_HOLES",
    "EncodedChunk",
    "PackOptions",
    "PackResult",
    "Prepared",
    "Progress",
    "Sequencer",
    "bitmap_in_file",
    "chunk_pages",
    "compute_bitmaps",
    "duplicate_of",
    "encode_chunk",
    "encode_dedup",
    "finalize_incomplete",
    "leave_out",
    "memory_stats",
    "pack",
    "prepare",
    "read_pfns",
    "write_bitmaps",
    "write_dump",
    "zero_mask",
]
