"""x86-64: the kernel's address layout, relocation and page-table walk.

makedumpfile translates every kernel virtual address it needs (kernel text,
direct map, vmemmap) with the same walk from ``init_top_pgt``
(``vtop4_x86_64`` / ``vtop5_x86_64``; docs/kdump-format.md §9.5).
"""

from __future__ import annotations

import numpy as np

from vmcorepack.errors import VmcoreinfoError
from vmcorepack.kernel.walk import TableWalker
from vmcorepack.sources import Source
from vmcorepack.vmcoreinfo import VmcoreInfo

#: Start of the kernel text mapping (``__START_KERNEL_map``).
START_KERNEL_MAP = 0xFFFFFFFF80000000
#: Lowest kernel virtual address (start of the kernel half) with 4-level
#: paging, and with 5-level paging, where the direct map starts at
#: 0xff11000000000000 (Documentation/arch/x86/x86_64/mm.rst).
KERNEL_SPACE_START = 0xFFFF_8000_0000_0000
KERNEL_SPACE_START_L5 = 0xFF00_0000_0000_0000
#: makedumpfile's ``_SECTION_SIZE_BITS`` and ``_MAX_PHYSMEM_BITS`` (4- and
#: 5-level paging) for kernels whose VMCOREINFO lacks them.
SECTION_SIZE_BITS = 27
MAX_PHYSMEM_BITS = (46, 52)

#: Physical address bits 12..51 of a page-table entry (``PHYSICAL_PAGE_MASK``).
ENTRY_ADDR_MASK = 0x000F_FFFF_FFFF_F000
_PSE = 0x80  # _PAGE_PSE: the PUD/PMD entry maps a 1 GiB / 2 MiB page
#: Tables of 512 entries: 9 bits of address per level above the 4 KiB page.
_SHIFTS_4 = (39, 30, 21, 12)
_SHIFTS_5 = (48, *_SHIFTS_4)


class PageTableWalker(TableWalker):
    """Translates x86_64 kernel virtual addresses of a dump.

    Attributes:
        source: The dump.
        top_phys: Physical address of the top-level table (PGD or PML5).
        five_level: Whether the kernel used 5-level paging.
        entry_mask: Address bits of an entry, without the SME encryption bit.
        kernel_space_start: Lowest kernel virtual address.
        section_size_bits: ``SECTION_SIZE_BITS`` when VMCOREINFO lacks it.
        max_physmem_bits: ``MAX_PHYSMEM_BITS`` when VMCOREINFO lacks it.
    """

    def __init__(self, source: Source) -> None:
        """Prepare the walk from VMCOREINFO.

        Args:
            source: The dump; must carry VMCOREINFO.

        Raises:
            VmcoreinfoError: No VMCOREINFO, or neither ``SYMBOL(init_top_pgt)``
                nor ``SYMBOL(init_level4_pgt)``.
        """
        vi = source.vmcoreinfo
        if vi is None:
            raise VmcoreinfoError("*", f"{source.path}: translating kernel addresses needs VMCOREINFO")
        top = vi.symbol("init_top_pgt")
        if top is None:
            # Kernels before 4.13 called it init_level4_pgt.
            top = vi.symbol("init_level4_pgt")
        if top is None:
            raise VmcoreinfoError("SYMBOL(init_top_pgt)")
        self.five_level = bool(vi.number("pgtable_l5_enabled") or 0)
        # The top table lives in the kernel image: __pa_symbol() arithmetic.
        top_phys = (top - START_KERNEL_MAP + phys_base(source)) & ((1 << 64) - 1)
        super().__init__(source, top_phys, _SHIFTS_5 if self.five_level else _SHIFTS_4, 512)
        self.kernel_space_start = KERNEL_SPACE_START_L5 if self.five_level else KERNEL_SPACE_START
        self.section_size_bits = SECTION_SIZE_BITS
        self.max_physmem_bits = MAX_PHYSMEM_BITS[self.five_level]
        sme = vi.number("sme_mask") or 0
        self.entry_mask = ENTRY_ADDR_MASK & ~(sme & ((1 << 64) - 1))

    def _phys(self, entries: np.ndarray) -> np.ndarray:
        return entries & np.uint64(self.entry_mask)

    def _is_block(self, entry: int, shift: int) -> bool:
        # _PAGE_PSE in a PUD (1 GiB) or PMD (2 MiB) entry.
        return shift in (30, 21) and bool(entry & _PSE)


def has_page_tables(vi: VmcoreInfo) -> bool:
    """Tell whether VMCOREINFO names the kernel's top page table.

    Args:
        vi: The dump's VMCOREINFO.

    Returns:
        True when ``SYMBOL(init_top_pgt)`` (or, before 4.13, ``init_level4_pgt``) is there.
    """
    return vi.symbol("init_top_pgt") is not None or vi.symbol("init_level4_pgt") is not None


def phys_base(source: Source) -> int:
    """Return the kernel's relocation: where ``__START_KERNEL_map`` landed (docs/kdump-format.md §9.3).

    A kdump input records it in its sub header; otherwise VMCOREINFO's
    ``NUMBER(phys_base)``, else the PT_LOAD that maps the kernel text, as
    makedumpfile's ``get_phys_base_x86_64`` finds it.

    Args:
        source: The dump.

    Returns:
        phys_base, as an unsigned 64-bit value.
    """
    if source.recorded_phys_base is not None:
        return source.recorded_phys_base
    if source.vmcoreinfo is not None and source.vmcoreinfo.phys_base is not None:
        return source.vmcoreinfo.phys_base & ((1 << 64) - 1)
    for seg in source.segments:
        if int(seg["virt_start"]) >= START_KERNEL_MAP:
            return (int(seg["phys_start"]) - (int(seg["virt_start"]) - START_KERNEL_MAP)) & ((1 << 64) - 1)
    return 0


#: The seam's entry (kernel.arch.Machine): ``walker(source)`` makes the walk.
walker = PageTableWalker
