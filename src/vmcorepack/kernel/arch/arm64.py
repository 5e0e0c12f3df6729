"""arm64: the kernel's address layout, relocation and page-table walk, as makedumpfile's arch/arm64.c reads them.

Everything comes from VMCOREINFO (arch/arm64/kernel/vmcore_info.c):
``NUMBER(VA_BITS)`` (the kernel's configured VA size), ``NUMBER(TCR_EL1_T1SZ)``
(5.9+: the VA size the hardware gave it, ``vabits_actual``),
``NUMBER(kimage_voffset)`` (kernel image VA - PA), ``NUMBER(PHYS_OFFSET)``
(start of RAM, the sub header's ``phys_base``), ``NUMBER(MAX_PHYSMEM_BITS)``
and ``SYMBOL(_stext)`` (whose place tells the flipped layout of 5.4+, with
the linear map at the bottom of the kernel half), ``SYMBOL(swapper_pg_dir)``.
Every kernel virtual address is translated by walking the tables from
swapper_pg_dir, as ``vaddr_to_paddr_arm64`` does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vmcorepack.errors import VmcoreinfoError
from vmcorepack.kernel.walk import TableWalker
from vmcorepack.sources import Source
from vmcorepack.vmcoreinfo import VmcoreInfo

_U64 = (1 << 64) - 1
#: Translation levels by (page size, vabits_actual), as arch/arm64/Kconfig
#: derives ``PGTABLE_LEVELS`` (makedumpfile ``calculate_plat_config``).
LEVELS = {
    (4096, 39): 3,
    (4096, 48): 4,
    (4096, 52): 5,
    (16384, 36): 2,
    (16384, 47): 3,
    (16384, 48): 4,
    (16384, 52): 4,
    (65536, 42): 2,
    (65536, 48): 3,
    (65536, 52): 3,
}
#: makedumpfile's ``SECTIONS_SIZE_BITS`` for kernels whose VMCOREINFO lacks
#: ``NUMBER(SECTION_SIZE_BITS)``.
SECTION_SIZE_BITS = 30
#: makedumpfile's guesses of ``VA_BITS`` from where ``_stext`` lies, widest first.
_STEXT_VA_BITS = (48, 47, 42, 39, 36)


class Layout(NamedTuple):
    """The address layout of one arm64 kernel.

    Attributes:
        page_size: Granule (4K, 16K or 64K).
        va_bits: ``VA_BITS`` the kernel was built with.
        vabits_actual: VA bits it runs with (less than ``va_bits`` when the
            hardware lacks 52-bit VAs).
        flipped: The 5.4+ layout: linear map in the lower half of kernel space.
        page_offset: Start of the linear map.
        kimage_voffset: Kernel image VA - PA, or None (kernels before 4.6).
        phys_offset: Start of RAM, or None when VMCOREINFO lacks it.
        max_physmem_bits: Physical address bits (52: addresses carry high bits in the entries).
        levels: Translation levels.
    """

    page_size: int
    va_bits: int
    vabits_actual: int
    flipped: bool
    page_offset: int
    kimage_voffset: int | None
    phys_offset: int | None
    max_physmem_bits: int
    levels: int

    @classmethod
    def from_vmcoreinfo(cls, vi: VmcoreInfo, page_size: int, path: str) -> Layout:
        """Work the layout out as makedumpfile's ``get_versiondep_info_arm64`` and ``get_machdep_info_arm64`` do.

        Args:
            vi: The dump's VMCOREINFO.
            page_size: The dump's page size.
            path: The dump, for messages.

        Returns:
            The layout.

        Raises:
            VmcoreinfoError: No way to know VA_BITS, or a page size and VA
                size no arm64 kernel combines.
        """
        stext = vi.symbol("_stext")
        va_bits = vi.number("VA_BITS")
        if va_bits is None:
            # Kernels before 4.12 (?) exported no VA_BITS: the top bits of _stext tell.
            va_bits = next((b for b in _STEXT_VA_BITS if stext is not None and stext >> b == _U64 >> b), None)
            if va_bits is None:
                raise VmcoreinfoError("NUMBER(VA_BITS)", f"{path}: VMCOREINFO has neither NUMBER(VA_BITS) nor _stext")
        t1sz = vi.number("TCR_EL1_T1SZ")
        if t1sz is None:
            t1sz = vi.number("tcr_el1_t1sz")
        mem_section = vi.symbol("mem_section")
        if t1sz is not None:
            vabits_actual = 64 - t1sz
        elif va_bits == 52 and mem_section is not None:
            # 5.4-5.10: mem_section (SPARSEMEM_EXTREME) lies in the linear map,
            # whose place tells whether the hardware gave 48 or 52 bits.
            vabits_actual = 48 if mem_section & (1 << (va_bits - 1)) else 52
        else:
            vabits_actual = va_bits
        # Checked before any shift by them: a hostile note must not raise ValueError.
        if not 36 <= va_bits <= 52:
            raise VmcoreinfoError("NUMBER(VA_BITS)", f"{path}: VMCOREINFO VA_BITS={va_bits} is no arm64 VA size")
        levels = LEVELS.get((page_size, vabits_actual))
        if levels is None:
            raise VmcoreinfoError(
                "NUMBER(VA_BITS)", f"{path}: page size {page_size} with {vabits_actual}-bit VAs is no arm64 layout"
            )
        # get_page_offset_arm64: _stext above the old layout's linear map end
        # means the flipped layout.
        page_end = -(1 << (min(va_bits, 48) - 1)) & _U64
        flipped = stext is not None and stext > page_end
        page_offset = (-(1 << vabits_actual) if flipped else -(1 << (vabits_actual - 1))) & _U64
        physmem = vi.number("MAX_PHYSMEM_BITS") or (52 if va_bits == 52 else 48)
        voff = vi.number("kimage_voffset")
        phys = vi.number("PHYS_OFFSET")
        return cls(
            page_size,
            va_bits,
            vabits_actual,
            flipped,
            page_offset,
            None if voff is None else voff & _U64,
            None if phys is None else phys & _U64,
            physmem,
            levels,
        )

    def is_linear(self, vaddr: int) -> bool:
        """Tell whether ``vaddr`` is in the linear map (makedumpfile ``is_linear_addr``)."""
        top = bool(vaddr & (1 << (self.vabits_actual - 1)))
        return not top if self.flipped else top

    def level_shift(self, n: int) -> int:
        """Return ``ARM64_HW_PGTABLE_LEVEL_SHIFT(n)``: the bytes an entry of level ``n`` maps (as a shift)."""
        page_shift = self.page_size.bit_length() - 1
        return (page_shift - 3) * (4 - n) + 3

    @property
    def shifts(self) -> tuple[int, ...]:
        """Address shift of each level, top first (levels ``4 - levels`` .. 3)."""
        return tuple(self.level_shift(n) for n in range(4 - self.levels, 4))

    @property
    def kernel_space_start(self) -> int:
        """Lowest kernel virtual address (makedumpfile ``get_kvbase_arm64``)."""
        return self.page_offset if self.flipped else (_U64 << self.va_bits) & _U64


def phys_base(source: Source) -> int:
    """Return the start of RAM, for the sub header's ``phys_base`` (makedumpfile ``get_phys_base_arm64``).

    A kdump input records it; otherwise ``NUMBER(PHYS_OFFSET)``, else the
    first PT_LOAD in the linear map.

    Args:
        source: The dump.

    Returns:
        phys_base.

    Raises:
        VmcoreinfoError: None of these tell it.
    """
    if source.recorded_phys_base is not None:
        return source.recorded_phys_base
    layout = _layout(source)
    if layout.phys_offset is not None:
        return layout.phys_offset
    for seg in source.segments:
        virt = int(seg["virt_start"])
        if virt >= layout.page_offset:
            return (int(seg["phys_start"]) - (virt & ~layout.page_offset)) & _U64
    raise VmcoreinfoError("NUMBER(PHYS_OFFSET)", f"{source.path}: cannot determine phys_base")


def _layout(source: Source) -> Layout:
    vi = source.vmcoreinfo
    if vi is None:
        raise VmcoreinfoError("*", f"{source.path}: an arm64 dump needs VMCOREINFO to be read")
    return Layout.from_vmcoreinfo(vi, source.page_size, source.path)


class PageTableWalker(TableWalker):
    """Translates arm64 kernel virtual addresses of a dump.

    Attributes:
        layout: The kernel's address layout.
        kernel_space_start: Lowest kernel virtual address.
        section_size_bits: ``SECTION_SIZE_BITS`` when VMCOREINFO lacks it.
        max_physmem_bits: ``MAX_PHYSMEM_BITS`` (VMCOREINFO's or the guess).
    """

    def __init__(self, source: Source) -> None:
        """Prepare the walk from VMCOREINFO.

        Args:
            source: The dump.

        Raises:
            VmcoreinfoError: No ``SYMBOL(swapper_pg_dir)``, or no usable layout.
        """
        layout = _layout(source)
        swapper = source.vmcoreinfo.symbol("swapper_pg_dir") if source.vmcoreinfo else None
        if swapper is None:
            raise VmcoreinfoError("SYMBOL(swapper_pg_dir)")
        self.layout = layout
        self.kernel_space_start = layout.kernel_space_start
        self.section_size_bits = SECTION_SIZE_BITS
        self.max_physmem_bits = layout.max_physmem_bits
        shifts = layout.shifts
        super().__init__(source, self._pa(swapper, source), shifts, 1 << (layout.vabits_actual - shifts[0]))
        page_shift = shifts[-1]
        if layout.max_physmem_bits < 52:
            low_bits, self._high_mask, self._high_shift = 48, 0, 0
        elif layout.page_size == 65536:
            # FEAT_LPA with 64K pages: PA[51:48] in entry bits [15:12].
            low_bits, self._high_mask, self._high_shift = 48, 0xF << 12, 36
        else:
            # FEAT_LPA2 with 4K/16K pages: PA[51:50] in entry bits [9:8]
            # (arch/arm64/include/asm/pgtable.h; makedumpfile applies the 64K
            # encoding here, which no LPA2 kernel writes).
            low_bits, self._high_mask, self._high_shift = 50, 0x3 << 8, 42
        self._low_mask = ((1 << (low_bits - page_shift)) - 1) << page_shift
        self._block_shifts = {layout.level_shift(1), layout.level_shift(2)}

    def _pa(self, vaddr: int, source: Source) -> int:
        # makedumpfile __pa(): the linear map by PAGE_OFFSET, the kernel image by kimage_voffset.
        lay = self.layout
        if lay.kimage_voffset is None or lay.is_linear(vaddr):
            return ((vaddr & ~lay.page_offset) + phys_base(source)) & _U64
        return (vaddr - lay.kimage_voffset) & _U64

    def _phys(self, entries: np.ndarray) -> np.ndarray:
        low: np.ndarray = entries & np.uint64(self._low_mask)
        if not self._high_mask:
            return low
        high: np.ndarray = (entries & np.uint64(self._high_mask)) << np.uint64(self._high_shift)
        both: np.ndarray = low | high
        return both

    def _is_block(self, entry: int, shift: int) -> bool:
        # A level 1 (PUD) or 2 (PMD) descriptor of type 0b01 maps a block.
        return shift in self._block_shifts and entry & 3 == 1


def has_page_tables(vi: VmcoreInfo) -> bool:
    """Tell whether VMCOREINFO names the kernel's top page table.

    Args:
        vi: The dump's VMCOREINFO.

    Returns:
        True when ``SYMBOL(swapper_pg_dir)`` is there.
    """
    return vi.symbol("swapper_pg_dir") is not None


#: The seam's entry (kernel.arch.Machine): ``walker(source)`` makes the walk.
walker = PageTableWalker
