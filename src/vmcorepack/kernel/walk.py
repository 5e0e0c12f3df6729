"""What the rest of the code needs from an architecture's page-table walk.

Each module of kernel/arch/ provides a :class:`Walker` for its kernels; the
memory model (kernel/memmap.py), the page pass (filter.py) and the kernel log
(dmesg.py) read kernel memory only through it, so nothing above this line
knows which machine wrote the dump.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from vmcorepack.errors import KernelMemoryError, SourceReadError, VmcoreinfoError
from vmcorepack.sources import Source

#: At most this many table pages are cached (32 MiB of 4 KiB tables).
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


class Walker(Protocol):
    """Kernel virtual -> physical translation of one dump.

    Attributes:
        source: The dump.
        kernel_space_start: Lowest kernel virtual address: a pointer below
            it (a mem_section root, a mem_map) is garbage.
        section_size_bits: ``SECTION_SIZE_BITS`` when VMCOREINFO lacks it.
        max_physmem_bits: ``MAX_PHYSMEM_BITS`` when VMCOREINFO lacks it.
    """

    source: Source
    kernel_space_start: int
    section_size_bits: int
    max_physmem_bits: int

    def vtop(self, vaddr: int) -> int:
        """Translate one kernel virtual address (KernelMemoryError if unmapped)."""
        ...

    def runs(self, vaddr: int, size: int) -> list[PhysRun]:
        """Translate a virtual range into physically contiguous runs."""
        ...

    def read(self, vaddr: int, size: int) -> bytes:
        """Read ``size`` bytes of kernel virtual memory."""
        ...

    def read_u64(self, vaddr: int) -> int:
        """Read one 64-bit word of kernel memory in the kernel's byte order."""
        ...


class TableWalker:
    """A radix page-table walk: what x86-64 and arm64 kernels have in common.

    Each level's table is one page of 8-byte entries (the top one may hold
    fewer), indexed by a bit field of the virtual address; an entry either
    points at the next table or, at some levels, maps a block of memory
    itself.  Subclasses say which bits mean what (:meth:`_phys`,
    :meth:`_present`, :meth:`_is_block`).  Table pages are read once and
    cached as numpy arrays, so translating a long range (the vmemmap of a
    whole section) costs one read per table page and one vectorised pass per
    last-level table.

    Attributes:
        source: The dump.
        top_phys: Physical address of the top-level table.
        shifts: Address shift of each level, top first; the last is the page shift.
        top_entries: Entries of the top-level table.
    """

    def __init__(self, source: Source, top_phys: int, shifts: tuple[int, ...], top_entries: int) -> None:
        """Set up the walk.

        Args:
            source: The dump.
            top_phys: Physical address of the top-level table.
            shifts: Address shift of each level, top first.
            top_entries: Entries of the top-level table (a power of two).
        """
        self.source = source
        self.top_phys = top_phys
        self.shifts = shifts
        self.top_entries = top_entries
        self.page_shift = shifts[-1]
        self._per_table = 1 << (self.page_shift - 3)
        self._tables: dict[int, np.ndarray] = {}

    # -- what an entry means: the subclass's -------------------------------------
    def _phys(self, entries: np.ndarray) -> np.ndarray:
        """Return the physical address each entry points at (next table, page or block base)."""
        raise NotImplementedError

    def _present(self, entries: np.ndarray) -> np.ndarray:
        """Return whether each entry is valid."""
        valid: np.ndarray = (entries & np.uint64(1)) != 0
        return valid

    def _is_block(self, entry: int, shift: int) -> bool:
        """Tell whether a valid entry above the last level maps ``1 << shift`` bytes itself."""
        raise NotImplementedError

    # -- table pages ---------------------------------------------------------------
    def table(self, paddr: int, vaddr: int) -> np.ndarray:
        """Return the entries of the table page at ``paddr`` (cached).

        Args:
            paddr: Physical address of the table.
            vaddr: The address being translated, for error messages.

        Returns:
            uint64 array of one page of entries.

        Raises:
            KernelMemoryError: The table is not in the dump.
        """
        t = self._tables.get(paddr)
        if t is None:
            try:
                raw = self.source.read_phys(paddr, 1 << self.page_shift)
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
            the size it maps and the physical address of the table holding it.
        """
        table_pa = self.top_phys
        last = len(self.shifts) - 1
        for level, shift in enumerate(self.shifts):
            entries = self.top_entries if level == 0 else self._per_table
            entry = int(self.table(table_pa, vaddr)[(vaddr >> shift) & (entries - 1)])
            if not self._present(np.asarray(entry, np.uint64)):
                raise KernelMemoryError(
                    vaddr, f"kernel address {vaddr:#x} is not mapped (entry {entry:#x} at level shift {shift})"
                )
            if level == last or self._is_block(entry, shift):
                return entry, shift, table_pa
            table_pa = int(self._phys(np.asarray(entry, np.uint64)))
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
        return (int(self._phys(np.asarray(entry, np.uint64))) & ~(size - 1)) + (vaddr & (size - 1))

    def runs(self, vaddr: int, size: int) -> list[PhysRun]:
        """Translate a virtual range into physically contiguous runs.

        Pages mapped by one last-level table are translated in one numpy
        pass; blocks in one step each.

        Args:
            vaddr: Virtual start.
            size: Length in bytes.

        Returns:
            Runs covering the range in order.

        Raises:
            KernelMemoryError: Part of the range is unmapped.
        """
        out: list[PhysRun] = []
        ps = 1 << self.page_shift
        span = ps * self._per_table  # what one last-level table maps
        va = vaddr
        end = vaddr + size
        while va < end:
            entry, shift, table_pa = self._descend(va)
            if shift != self.page_shift:
                bsize = 1 << shift
                pa = (int(self._phys(np.asarray(entry, np.uint64))) & ~(bsize - 1)) + (va & (bsize - 1))
                n = min(end, (va | (bsize - 1)) + 1) - va
                _append(out, va, pa, n)
                va += n
                continue
            # A last-level table: translate every page of the range it covers at once.
            ptes = self.table(table_pa, va)
            first = (va >> self.page_shift) & (self._per_table - 1)
            table_end = (va | (span - 1)) + 1
            last = ((min(end, table_end) - 1) >> self.page_shift) & (self._per_table - 1)
            ents = ptes[first : last + 1]
            absent = np.flatnonzero(~self._present(ents))
            if len(absent):
                bad = (va & ~(ps - 1)) + int(absent[0]) * ps
                raise KernelMemoryError(bad, f"kernel address {bad:#x} is not mapped (PTE {int(ents[absent[0]]):#x})")
            pas = self._phys(ents).astype(np.int64)
            brk = np.flatnonzero(np.diff(pas) != ps) + 1
            starts = np.concatenate(([0], brk)).tolist()
            stops = np.concatenate((brk, [len(pas)])).tolist()
            page_va = va & ~(ps - 1)
            for a, b in zip(starts, stops, strict=True):
                seg_va = max(va, page_va + a * ps)
                seg_end = min(end, page_va + b * ps)
                _append(out, seg_va, int(pas[a]) + (seg_va - page_va - a * ps), seg_end - seg_va)
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

    def mapped_pfns(self, top_phys: int, top_slots: int) -> np.ndarray:
        """Return every pfn mapped below the first ``top_slots`` entries of another top-level table.

        A process's page table (``mm->pgd``) has the kernel's layout; its
        first half maps user space.  Tables or pages missing from the dump
        are skipped, not errors: a filter asks which pages a process owns.

        Args:
            top_phys: Physical address of the top-level table.
            top_slots: How many of its entries to follow (e.g. 256 of 512 on x86_64).

        Returns:
            Sorted unique int64 pfns.
        """
        found: list[np.ndarray] = []
        page_shift = self.page_shift

        def walk(table_pa: int, level: int, count: int) -> None:
            try:
                ents = self.table(table_pa, 0)[:count]
            except KernelMemoryError:
                return
            live = np.flatnonzero(self._present(ents))
            if level == len(self.shifts) - 1:
                found.append((self._phys(ents[live]) >> np.uint64(page_shift)).astype(np.int64))
                return
            shift = self.shifts[level]
            for i in live.tolist():
                e = int(ents[i])
                pa = int(self._phys(np.asarray(e, np.uint64)))
                if self._is_block(e, shift):
                    found.append(np.arange(pa >> page_shift, (pa >> page_shift) + (1 << (shift - page_shift))))
                else:
                    walk(pa, level + 1, self._per_table)

        walk(top_phys, 0, top_slots)
        return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)

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


def read_utsname(walker: Walker) -> dict[str, bytes]:
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
    assert vi is not None  # every walker requires it
    base = vi.symbol("init_uts_ns")
    if base is None:
        raise VmcoreinfoError("SYMBOL(init_uts_ns)")
    off = vi.offset("uts_namespace.name")
    raw = walker.read(base + (4 if off is None else off), UTS_FIELD_LEN * len(UTS_FIELDS))
    return {name: raw[i * UTS_FIELD_LEN : (i + 1) * UTS_FIELD_LEN].rstrip(b"\0") for i, name in enumerate(UTS_FIELDS)}
