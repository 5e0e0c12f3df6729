"""x86_64 kernel virtual -> physical translation by walking the kernel page tables.

makedumpfile translates every kernel virtual address it needs (kernel text,
direct map, vmemmap) with the same walk from ``init_top_pgt``
(``vtop4_x86_64`` / ``vtop5_x86_64``; docs/kdump-format.md §9.5).  Table
pages are read once and cached as numpy arrays, so translating a long range
(the vmemmap of a whole section) costs one read per table page and one
vectorised pass per PTE table.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vmcorepack.constants import START_KERNEL_MAP
from vmcorepack.errors import KernelMemoryError, SourceReadError, VmcoreinfoError
from vmcorepack.sources import Source

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


class PhysRun(NamedTuple):
    """A virtually and physically contiguous piece of a translated range.

    Attributes:
        vaddr: Virtual start.
        paddr: Physical start.
        size: Length in bytes.
    """

    vaddr: int
    paddr: int
    size: int


class PageTableWalker:
    """Translates x86_64 kernel virtual addresses of a dump.

    Attributes:
        source: The dump.
        top_phys: Physical address of the top-level table (PGD or PML5).
        five_level: Whether the kernel used 5-level paging.
        entry_mask: Address bits of an entry, without the SME encryption bit.
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
        self.top_phys = (top - START_KERNEL_MAP + source.phys_base) & ((1 << 64) - 1)
        self.five_level = bool(vi.number("pgtable_l5_enabled") or 0)
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


#: Field names of ``struct new_utsname`` in header order.
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
#: ``__NEW_UTS_LEN + 1``.
UTS_FIELD_LEN = 65


def read_utsname(walker: PageTableWalker) -> dict[str, bytes]:
    """Read ``init_uts_ns.name`` (the crashed kernel's ``uname``).

    makedumpfile reads ``SYMBOL(init_uts_ns) + OFFSET(uts_namespace.name)``,
    or ``+ sizeof(int)`` when the offset is not exported (the ``kref`` that
    preceded ``name`` in old kernels), and copies the 390 bytes into the
    header (docs/kdump-format.md §2.1).

    Args:
        walker: Translator of the dump.

    Returns:
        The six fields, trailing NULs removed.

    Raises:
        VmcoreinfoError: ``SYMBOL(init_uts_ns)`` missing.
        KernelMemoryError: It cannot be read.
    """
    vi = walker.source.vmcoreinfo
    assert vi is not None  # the walker requires it
    base = vi.symbol("init_uts_ns")
    if base is None:
        raise VmcoreinfoError("SYMBOL(init_uts_ns)")
    off = vi.offset("uts_namespace.name")
    raw = walker.read(base + (4 if off is None else off), UTS_FIELD_LEN * len(UTS_FIELDS))
    return {name: raw[i * UTS_FIELD_LEN : (i + 1) * UTS_FIELD_LEN].rstrip(b"\0") for i, name in enumerate(UTS_FIELDS)}
