"""x86_64 page-table walk on synthetic page tables (docs/kdump-format.md §9.5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimage import PAGE_OFFSET, PS, KImage
from vmcorepack.errors import KernelMemoryError, VmcoreinfoError
from vmcorepack.kernel.arch.x86_64 import START_KERNEL_MAP, PageTableWalker
from vmcorepack.kernel.walk import PhysRun, read_utsname

VMEMMAP = 0xFFFF_EA00_0000_0000


@pytest.mark.parametrize("five", [False, True], ids=["4level", "5level"])
def test_4k_2m_1g_pages(tmp_path: Path, five: bool) -> None:
    img = KImage(1024, five_level=five)
    img.map(PAGE_OFFSET, 0, 1 << 30, 1 << 30)
    img.map(VMEMMAP, 0x5000, 3 * PS)
    img.map(VMEMMAP + (1 << 21), 0x200000, 1 << 21, 1 << 21)
    w = PageTableWalker(img.write(tmp_path))
    assert w.five_level is five
    assert w.vtop(PAGE_OFFSET + 0x12345) == 0x12345
    assert w.vtop(VMEMMAP + PS + 7) == 0x6007
    assert w.vtop(VMEMMAP + (1 << 21) + 0x1234) == 0x201234


def test_runs_merge_contiguous_and_split(tmp_path: Path) -> None:
    img = KImage(256)
    img.map(VMEMMAP, 0x10000, 2 * PS)
    img.map(VMEMMAP + 2 * PS, 0x40000, PS)
    w = PageTableWalker(img.write(tmp_path))
    assert w.runs(VMEMMAP + 8, 3 * PS - 16) == [
        PhysRun(VMEMMAP + 8, 0x10008, 2 * PS - 8),
        PhysRun(VMEMMAP + 2 * PS, 0x40000, PS - 8),
    ]


def test_read_and_utsname(tmp_path: Path) -> None:
    img = KImage(256)
    img.map(START_KERNEL_MAP, 0, 1 << 21, 1 << 21)
    fields = [b"Linux", b"host", b"6.1.0", b"#1 SMP", b"x86_64", b"(none)"]
    img.put(0x3000, b"".join(f.ljust(65, b"\0") for f in fields))
    img.vmcoreinfo["SYMBOL(init_uts_ns)"] = f"{START_KERNEL_MAP + 0x3000:x}"
    img.vmcoreinfo["OFFSET(uts_namespace.name)"] = "0"
    uts = read_utsname(PageTableWalker(img.write(tmp_path)))
    assert list(uts.values()) == fields


def test_utsname_default_offset_is_sizeof_int(tmp_path: Path) -> None:
    img = KImage(256)
    img.map(START_KERNEL_MAP, 0, 1 << 21, 1 << 21)
    img.put(0x3004, b"Linux")
    img.vmcoreinfo["SYMBOL(init_uts_ns)"] = f"{START_KERNEL_MAP + 0x3000:x}"
    assert read_utsname(PageTableWalker(img.write(tmp_path)))["sysname"] == b"Linux"


def test_sme_mask_is_stripped(tmp_path: Path) -> None:
    sme = 1 << 47
    img = KImage(256)
    img.map(PAGE_OFFSET, 0x8000 | sme, PS)
    # Table pointers carry the encryption bit too.
    idx = (PAGE_OFFSET >> 39) & 511
    pud = int.from_bytes(img.mem[img.top + idx * 8 : img.top + idx * 8 + 8].tobytes(), "little")
    img.u64(img.top + idx * 8, pud | sme)
    img.vmcoreinfo["NUMBER(sme_mask)"] = str(sme)
    src = img.write(tmp_path)
    w = PageTableWalker(src)
    assert w.vtop(PAGE_OFFSET + 5) == 0x8005


def test_phys_base_and_old_symbol(tmp_path: Path) -> None:
    img = KImage(256)
    img.map(PAGE_OFFSET, 0x7000, PS)
    top = img.vmcoreinfo.pop("SYMBOL(init_top_pgt)")
    img.vmcoreinfo["SYMBOL(init_level4_pgt)"] = f"{int(top, 16) - 0x1000:x}"
    img.vmcoreinfo["NUMBER(phys_base)"] = "4096"
    assert PageTableWalker(img.write(tmp_path)).vtop(PAGE_OFFSET) == 0x7000


def test_unmapped_and_outside_memory(tmp_path: Path) -> None:
    img = KImage(64)
    img.map(PAGE_OFFSET, 0, PS)
    # A PUD entry pointing far outside the image.
    img.u64(img.top + 8, 0x7_0000_0000 | 3)
    w = PageTableWalker(img.write(tmp_path))
    with pytest.raises(KernelMemoryError, match="not mapped"):
        w.vtop(PAGE_OFFSET + PS)
    with pytest.raises(KernelMemoryError, match=r"0x700000000"):
        w.vtop(1 << 39)


def test_self_referencing_table_terminates(tmp_path: Path) -> None:
    img = KImage(64)
    # PGD entry 0 points back at the PGD itself: a loop in the tables.
    img.u64(img.top, img.top | 3)
    w = PageTableWalker(img.write(tmp_path))
    with pytest.raises(KernelMemoryError):
        w.runs(0x1000, 1 << 22)


def test_no_top_symbol(tmp_path: Path) -> None:
    img = KImage(16)
    del img.vmcoreinfo["SYMBOL(init_top_pgt)"]
    with pytest.raises(VmcoreinfoError) as e:
        PageTableWalker(img.write(tmp_path))
    assert e.value.key == "SYMBOL(init_top_pgt)"
