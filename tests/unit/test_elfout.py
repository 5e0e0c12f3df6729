"""Splitting PT_LOADs for -E (makedumpfile write_elf_pages_cyclic), on synthetic bitmaps."""

from __future__ import annotations

import numpy as np

from vmcorepack.elfout import PFN_EXCLUDED, split_load
from vmcorepack.formats import elf

PS = 4096


def phdr(paddr: int, memsz: int, vaddr: int = 0xFFFF888000000000, offset: int = 0x1000) -> np.void:
    ph = np.zeros(1, elf.ELF64LE.phdr)
    ph["p_type"], ph["p_flags"], ph["p_offset"] = elf.PT_LOAD, 7, offset
    ph["p_vaddr"], ph["p_paddr"], ph["p_filesz"], ph["p_memsz"] = vaddr + paddr, paddr, memsz, memsz
    return ph[0]


def shape(loads: list) -> list[tuple[int, int, int, int, bool]]:
    return [(ld.p_paddr, ld.p_memsz, ld.p_filesz, ld.src_offset, ld.last) for ld in loads]


def test_short_runs_stay_long_runs_split_tail_dropped() -> None:
    n = 1000
    bits = np.ones(n, bool)
    bits[10:20] = False  # short: kept in the file
    bits[100 : 100 + PFN_EXCLUDED] = False  # long: split
    bits[900:] = False  # trailing: dropped whatever its length
    loads = split_load(phdr(0, n * PS), bits, PS)
    cut = 100 + PFN_EXCLUDED
    assert shape(loads) == [
        (0, cut * PS, 100 * PS, 0x1000, False),
        (cut * PS, (n - cut) * PS, (900 - cut) * PS, 0x1000 + cut * PS, True),
    ]
    assert loads[1].p_vaddr == 0xFFFF888000000000 + cut * PS


def test_run_of_255_does_not_split() -> None:
    bits = np.ones(600, bool)
    bits[1 : 1 + PFN_EXCLUDED - 1] = False
    assert len(split_load(phdr(0, 600 * PS), bits, PS)) == 1


def test_leading_run_gives_a_dataless_piece() -> None:
    bits = np.ones(400, bool)
    bits[:300] = False
    loads = split_load(phdr(0x100000, 400 * PS), bits, PS)
    assert shape(loads) == [
        (0x100000, 300 * PS, 0, 0x1000, False),
        (0x100000 + 300 * PS, 100 * PS, 100 * PS, 0x1000 + 300 * PS, True),
    ]


def test_all_excluded_is_one_dataless_load() -> None:
    loads = split_load(phdr(0, 50 * PS), np.zeros(50, bool), PS)
    assert shape(loads) == [(0, 50 * PS, 0, 0x1000, True)]


def test_partial_head_always_kept_partial_tail_looked_up() -> None:
    # A PT_LOAD starting and ending inside pages.
    paddr, memsz = 0xC00, 3 * PS  # head 0x400 bytes, 2 whole pages, tail 0xc00 bytes
    bits = np.array([True, True, False])  # pfns 1, 2 and the partial pfn 3
    loads = split_load(phdr(paddr, memsz), bits, PS)
    assert shape(loads) == [(paddr, memsz, 0x400 + 2 * PS, 0x1000, True)]
    bits = np.array([False, False, False])
    assert shape(split_load(phdr(paddr, memsz), bits, PS)) == [(paddr, memsz, 0x400, 0x1000, True)]


def test_failed_write_keeps_file_with_incomplete_flag(tmp_path, monkeypatch) -> None:
    import pytest

    from conftest import VECTORS
    from vmcorepack import elfout
    from vmcorepack.errors import IncompleteDumpError, OutputError
    from vmcorepack.sources import open_elf

    calls = []

    def failing_copy(out, src_fd, src_off, size, dst_off) -> None:
        calls.append(size)
        if len(calls) > 1:
            raise OutputError(out.path, "write failed: No space left on device")
        out.pwrite(b"\x01" * size, dst_off)

    monkeypatch.setattr(elfout, "_copy", failing_copy)
    out = tmp_path / "cut.elf"
    with open_elf(str(VECTORS / "filt.vmcore")) as src, pytest.raises(IncompleteDumpError, match="incomplete"):
        elfout.pack_elf(src, str(out), 31)
    head = out.read_bytes()[:64]
    assert head[:4] == b"\x7fELF"
    assert int.from_bytes(head[48:52], "little") & 1  # e_flags bit 0
