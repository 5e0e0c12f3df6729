"""arm64 layout and page-table walk on synthetic tables (makedumpfile arch/arm64.c)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from armimage import LEVELS, ArmImage
from vmcorepack.errors import KernelMemoryError, VmcoreinfoError
from vmcorepack.kernel.arch import arm64
from vmcorepack.kernel.walk import PhysRun, read_utsname
from vmcorepack.vmcoreinfo import VmcoreInfo

CONFIGS = sorted((ps, va) for ps, va in LEVELS if not (ps == 4096 and va == 52))


@pytest.mark.parametrize(("ps", "va"), CONFIGS, ids=[f"{ps // 1024}K-{va}" for ps, va in CONFIGS])
def test_pages_and_blocks_every_granule(tmp_path: Path, ps: int, va: int) -> None:
    img = ArmImage(64, page_size=ps, va_bits=va)
    lin = img.page_offset
    img.map(lin + 5 * ps, img.phys_offset + 9 * ps, 2 * ps)
    w = arm64.PageTableWalker(img.write(tmp_path))
    assert w.layout.levels == img.levels
    assert w.layout.flipped and w.layout.page_offset == img.page_offset
    assert w.vtop(lin + 5 * ps + 17) == img.phys_offset + 9 * ps + 17
    assert w.vtop(lin + 6 * ps) == img.phys_offset + 10 * ps
    with pytest.raises(KernelMemoryError, match="not mapped"):
        w.vtop(lin + 7 * ps)


@pytest.mark.parametrize("level", [1, 2])
def test_block_descriptors(tmp_path: Path, level: int) -> None:
    img = ArmImage(64, page_size=4096, va_bits=48)
    size = 1 << img.level_shift(level)
    va = img.page_offset + 3 * size
    img.map(va, 0x8000_0000 if level == 1 else 0x4020_0000, size, level)
    w = arm64.PageTableWalker(img.write(tmp_path))
    base = 0x8000_0000 if level == 1 else 0x4020_0000
    assert w.vtop(va + 0x12345) == base + 0x12345
    assert w.runs(va + 8, 64) == [PhysRun(va + 8, base + 8, 64)]


def test_five_levels_4k_52(tmp_path: Path) -> None:
    img = ArmImage(64, page_size=4096, va_bits=52)
    assert img.levels == 5
    img.map(img.page_offset + (7 << 48), img.phys_offset + 3 * 4096, 4096)
    w = arm64.PageTableWalker(img.write(tmp_path))
    assert w.layout.shifts == (48, 39, 30, 21, 12)
    assert w.vtop(img.page_offset + (7 << 48) + 5) == img.phys_offset + 3 * 4096 + 5


def test_vabits_actual_smaller_than_va_bits(tmp_path: Path) -> None:
    """A 52-bit kernel on 48-bit hardware: four levels from TCR_EL1.T1SZ, not five."""
    img = ArmImage(64, page_size=4096, va_bits=52, vabits_actual=48)
    img.map(img.page_offset, img.phys_offset + 4096, 4096)
    w = arm64.PageTableWalker(img.write(tmp_path))
    assert (w.layout.va_bits, w.layout.vabits_actual, w.layout.levels) == (52, 48, 4)
    assert w.vtop(img.page_offset) == img.phys_offset + 4096


def test_old_layout_and_swapper_through_linear_map(tmp_path: Path) -> None:
    """Before 5.4 the linear map was the upper half; without kimage_voffset swapper_pg_dir is read as linear."""
    img = ArmImage(64, page_size=65536, va_bits=48, flipped=False)
    del img.vmcoreinfo["NUMBER(kimage_voffset)"]
    img.vmcoreinfo["SYMBOL(swapper_pg_dir)"] = f"{img.page_offset + (img.pgd - img.phys_offset):x}"
    img.map(img.page_offset + 0x30000, img.phys_offset + 0x50000, 0x10000)
    w = arm64.PageTableWalker(img.write(tmp_path))
    assert not w.layout.flipped
    assert w.layout.kernel_space_start == 0xFFFF_0000_0000_0000
    assert w.vtop(img.page_offset + 0x30008) == img.phys_offset + 0x50008


def test_runs_split_where_physical_pages_do(tmp_path: Path) -> None:
    img = ArmImage(64, page_size=16384, va_bits=47)
    v = img.page_offset
    img.map(v, img.phys_offset + 2 * 16384, 2 * 16384)
    img.map(v + 2 * 16384, img.phys_offset + 10 * 16384, 16384)
    w = arm64.PageTableWalker(img.write(tmp_path))
    assert w.runs(v + 8, 3 * 16384 - 16) == [
        PhysRun(v + 8, img.phys_offset + 2 * 16384 + 8, 2 * 16384 - 8),
        PhysRun(v + 2 * 16384, img.phys_offset + 10 * 16384, 16384 - 8),
    ]


def test_utsname_through_the_kernel_image(tmp_path: Path) -> None:
    img = ArmImage(64)
    img.map(img.kimage_vaddr, img.kernel_pa, 1 << 21, level=2)
    fields = [b"Linux", b"arm", b"6.1.0-30-arm64", b"#1 SMP", b"aarch64", b"(none)"]
    off = img.kernel_pa + 0x3000 - img.phys_offset
    img.mem[off : off + 390] = np.frombuffer(b"".join(f.ljust(65, b"\0") for f in fields), np.uint8)
    img.vmcoreinfo["SYMBOL(init_uts_ns)"] = f"{img.kimage_vaddr + 0x3000 - 4:x}"
    assert list(read_utsname(arm64.PageTableWalker(img.write(tmp_path))).values()) == fields


@pytest.mark.parametrize(
    ("ps", "physmem", "entry", "pa"),
    [
        (65536, 52, 0x0000_1234_5678_0000 | (0xA << 12) | 3, 0x000A_1234_5678_0000),  # FEAT_LPA: PA[51:48] at [15:12]
        (4096, 52, 0x0003_1234_5678_9000 | (0x2 << 8) | 3, 0x000B_1234_5678_9000),  # FEAT_LPA2: PA[51:50] at [9:8]
        (4096, 48, 0x0000_8234_5678_9000 | (0x2 << 8) | 3, 0x0000_8234_5678_9000),
    ],
)
def test_52_bit_physical_addresses(tmp_path: Path, ps: int, physmem: int, entry: int, pa: int) -> None:
    img = ArmImage(16, page_size=ps, va_bits=48 if ps == 4096 else 52)
    img.vmcoreinfo["NUMBER(MAX_PHYSMEM_BITS)"] = str(physmem)
    w = arm64.PageTableWalker(img.write(tmp_path))
    assert int(w._phys(np.asarray(entry, np.uint64))) == pa


def test_phys_base_from_vmcoreinfo_else_pt_load(tmp_path: Path) -> None:
    img = ArmImage(16)
    src = img.write(tmp_path)
    assert arm64.phys_base(src) == img.phys_offset
    del img.vmcoreinfo["NUMBER(PHYS_OFFSET)"]
    src = img.write(tmp_path, "nophys")
    src.segments["virt_start"] = img.page_offset + 0x10000
    src.segments["phys_start"] = img.phys_offset + 0x10000
    assert arm64.phys_base(src) == img.phys_offset


def test_unknown_layout_and_missing_symbols(tmp_path: Path) -> None:
    img = ArmImage(16)
    img.vmcoreinfo["NUMBER(VA_BITS)"] = "40"
    with pytest.raises(VmcoreinfoError, match="no arm64 layout"):
        arm64.PageTableWalker(img.write(tmp_path))
    img = ArmImage(16)
    del img.vmcoreinfo["SYMBOL(swapper_pg_dir)"]
    with pytest.raises(VmcoreinfoError):
        arm64.PageTableWalker(img.write(tmp_path, "noswapper"))


@pytest.mark.parametrize(
    "keys",
    [
        "NUMBER(VA_BITS)=0",
        "NUMBER(VA_BITS)=-3",
        "NUMBER(VA_BITS)=100000",
        "NUMBER(VA_BITS)=48\nNUMBER(TCR_EL1_T1SZ)=70",
    ],
)
def test_hostile_va_sizes_are_vmcoreinfo_errors(keys: str) -> None:
    """Garbage VA sizes end in VmcoreinfoError (one line for the CLI), never a ValueError from a shift."""
    vi = VmcoreInfo.parse(f"SYMBOL(_stext)=ffff800008010000\n{keys}\n".encode())
    with pytest.raises(VmcoreinfoError):
        arm64.Layout.from_vmcoreinfo(vi, 4096, "<test>")
