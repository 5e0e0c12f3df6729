"""Locating and reading struct page (docs/kdump-format.md §9.4, §17.1.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kimage import PAGE_FIELDS, PAGE_OFFSET, PS, STRUCT_PAGE, KImage, finish_flatmem, flatmem_image
from vmcorepack.errors import KernelMemoryError, VmcoreinfoError
from vmcorepack.kernel.memmap import MemMap, MemMapRange, PageLayout, _batch_reads
from vmcorepack.vmcoreinfo import VmcoreInfo

VMEMMAP = 0xFFFF_EA00_0000_0000
SECTION_BITS = 22  # 4 MiB sections: 1024 pfns each


def sparse_image(tmp: Path, extreme: bool, via_pointer: bool = False) -> tuple[KImage, MemMap]:
    """4 sections of 1024 pfns; section 2 absent; vmemmap struct pages mapped 4K by 4K."""
    pages = 4096
    img = KImage(pages)
    img.map(PAGE_OFFSET, 0, pages * PS, 1 << 21)
    sec_size = 16
    # vmemmap: 1024 pfns * 64 bytes = 16 pages per section, backed at pa 0x100000 + ...
    for nr in (0, 1, 3):
        img.map(VMEMMAP + nr * 1024 * 64, 0x100000 + nr * 0x10000, 1024 * 64)
    coded = {nr: (VMEMMAP | 0x3) for nr in (0, 1, 3)}  # mem_map - start_pfn*64 = VMEMMAP (present + online bits)
    sections = PAGE_OFFSET + 0x3000
    for nr, c in coded.items():
        img.u64(0x3000 + nr * sec_size, c)
    img.u64(0x3000 + 2 * sec_size, 0x4)  # not present
    sym = sections
    if extreme:
        # One root (256 sections per 4 KiB root) at 0x4000 pointing to the sections.
        img.u64(0x4000, sections)
        sym = PAGE_OFFSET + 0x4000
        if via_pointer:
            img.u64(0x5000, PAGE_OFFSET + 0x4000)
            sym = PAGE_OFFSET + 0x5000
    nr_mem_sections = 1 << (46 - SECTION_BITS)
    img.vmcoreinfo.update(
        {
            "SYMBOL(mem_section)": f"{sym:x}",
            "SIZE(mem_section)": str(sec_size),
            "OFFSET(mem_section.section_mem_map)": "0",
            "NUMBER(SECTION_SIZE_BITS)": str(SECTION_BITS),
            "NUMBER(MAX_PHYSMEM_BITS)": "46",
            "LENGTH(mem_section)": str(nr_mem_sections // 256 if extreme else nr_mem_sections),
            "SIZE(page)": "64",
            **{f"OFFSET(page.{k})": str(v) for k, v in PAGE_FIELDS.items()},
        }
    )
    sp = np.zeros(1024, STRUCT_PAGE)
    sp["flags"] = np.arange(1024)
    for nr in (0, 1, 3):
        sp["mapping"] = nr
        img.put(0x100000 + nr * 0x10000, sp.tobytes())
    return img, MemMap(img.write(tmp))


@pytest.mark.parametrize(
    ("extreme", "via_pointer", "model"),
    [(True, False, "SPARSEMEM_EX"), (True, True, "SPARSEMEM_EX"), (False, False, "SPARSEMEM")],
    ids=["extreme", "extreme-pointer-retry", "classic"],
)
def test_sparsemem_sections(tmp_path: Path, extreme: bool, via_pointer: bool, model: str) -> None:
    _, mm = sparse_image(tmp_path, extreme, via_pointer)
    assert mm.model == model
    assert mm.ranges == [
        MemMapRange(0, 1024, VMEMMAP),
        MemMapRange(1024, 2048, VMEMMAP + 1024 * 64),
        MemMapRange(3072, 4096, VMEMMAP + 3072 * 64),
    ]
    rng = mm.ranges[2]
    pages = mm.read_pages(rng, 3072, 4096, np.ones(1024, bool))
    assert pages.flags.tolist() == list(range(1024))
    assert set(pages.mapping.tolist()) == {3}


def test_flatmem_and_batches(tmp_path: Path) -> None:
    img, sp, mm_pa = flatmem_image(tmp_path, 2048)
    sp["flags"] = np.arange(2048) + 1
    mm = MemMap(finish_flatmem(img, sp, mm_pa, tmp_path))
    assert mm.model == "FLATMEM"
    assert mm.ranges == [MemMapRange(0, 2048, 0xFFFFFFFF80000000 + mm_pa)]
    examined = np.zeros(2048, bool)
    examined[[3, 600, 1500]] = True
    pages = mm.read_pages(mm.ranges[0], 0, 2048, examined)
    # Batches read from the first examined pfn to the batch end.
    assert pages.read.nonzero()[0].min() == 3
    assert not pages.read[:3].any() and pages.read[3:512].all()
    assert not pages.read[512:600].any() and pages.read[600:1024].all()
    assert pages.read[1500:1536].all() and not pages.read[1024:1500].any() and not pages.read[1536:].any()
    assert pages.flags[600] == 601 and pages.flags[599] == 0
    # A first tail is only usable within the same batch.
    assert pages.tail_ok[510] and not pages.tail_ok[511] and not pages.tail_ok[2047]


def test_batch_reads_merge_and_stop_at_scan_end() -> None:
    ex = np.zeros(1300, bool)
    ex[[0, 412, 1100]] = True  # pfns 100, 512 and 1200
    assert _batch_reads(100, 1400, ex) == [(100, 1024), (1200, 1400)]


def test_unreadable_struct_page_is_an_error(tmp_path: Path) -> None:
    img, sp, mm_pa = flatmem_image(tmp_path, 2048)
    img.u64(0x2000, 0xFFFFFFFF80000000 + (16 << 20))  # mem_map beyond the mapped 4 MiB
    mm = MemMap(finish_flatmem(img, sp, mm_pa, tmp_path))
    with pytest.raises(KernelMemoryError, match="cannot read struct page"):
        mm.read_pages(mm.ranges[0], 0, 2048, np.ones(2048, bool))


def test_layout_requires_the_four_keys() -> None:
    vi = VmcoreInfo.parse(b"SIZE(page)=64\nOFFSET(page.flags)=0\nOFFSET(page.mapping)=24\n")
    with pytest.raises(VmcoreinfoError) as e:
        PageLayout.from_vmcoreinfo(vi)
    assert e.value.key == "OFFSET(page._refcount)"


def test_layout_folio_offsets() -> None:
    vi = VmcoreInfo.parse(
        b"OSRELEASE=6.5.0\nSIZE(page)=64\nOFFSET(page.flags)=0\nOFFSET(page._refcount)=52\n"
        b"OFFSET(page.mapping)=24\nOFFSET(folio._folio_order)=81\nOFFSET(folio._folio_dtor)=80\n"
    )
    lay = PageLayout.from_vmcoreinfo(vi)
    assert lay.dtype.fields is not None
    assert lay.dtype.fields["order"][1] == 17 and lay.dtype.fields["dtor"][1] == 16
