"""Tiny synthetic arm64 kernel images for the arm64 walk's unit tests.

Physical memory starts at ``phys_offset`` (QEMU virt's 0x40000000 by default)
and is opened as a raw image with VMCOREINFO beside it.  Descriptors follow
the Arm ARM: 0b11 at levels 0-2 points at a table, 0b01 at levels 1-2 maps a
block, 0b11 at level 3 maps a page.  The builder is written from the
architecture, not from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vmcorepack import sources

LEVELS = {(4096, 39): 3, (4096, 48): 4, (4096, 52): 5, (16384, 36): 2, (16384, 47): 3, (16384, 48): 4}
LEVELS |= {(16384, 52): 4, (65536, 42): 2, (65536, 48): 3, (65536, 52): 3}


class ArmImage:
    """arm64 physical memory under construction, with its page tables."""

    def __init__(
        self,
        pages: int,
        page_size: int = 4096,
        va_bits: int = 48,
        vabits_actual: int | None = None,
        flipped: bool = True,
        phys_offset: int = 0x4000_0000,
    ) -> None:
        self.ps = page_size
        self.shift = page_size.bit_length() - 1
        self.va = vabits_actual or va_bits
        self.levels = LEVELS[(page_size, self.va)]
        self.phys_offset = phys_offset
        self.mem = np.zeros(pages * page_size, np.uint8)
        self.next_table = phys_offset + (pages - 1) * page_size
        self.pgd = self.alloc_table()
        # The linear map and the kernel image, as arch/arm64/include/asm/memory.h places them
        # (since 5.4 the image sits above _PAGE_END(VA_BITS_MIN), VA_BITS_MIN being at most 48).
        if flipped:
            self.page_offset = (-(1 << self.va)) & (2**64 - 1)
            self.kimage_vaddr = (-(1 << (min(va_bits, 48) - 1))) & (2**64 - 1) | 0x8000000
        else:
            self.page_offset = (-(1 << (self.va - 1))) & (2**64 - 1)
            self.kimage_vaddr = (-(1 << va_bits)) & (2**64 - 1) | 0x8000000
        self.kernel_pa = phys_offset  # the image at the start of RAM
        self.kimage_voffset = self.kimage_vaddr - self.kernel_pa
        self.vmcoreinfo: dict[str, str] = {
            "OSRELEASE": "6.1.0",
            "PAGESIZE": str(page_size),
            "NUMBER(VA_BITS)": str(va_bits),
            "NUMBER(kimage_voffset)": f"{self.kimage_voffset:#x}",
            "NUMBER(PHYS_OFFSET)": f"{phys_offset:#x}",
            "SYMBOL(_stext)": f"{self.kimage_vaddr + 0x10000:x}",
            "SYMBOL(swapper_pg_dir)": f"{self.kimage_voffset + self.pgd:x}",
        }
        if vabits_actual is not None:
            self.vmcoreinfo["NUMBER(TCR_EL1_T1SZ)"] = str(64 - vabits_actual)

    def level_shift(self, n: int) -> int:
        return (self.shift - 3) * (4 - n) + 3

    def u64(self, pa: int, value: int) -> None:
        off = pa - self.phys_offset
        self.mem[off : off + 8] = np.frombuffer((value & (2**64 - 1)).to_bytes(8, "little"), np.uint8)

    def entry(self, pa: int) -> int:
        off = pa - self.phys_offset
        return int.from_bytes(self.mem[off : off + 8].tobytes(), "little")

    def alloc_table(self) -> int:
        pa = self.next_table
        self.next_table -= self.ps
        return pa

    def map(self, va: int, pa: int, size: int, level: int = 3) -> None:
        """Map ``[va, va+size)`` to ``pa`` with level-``level`` descriptors (3: pages, 2 or 1: blocks)."""
        step = 1 << self.level_shift(level)
        first = 4 - self.levels
        for off in range(0, size, step):
            v, p = va + off, pa + off
            table = self.pgd
            for n in range(first, level + 1):
                shift = self.level_shift(n)
                bits = (self.va - shift) if n == first else (self.shift - 3)
                slot = table + ((v >> shift) & ((1 << bits) - 1)) * 8
                if n == level:
                    self.u64(slot, p | (3 if level == 3 else 1))
                    break
                e = self.entry(slot)
                if not e & 1:
                    new = self.alloc_table()
                    self.u64(slot, new | 3)
                    e = new | 3
                table = e & ~(self.ps - 1) & ((1 << 48) - 1)

    def write(self, directory: Path, name: str = "img") -> sources.Source:
        raw = directory / f"{name}.raw"
        vi = directory / f"{name}.vmcoreinfo"
        raw.write_bytes(self.mem.tobytes())
        vi.write_text("".join(f"{k}={v}\n" for k, v in self.vmcoreinfo.items()))
        return sources.open_raw(str(raw), self.phys_offset, self.ps, str(vi))
