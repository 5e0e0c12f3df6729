"""On-disk structures of the kdump-compressed format as numpy dtypes.

Layouts follow makedumpfile's ``diskdump_mod.h`` with the explicit padding that
the target C ABI inserts (see docs/kdump-format.md §2-§5).  Fields are packed
and named exactly as in C; padding is a named void field, never ``align=True``,
because numpy's alignment follows the host and not the dumped machine.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import numpy as np

from vmcorepack.constants import KDUMP_HEADER_VERSION

ByteOrder = Literal["<", ">"]
WordSize = Literal[4, 8]

UTSNAME_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
#: ``__NEW_UTS_LEN + 1``.
UTS_LEN = 65


@dataclasses.dataclass(frozen=True)
class KdumpLayout:
    """The dtypes of one target ABI (byte order and word size).

    Attributes:
        byteorder: ``"<"`` or ``">"``.
        word_size: 4 or 8 (size of C ``long``).
        disk_dump_header: Main header dtype (452 or 464 bytes).
        kdump_sub_header: Sub header dtype.
        page_desc: Page descriptor dtype (24 bytes).
    """

    byteorder: ByteOrder
    word_size: WordSize
    disk_dump_header: np.dtype[np.void]
    kdump_sub_header: np.dtype[np.void]
    page_desc: np.dtype[np.void]

    @classmethod
    def for_target(cls, byteorder: ByteOrder = "<", word_size: WordSize = 8) -> KdumpLayout:
        """Build the layout of one target.

        Args:
            byteorder: Byte order of the dumped machine.
            word_size: Size of ``long`` on the dumped machine.

        Returns:
            The frozen layout.
        """
        e = byteorder
        utsname = np.dtype([(name, f"S{UTS_LEN}") for name in UTSNAME_FIELDS])
        long_t = f"{e}u{word_size}"
        # struct timeval: two longs.  On 64-bit the 390-byte utsname ends at 402
        # and timeval needs 8-byte alignment (6 pad bytes); on i386 long is only
        # 4-aligned (2 pad bytes).  libkdumpfile tests/diskdump.h has the same.
        pad = "V6" if word_size == 8 else "V2"
        header = np.dtype(
            [
                ("signature", "S8"),
                ("header_version", f"{e}i4"),
                ("utsname", utsname),
                ("_pad", pad),
                ("tv_sec", f"{e}i{word_size}"),
                ("tv_usec", f"{e}i{word_size}"),
                ("status", f"{e}u4"),
                ("block_size", f"{e}i4"),
                ("sub_hdr_size", f"{e}i4"),
                ("bitmap_blocks", f"{e}u4"),
                ("max_mapnr", f"{e}u4"),
                ("total_ram_blocks", f"{e}u4"),
                ("device_blocks", f"{e}u4"),
                ("written_blocks", f"{e}u4"),
                ("current_cpu", f"{e}u4"),
                ("nr_cpus", f"{e}i4"),
            ]
        )
        fields: list[tuple[str, str]] = [
            ("phys_base", long_t),
            ("dump_level", f"{e}i4"),
            ("split", f"{e}i4"),
            ("start_pfn", long_t),
            ("end_pfn", long_t),
            ("offset_vmcoreinfo", f"{e}i8"),
            ("size_vmcoreinfo", long_t),
            ("offset_note", f"{e}i8"),
            ("size_note", long_t),
            ("offset_eraseinfo", f"{e}i8"),
            ("size_eraseinfo", long_t),
            ("start_pfn_64", f"{e}u8"),
            ("end_pfn_64", f"{e}u8"),
            ("max_mapnr_64", f"{e}u8"),
        ]
        sub = np.dtype(fields)
        desc = np.dtype(
            [
                ("offset", f"{e}i8"),
                ("size", f"{e}u4"),
                ("flags", f"{e}u4"),
                ("page_flags", f"{e}u8"),
            ]
        )
        return cls(byteorder, word_size, header, sub, desc)


#: The x86_64 layout, used for everything vmcorepack writes today.
X86_64 = KdumpLayout.for_target("<", 8)
PAGE_DESC = X86_64.page_desc


def ceil_div(a: int, b: int) -> int:
    """Return ``ceil(a / b)`` for non-negative integers."""
    return -(-a // b)


class FileGeometry(NamedTuple):
    """Where each region of a kdump file starts (docs/kdump-format.md §1, §14.2).

    Attributes:
        block_size: Page size of the dumped kernel.
        sub_hdr_size: Blocks taken by the sub header and the notes blob.
        bitmap_blocks: Blocks of both bitmaps together (always even).
        max_mapnr: Number of pfns the bitmaps describe.
        nr_dumpable: Number of page descriptors (set bits of the 2nd bitmap).
    """

    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    nr_dumpable: int

    @classmethod
    def compute(
        cls, block_size: int, size_note: int, max_mapnr: int, nr_dumpable: int, sub_size: int = 104
    ) -> FileGeometry:
        """Compute the layout from the rules of docs/kdump-format.md §1 and §4.1.

        Args:
            block_size: Page size.
            size_note: Bytes of the ELF notes blob copied behind the sub header.
            max_mapnr: Number of pfns.
            nr_dumpable: Number of page descriptors.
            sub_size: Size of the sub header structure.

        Returns:
            The geometry.
        """
        sub_hdr_size = ceil_div(sub_size + size_note, block_size)
        per_bitmap = ceil_div(ceil_div(max_mapnr, 8), block_size)
        return cls(block_size, sub_hdr_size, 2 * per_bitmap, max_mapnr, nr_dumpable)

    @property
    def bitmap_bytes(self) -> int:
        """Bytes of one bitmap half (block aligned)."""
        return self.bitmap_blocks // 2 * self.block_size

    @property
    def bitmap1_offset(self) -> int:
        """File offset of the 1st bitmap."""
        return (1 + self.sub_hdr_size) * self.block_size

    @property
    def bitmap2_offset(self) -> int:
        """File offset of the 2nd bitmap."""
        return self.bitmap1_offset + self.bitmap_bytes

    @property
    def table_offset(self) -> int:
        """File offset of the page_desc table."""
        return (1 + self.sub_hdr_size + self.bitmap_blocks) * self.block_size

    @property
    def data_offset(self) -> int:
        """File offset of the data region (right after the table, unaligned)."""
        return self.table_offset + PAGE_DESC.itemsize * self.nr_dumpable


def encode_utsname(layout: KdumpLayout, values: dict[str, bytes]) -> np.void:
    """Build a ``utsname`` record from field values (missing fields are empty).

    Args:
        layout: Target layout.
        values: Mapping of utsname field name to bytes (truncated to 64 bytes).

    Returns:
        A numpy record of the utsname sub-dtype.
    """
    rec = np.zeros((), layout.disk_dump_header["utsname"])
    for name in UTSNAME_FIELDS:
        rec[name] = values.get(name, b"")[: UTS_LEN - 1]
    out: np.void = rec[()]  # type: ignore[assignment]
    return out


def new_header(layout: KdumpLayout = X86_64) -> np.ndarray:
    """Return a zeroed main header with signature and version filled in.

    Args:
        layout: Target layout.

    Returns:
        A 0-d structured array of ``layout.disk_dump_header``.
    """
    h = np.zeros((), layout.disk_dump_header)
    h["signature"] = b"KDUMP   "
    h["header_version"] = KDUMP_HEADER_VERSION
    return h


def new_sub_header(layout: KdumpLayout = X86_64) -> np.ndarray:
    """Return a zeroed sub header.

    Args:
        layout: Target layout.

    Returns:
        A 0-d structured array of ``layout.kdump_sub_header``.
    """
    return np.zeros((), layout.kdump_sub_header)
