from __future__ import annotations

import numpy as np
import pytest

from vmcorepack import bitmap
from vmcorepack.formats import elf, flat, kdump


@pytest.mark.parametrize("order", ["<", ">"])
def test_header_sizes_are_pinned(order: str) -> None:
    assert kdump.KdumpLayout.for_target(order, 8).disk_dump_header.itemsize == 464  # type: ignore[arg-type]
    assert kdump.KdumpLayout.for_target(order, 4).disk_dump_header.itemsize == 452  # type: ignore[arg-type]
    assert kdump.KdumpLayout.for_target(order, 8).kdump_sub_header.itemsize == 104  # type: ignore[arg-type]
    assert kdump.KdumpLayout.for_target(order, 8).page_desc.itemsize == 24  # type: ignore[arg-type]


def test_header_field_offsets_match_spec() -> None:
    h = kdump.X86_64.disk_dump_header
    assert h.fields["tv_sec"][1] == 408
    assert h.fields["status"][1] == 424
    assert h.fields["block_size"][1] == 428
    assert h.fields["nr_cpus"][1] == 460
    s = kdump.X86_64.kdump_sub_header
    assert s.fields["offset_vmcoreinfo"][1] == 32
    assert s.fields["max_mapnr_64"][1] == 96


def test_geometry_of_the_tiny_example() -> None:
    # docs/kdump-format.md §14.2: S = 356, N = 9.
    g = kdump.FileGeometry.compute(4096, 356, 10, 9)
    assert (g.sub_hdr_size, g.bitmap_blocks) == (1, 2)
    assert (g.bitmap1_offset, g.bitmap2_offset, g.table_offset, g.data_offset) == (8192, 12288, 16384, 16600)


def test_bitmap_blocks_cover_both_halves() -> None:
    # The crash issue example in §4.1: max_mapnr 4286464 -> 131 blocks per bitmap.
    assert kdump.FileGeometry.compute(4096, 0, 4286464, 0).bitmap_blocks == 262


def test_bitmap_is_lsb_first() -> None:
    bits = np.zeros(10, bool)
    bits[[0, 1, 2, 3, 4, 6, 7, 8, 9]] = True
    assert bitmap.pack(bits).tobytes() == b"\xdf\x03"
    assert (bitmap.unpack(b"\xdf\x03", 10) == bits).all()


def test_flat_header_roundtrip() -> None:
    h = flat.encode_flat_header()
    assert len(h) == 4096 and h[:12] == b"makedumpfile" and h[12:16] == b"\0" * 4
    flat.check_flat_header(h, "x")
    assert flat.decode_record_header(flat.encode_record_header(4200, 356)) == (4200, 356)
    assert flat.decode_record_header(flat.END_MARKER) == (-1, -1)


def test_notes_roundtrip() -> None:
    blob = elf.encode_note(b"CORE", 1, b"x" * 336) + elf.encode_note(b"VMCOREINFO", 0, b"OSRELEASE=1\n")
    notes = list(elf.iter_notes(blob, "x", 0))
    assert [n.name for n in notes] == [b"CORE", b"VMCOREINFO"]
    assert notes[1].desc == b"OSRELEASE=1\n"
    assert notes[1].desc_offset == 356 + 12 + 12


def test_truncated_note_is_an_error() -> None:
    blob = elf.encode_note(b"CORE", 1, b"x" * 336)[:100]
    with pytest.raises(elf.ElfFormatError, match="runs past"):
        list(elf.iter_notes(blob, "core", 0x1000))
