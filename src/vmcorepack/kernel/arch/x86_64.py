"""x86_64 kernel virtual -> physical translation by walking the kernel page tables.

makedumpfile translates every kernel virtual address it needs (kernel text,
direct map, vmemmap) with the same walk from ``init_top_pgt``
(``vtop4_x86_64`` / ``vtop5_x86_64``; docs/kdump-format.md §9.5).  Table
pages are read once and cached as numpy arrays, so translating a long range
(the vmemmap of a whole section) costs one read per table page and one
vectorised pass per PTE table.
"""

from __future__ import annotations

import numpy as np

from vmcorepack.errors import KernelMemoryError, SourceReadError, VmcoreinfoError
from vmcorepack.kernel.walk import PhysRun
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
_PRESENT = 0x1
_PSE = 0x80  # _PAGE_PSE: the PUD/PMD entry maps a 1 GiB / 2 MiB page
_ENTRIES = 512
_PAGE_4K = 1 << 12
_PAGE_2M = 1 << 21
_PAGE_1G = 1 << 30
#: At most this many table pages are cached (4 KiB each: 32 MiB).
_CACHE_LIMIT = 8192


class PageTableWalker:
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
        self.source = source
        # The top table lives in the kernel image: __pa_symbol() arithmetic.
        self.top_phys = (top - START_KERNEL_MAP + phys_base(source)) & ((1 << 64) - 1)
        self.five_level = bool(vi.number("pgtable_l5_enabled") or 0)
        self.kernel_space_start = KERNEL_SPACE_START_L5 if self.five_level else KERNEL_SPACE_START
        self.section_size_bits = SECTION_SIZE_BITS
        self.max_physmem_bits = MAX_PHYSMEM_BITS[self.five_level]
        sme = vi.number("sme_mask") or 0
        self.entry_mask = ENTRY_ADDR_MASK & ~(sme & ((1 << 64) - 1))
        self._tables: dict[int, np.ndarray] = {}

    # -- table pages ----------------------------------------------------------
    def table(self, paddr: int, vaddr: int) -> np.ndarray:
        """Return the 512 entries of the table page at ``paddr`` (cached).

        Args:
            paddr: Physical address of the table (page aligned).
            vaddr: The address being translated, for error messages.

        Returns:
            uint64 array of 512 entries.

        Raises:
            KernelMemoryError: The table is not in the dump.
        """
        t = self._tables.get(paddr)
        if t is None:
            try:
                raw = self.source.read_phys(paddr, _PAGE_4K)
            except SourceReadError as e:
                raise KernelMemoryError(
                    vaddr, f"page table at physical {paddr:#x} (translating {vaddr:#x}) is not in the dump"
                ) from e
            t = np.frombuffer(raw, "<u8")
            if len(self._tables) >= _CACHE_LIMIT:
                self._tables.clear()
            self._tables[paddr] = t
        return t

    def _descend(self, vaddr: int) -> tuple[int, int, int]:
        """Walk down to the entry that maps ``vaddr``.

        Returns:
            ``(entry, level_shift, table_paddr)``: the final entry, the shift of
            the page size it maps (30, 21 or 12) and the physical address of the
            table holding it.
        """
        shifts = (48, 39, 30, 21, 12) if self.five_level else (39, 30, 21, 12)
        table_pa = self.top_phys
        for shift in shifts:
            entry = int(self.table(table_pa, vaddr)[(vaddr >> shift) & (_ENTRIES - 1)])
            if not entry & _PRESENT:
                raise KernelMemoryError(
                    vaddr, f"kernel address {vaddr:#x} is not mapped (entry {entry:#x} at level shift {shift})"
                )
            if shift == 12 or (shift in (30, 21) and entry & _PSE):
                return entry, shift, table_pa
            table_pa = entry & self.entry_mask
        raise AssertionError("unreachable")  # pragma: no cover

    def vtop(self, vaddr: int) -> int:
        """Translate one kernel virtual address.

        Args:
            vaddr: Virtual address.

        Returns:
            Physical address.

        Raises:
            KernelMemoryError: Unmapped, or a table outside the dump.
        """
        entry, shift, _ = self._descend(vaddr)
        size = 1 << shift
        return ((entry & self.entry_mask) & ~(size - 1)) + (vaddr & (size - 1))

    def runs(self, vaddr: int, size: int) -> list[PhysRun]:
        """Translate a virtual range into physically contiguous runs.

        Pages mapped by one PTE table are translated in one numpy pass; large
        pages in one step each.

        Args:
            vaddr: Virtual start.
            size: Length in bytes.

        Returns:
            Runs covering the range in order.

        Raises:
            KernelMemoryError: Part of the range is unmapped.
        """
        out: list[PhysRun] = []
        va = vaddr
        end = vaddr + size
        while va < end:
            entry, shift, table_pa = self._descend(va)
            if shift != 12:
                psize = 1 << shift
                pa = ((entry & self.entry_mask) & ~(psize - 1)) + (va & (psize - 1))
                n = min(end, (va | (psize - 1)) + 1) - va
                _append(out, va, pa, n)
                va += n
                continue
            # A PTE table: translate every page of the range it covers at once.
            ptes = self.table(table_pa, va)
            first = (va >> 12) & (_ENTRIES - 1)
            table_end = (va | (_PAGE_2M - 1)) + 1
            last = ((min(end, table_end) - 1) >> 12) & (_ENTRIES - 1)
            ents = ptes[first : last + 1]
            absent = np.flatnonzero((ents & np.uint64(_PRESENT)) == 0)
            if len(absent):
                bad = (va & ~(_PAGE_4K - 1)) + int(absent[0]) * _PAGE_4K
                raise KernelMemoryError(bad, f"kernel address {bad:#x} is not mapped (PTE {int(ents[absent[0]]):#x})")
            pas = (ents & np.uint64(self.entry_mask)).astype(np.int64)
            brk = np.flatnonzero(np.diff(pas) != _PAGE_4K) + 1
            starts = np.concatenate(([0], brk)).tolist()
            stops = np.concatenate((brk, [len(pas)])).tolist()
            page_va = va & ~(_PAGE_4K - 1)
            for a, b in zip(starts, stops, strict=True):
                seg_va = max(va, page_va + a * _PAGE_4K)
                seg_end = min(end, page_va + b * _PAGE_4K)
                _append(out, seg_va, int(pas[a]) + (seg_va - page_va - a * _PAGE_4K), seg_end - seg_va)
            va = min(end, table_end)
        return out

    def read(self, vaddr: int, size: int) -> bytes:
        """Read kernel virtual memory.

        Args:
            vaddr: Virtual address.
            size: Number of bytes.

        Returns:
            Exactly ``size`` bytes.

        Raises:
            KernelMemoryError: Unmapped, or mapped to memory not in the dump.
        """
        parts = []
        for r in self.runs(vaddr, size):
            try:
                parts.append(self.source.read_phys(r.paddr, r.size))
            except SourceReadError as e:
                raise KernelMemoryError(
                    r.vaddr, f"kernel address {r.vaddr:#x} maps to physical {r.paddr:#x}, which is not in the dump"
                ) from e
        return b"".join(parts)

    def read_u64(self, vaddr: int) -> int:
        """Read one little-endian 64-bit word of kernel memory.

        Args:
            vaddr: Virtual address.

        Returns:
            The value.
        """
        return int.from_bytes(self.read(vaddr, 8), "little")


def _append(out: list[PhysRun], va: int, pa: int, n: int) -> None:
    if out and out[-1].vaddr + out[-1].size == va and out[-1].paddr + out[-1].size == pa:
        last = out[-1]
        out[-1] = PhysRun(last.vaddr, last.paddr, last.size + n)
    else:
        out.append(PhysRun(va, pa, n))


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


class _X86_64:
    """x86-64's entry points for the seam (kernel.arch.Machine)."""

    def walker(self, source: Source) -> PageTableWalker:
        return PageTableWalker(source)

    def phys_base(self, source: Source) -> int:
        return phys_base(source)

    def has_page_tables(self, vi: VmcoreInfo) -> bool:
        return has_page_tables(vi)


MACHINE = _X86_64()
