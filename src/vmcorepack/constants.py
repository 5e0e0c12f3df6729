"""Named constants of the kdump format and of makedumpfile's dump levels."""

from __future__ import annotations

import enum


class DumpStatus(enum.IntFlag):
    """``disk_dump_header.status`` bits (makedumpfile ``diskdump_mod.h``).

    The same values are used in ``page_desc.flags`` for the codec bits.
    """

    COMPRESSED_ZLIB = 0x01
    COMPRESSED_LZO = 0x02
    COMPRESSED_SNAPPY = 0x04
    COMPRESSED_INCOMPLETE = 0x08
    EXCLUDED_VMEMMAP = 0x10
    COMPRESSED_ZSTD = 0x20


class DumpLevel(enum.IntFlag):
    """Bits of makedumpfile's ``-d`` dump level: each bit excludes a page kind."""

    ZERO = 1
    CACHE = 2
    CACHE_PRIVATE = 4
    USER = 8
    FREE = 16


MAX_DUMP_LEVEL = 31

#: The only signature a new writer may emit: "KDUMP" and three spaces.
KDUMP_SIGNATURE = b"KDUMP   "
#: Older diskdump files, still accepted by readers.
DISKDUMP_SIGNATURE = b"DISKDUMP"
#: Version written by makedumpfile since 2013 (64-bit pfns in the sub header).
KDUMP_HEADER_VERSION = 6
#: Size of the used part of ``kdump_sub_header`` on 64-bit targets.
SUB_HEADER_SIZE_64 = 104

#: Flattened-stream signature (16 bytes with its NUL padding).
FLAT_SIGNATURE = b"makedumpfile\0\0\0\0"
FLAT_HEADER_SIZE = 4096
FLAT_TYPE = 1
FLAT_VERSION = 1

#: Default write-cache order of makedumpfile's ``-b`` (page_size << 4 = 64 KiB).
DEFAULT_BLOCK_ORDER = 4
