"""Where each pfn's ``struct page`` lives, and reading them into numpy field arrays.

The memory model is chosen as makedumpfile's ``get_mem_type`` does: SPARSEMEM
(with or without EXTREME) when ``mem_section`` is described, else FLATMEM
from ``SYMBOL(mem_map)`` (docs/kdump-format.md §9.4).  DISCONTIGMEM needs
``pglist_data.node_mem_map``, which no x86_64 kernel exports: refused.

``struct page`` entries are read in makedumpfile's 512-pfn batches
(``PGMM_CACHED``, aligned to absolute multiples of 512, each read from its
first examined pfn to the batch or scan end; §17.1.1), so exactly the
entries makedumpfile reads are read, and a head page's "first tail" values
come from the next entry of the same batch.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np

from vmcorepack.errors import KernelMemoryError, SourceReadError, UnsupportedError, VmcoreinfoError
from vmcorepack.kernel import arch
from vmcorepack.kernel.walk import Walker
from vmcorepack.sources import Source
from vmcorepack.vmcoreinfo import VmcoreInfo

#: makedumpfile's struct page cache: ``PGMM_CACHED`` (makedumpfile.h).
BATCH = 512
#: ``SECTION_MARKED_PRESENT`` in ``mem_section.section_mem_map``.
SECTION_MARKED_PRESENT = 0x1
#: makedumpfile masks the low flag bits of ``section_mem_map`` (``SECTION_MAP_MASK``).
SECTION_MAP_MASK = ~0x1F & ((1 << 64) - 1)


def kernel_version(vi: VmcoreInfo) -> tuple[int, int, int]:
    """Return ``OSRELEASE`` as ``(major, minor, patch)``; unknown counts as very new.

    Args:
        vi: VMCOREINFO.

    Returns:
        The version triple.
    """
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", vi.osrelease or "")
    if m is None:
        return (999, 0, 0)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


class MemMapRange(NamedTuple):
    """A pfn range whose ``struct page``s are contiguous in kernel virtual memory.

    Attributes:
        start_pfn: First pfn.
        end_pfn: End pfn (exclusive), at most ``max_mapnr``.
        mem_map: Virtual address of the ``struct page`` of ``start_pfn``.
    """

    start_pfn: int
    end_pfn: int
    mem_map: int


class PageLayout(NamedTuple):
    """Where the fields the filter needs are inside ``struct page``.

    Attributes:
        size: ``SIZE(page)``.
        dtype: Structured dtype of one entry with the fields ``flags``,
            ``mapping``, ``mapcount``, ``private``, ``chead`` (compound_head),
            ``order`` and ``dtor`` (the last two as they sit in a first tail page).
        has_mapcount: ``OFFSET(page._mapcount)`` exported.
        has_private: ``OFFSET(page.private)`` exported.
        has_compound_head: ``OFFSET(page.compound_head)`` exported.
        has_order: A compound order offset is known.
        has_dtor: A compound destructor offset is known.
    """

    size: int
    dtype: np.dtype[np.void]
    has_mapcount: bool
    has_private: bool
    has_compound_head: bool
    has_order: bool
    has_dtor: bool

    @classmethod
    def from_vmcoreinfo(cls, vi: VmcoreInfo) -> PageLayout:
        """Build the layout.

        Args:
            vi: VMCOREINFO.

        Returns:
            The layout.

        Raises:
            VmcoreinfoError: ``SIZE(page)``, ``OFFSET(page.flags)``,
                ``OFFSET(page._refcount)`` or ``OFFSET(page.mapping)`` missing
                (makedumpfile's ``get_mem_type`` then finds no memory type).
        """
        size = vi.require("SIZE", "page")
        flags = vi.require("OFFSET", "page.flags")
        if vi.offset("page._refcount") is None and vi.offset("page._count") is None:
            raise VmcoreinfoError("OFFSET(page._refcount)")
        mapping = vi.require("OFFSET", "page.mapping")
        names = ["flags", "mapping"]
        formats = ["<u8", "<u8"]
        offsets = [flags, mapping]

        def add(name: str, fmt: str, off: int | None) -> bool:
            if off is None:
                return False
            names.append(name)
            formats.append(fmt)
            offsets.append(off)
            return True

        has_mapcount = add("mapcount", "<i4", vi.offset("page._mapcount"))
        has_private = add("private", "<u8", vi.offset("page.private"))
        # Linux 7.1 renamed compound_head to compound_info.
        chead = vi.offset("page.compound_head")
        has_chead = add("chead", "<u8", chead if chead is not None else vi.offset("page.compound_info"))
        # Order and destructor of a compound page, relative to its first tail
        # page: folio fields (6.3+) are relative to the folio, i.e. the head.
        ver = kernel_version(vi)
        folio_order = vi.offset("folio._folio_order")
        order_off = folio_order - size if folio_order is not None else vi.offset("page.compound_order")
        folio_dtor = vi.offset("folio._folio_dtor")
        dtor_off = folio_dtor - size if folio_dtor is not None else vi.offset("page.compound_dtor")
        # Widths follow struct page history: unsigned char since 4.16,
        # unsigned short before; the destructor was a function pointer before 4.4.
        has_order = add("order", "u1" if ver >= (4, 16, 0) else "<u2", order_off)
        if ver >= (4, 16, 0):
            dtor_fmt = "u1"
        elif ver >= (4, 4, 0):
            dtor_fmt = "<u2"
        else:
            dtor_fmt = "<u8"
        has_dtor = add("dtor", dtor_fmt, dtor_off)
        for off, fmt in zip(offsets, formats, strict=True):
            if off < 0 or off + np.dtype(fmt).itemsize > size:
                raise VmcoreinfoError(
                    "SIZE(page)", f"VMCOREINFO: a struct page field at offset {off} lies outside SIZE(page)={size}"
                )
        dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size})
        return cls(size, dt, has_mapcount, has_private, has_chead, has_order, has_dtor)


def _field(name: str, dt: str, doc: str) -> Any:
    """A read-only attribute of :class:`PageArrays` that extracts one field on first use."""
    return property(lambda self: self.extract(name, dt), doc=doc)


class PageArrays:
    """``struct page`` entries of a run of pfns, and their fields as arrays, one entry per pfn.

    Entries that were not read (not examined, or outside every batch read) are
    zero.  The field arrays are extracted on first use: the C page pass
    (``filter.decide``) reads :attr:`raw` directly and never needs them.

    Attributes:
        start_pfn: pfn of entry 0.
        raw: The entries, ``len(read) * layout.size`` bytes.
        layout: Where the fields lie in an entry.
        read: Whether the entry was read.
        tail_ok: Whether the *next* entry was read in the same batch read
            (makedumpfile looks at a head's first tail only then).
    """

    def __init__(
        self, start_pfn: int, raw: np.ndarray, layout: PageLayout, read: np.ndarray, tail_ok: np.ndarray
    ) -> None:
        """Wrap entries read from the dump.

        Args:
            start_pfn: pfn of entry 0.
            raw: The entries (uint8).
            layout: Field layout.
            read: Whether each entry was read.
            tail_ok: See the class attributes.
        """
        self.start_pfn = start_pfn
        self.raw = raw
        self.layout = layout
        self.read = read
        self.tail_ok = tail_ok
        self._fields: dict[str, np.ndarray] = {}

    def extract(self, name: str, dt: str) -> np.ndarray:
        """Return one field of every entry as an array of ``dt`` (zeros when not exported), cached.

        Args:
            name: Field name in :attr:`PageLayout.dtype`.
            dt: numpy type of the result.

        Returns:
            One value per pfn.
        """
        got = self._fields.get(name)
        if got is None:
            n = len(self.read)
            if name in (self.layout.dtype.names or ()):
                got = np.frombuffer(self.raw.data, self.layout.dtype, count=n)[name].astype(dt)
            else:
                got = np.zeros(n, dt)
            self._fields[name] = got
        return got

    flags = _field("flags", "u8", "``page.flags`` (uint64).")
    mapping = _field("mapping", "u8", "``page.mapping`` (uint64).")
    mapcount = _field("mapcount", "i4", "``page._mapcount`` (int32), 0 if not exported.")
    private = _field("private", "u8", "``page.private`` (uint64), 0 if not exported.")
    chead = _field("chead", "u8", "``page.compound_head`` (uint64), 0 if not exported.")
    order = _field("order", "u8", "Compound order field as found in this entry (meaningful for first tails).")
    dtor = _field("dtor", "u8", "Compound destructor field as found in this entry.")


class MemMap:
    """The ``struct page`` array of a dump.

    Attributes:
        source: The dump.
        walker: Address translator.
        layout: Field layout.
        ranges: pfn ranges with a mem_map, in pfn order.
        model: ``"SPARSEMEM_EX"``, ``"SPARSEMEM"`` or ``"FLATMEM"``.
    """

    def __init__(self, source: Source, walker: Walker | None = None) -> None:
        """Locate the mem_map of every pfn.

        Args:
            source: The dump (with VMCOREINFO).
            walker: Translator to reuse, or None to make one.

        Raises:
            VmcoreinfoError: Keys for the memory model or struct page missing.
            KernelMemoryError: The tables cannot be read.
        """
        vi = source.vmcoreinfo
        if vi is None:
            raise VmcoreinfoError("*", f"{source.path}: finding struct page needs VMCOREINFO")
        self.source = source
        self.walker = walker or arch.for_source(source).walker(source)
        self.layout = PageLayout.from_vmcoreinfo(vi)
        if (
            vi.symbol("mem_section") is not None
            and vi.size("mem_section") is not None
            and vi.offset("mem_section.section_mem_map") is not None
        ):
            self.ranges, self.model = self._sparsemem(vi)
        elif vi.symbol("mem_map") is not None:
            self.ranges, self.model = self._flatmem(vi.require("SYMBOL", "mem_map")), "FLATMEM"
        elif vi.offset("pglist_data.node_mem_map") is not None:
            raise UnsupportedError("DISCONTIGMEM kernels are not supported")
        else:
            raise VmcoreinfoError("SYMBOL(mem_section)", "VMCOREINFO describes neither mem_section nor mem_map")

    # -- memory models --------------------------------------------------------
    def _flatmem(self, sym: int) -> list[MemMapRange]:
        # SYMBOL(mem_map) is the address of the pointer variable.
        mem_map = self.walker.read_u64(sym)
        if mem_map == 0:
            raise KernelMemoryError(sym, "FLATMEM mem_map pointer is NULL")
        return [MemMapRange(0, self.source.max_mapnr, mem_map)]

    def _sparsemem(self, vi: VmcoreInfo) -> tuple[list[MemMapRange], str]:
        ps = self.source.page_size
        page_shift = ps.bit_length() - 1
        section_bits = vi.number("SECTION_SIZE_BITS") or self.walker.section_size_bits
        physmem_bits = vi.number("MAX_PHYSMEM_BITS") or self.walker.max_physmem_bits
        sec_size = vi.require("SIZE", "mem_section")
        map_off = vi.require("OFFSET", "mem_section.section_mem_map")
        sym = vi.require("SYMBOL", "mem_section")
        if not page_shift <= section_bits <= physmem_bits <= 64 or not map_off + 8 <= sec_size <= ps:
            # Hostile values would shift by a negative count or divide by zero below.
            raise VmcoreinfoError(
                "NUMBER(SECTION_SIZE_BITS)",
                f"VMCOREINFO SECTION_SIZE_BITS={section_bits}, MAX_PHYSMEM_BITS={physmem_bits}, "
                f"SIZE(mem_section)={sec_size}, OFFSET(mem_section.section_mem_map)={map_off} are inconsistent",
            )
        pfn_shift = section_bits - page_shift
        per_section = 1 << pfn_shift
        nr_mem_sections = 1 << (physmem_bits - section_bits)
        per_root_ex = ps // sec_size
        length = vi.length("mem_section")
        # is_sparsemem_extreme(): LENGTH missing, or the number of roots.
        extreme = length is None or length == -(-nr_mem_sections // per_root_ex)
        per_root = per_root_ex if extreme else 1
        num_section = -(-self.source.max_mapnr // per_section)
        if not extreme:
            return self._decode(sym, num_section, per_root, sec_size, map_off, pfn_shift, extreme=False), "SPARSEMEM"
        try:
            ranges = self._decode(sym, num_section, per_root, sec_size, map_off, pfn_shift, extreme=True)
            if ranges:
                return ranges, "SPARSEMEM_EX"
            first_error: KernelMemoryError | None = None
        except KernelMemoryError as e:
            first_error = e
        # makedumpfile retries treating SYMBOL(mem_section) as the address of
        # a pointer to the root array (kernels that export &mem_section).
        try:
            roots_va = self.walker.read_u64(sym)
            ranges = self._decode(roots_va, num_section, per_root, sec_size, map_off, pfn_shift, extreme=True)
        except KernelMemoryError:
            if first_error is not None:
                raise first_error from None
            raise
        if not ranges:
            raise KernelMemoryError(sym, "no memory section has a mem_map (SPARSEMEM_EXTREME)")
        return ranges, "SPARSEMEM_EX"

    def _decode(
        self,
        base: int,
        num_section: int,
        per_root: int,
        sec_size: int,
        map_off: int,
        pfn_shift: int,
        extreme: bool,
    ) -> list[MemMapRange]:
        max_mapnr = self.source.max_mapnr
        page_size = self.layout.size
        kernel_start = self.walker.kernel_space_start
        if extreme:
            nr_roots = -(-num_section // per_root)
            roots = np.frombuffer(self.walker.read(base, 8 * nr_roots), "<u8").tolist()
        else:
            roots = [base]
            per_root = num_section
        out: list[MemMapRange] = []
        for r, root in enumerate(roots):
            first = r * per_root
            count = min(per_root, num_section - first)
            if root == 0 or count <= 0:
                continue
            if root < kernel_start:
                raise KernelMemoryError(root, f"mem_section root {r} is not a kernel address")
            raw = self.walker.read(root, count * sec_size)
            for i in range(count):
                coded = int.from_bytes(raw[i * sec_size + map_off : i * sec_size + map_off + 8], "little")
                if not coded & SECTION_MARKED_PRESENT:
                    continue
                nr = first + i
                start = nr << pfn_shift
                # The kernel stores mem_map minus the section's first pfn
                # (sparse_encode_mem_map); add it back.
                mem_map = ((coded & SECTION_MAP_MASK) + start * page_size) & ((1 << 64) - 1)
                if mem_map < kernel_start:
                    raise KernelMemoryError(mem_map, f"mem_map of section {nr} is not a kernel address")
                out.append(MemMapRange(start, min(start + (1 << pfn_shift), max_mapnr), mem_map))
        return out

    # -- reading struct pages -------------------------------------------------
    def read_pages(self, rng: MemMapRange, start: int, end: int, examined: np.ndarray) -> PageArrays:
        """Read the ``struct page``s makedumpfile reads for pfns ``[start, end)`` of ``rng``.

        Args:
            rng: The mem_map range holding the pfns.
            start: First pfn (inside ``rng``).
            end: End pfn: the end of makedumpfile's scan (section or cycle end).
            examined: Bool per pfn of ``[start, end)``: page start inside a
                PT_LOAD's file data (``is_in_segs``).

        Returns:
            Field arrays for ``[start, end)``.

        Raises:
            KernelMemoryError: A batch cannot be read (makedumpfile: "Can't
                exclude unnecessary pages").
        """
        n = end - start
        size = self.layout.size
        # Rows are read or zeroed below: clearing all of it first was a second
        # pass over 64 MiB per 1M pfns.
        buf = np.empty(n * size, np.uint8)
        view = buf.data
        read = np.zeros(n, bool)
        tail_ok = np.zeros(n, bool)
        for a, b in _batch_reads(start, end, examined):
            va = rng.mem_map + (a - rng.start_pfn) * size
            try:
                runs = self.walker.runs(va, (b - a) * size)
                pos = (a - start) * size
                for run in runs:
                    self.source.read_phys_into(run.paddr, view[pos : pos + run.size])
                    pos += run.size
            except (KernelMemoryError, SourceReadError) as e:
                raise KernelMemoryError(va, f"cannot read struct page of pfns {a:#x}-{b - 1:#x} at {va:#x}: {e}") from e
            read[a - start : b - start] = True
        if not read.all():
            buf.reshape(n, size)[~read] = 0
        # A head's first tail is the next entry of the same batch read: not for
        # the last slot of a batch, nor for the last pfn of the scan.
        tail_ok[:-1] = read[:-1] & read[1:]
        tail_ok[(BATCH - 1 - start) % BATCH :: BATCH] = False
        return PageArrays(start, buf, self.layout, read, tail_ok)


def _batch_reads(start: int, end: int, examined: np.ndarray) -> list[tuple[int, int]]:
    """Return makedumpfile's batch reads for a scan of ``[start, end)``, merged when adjacent.

    A batch (absolute multiple of ``BATCH``) with an examined pfn is read from
    its first examined pfn to the batch end or ``end``.

    Args:
        start: Scan start pfn.
        end: Scan end pfn.
        examined: Bool per pfn.

    Returns:
        ``(first, stop)`` pfn pairs, batches that follow each other without a
        gap merged into one read.
    """
    idx = np.flatnonzero(examined)
    if not len(idx):
        return []
    pfns = idx + start
    batch = pfns // BATCH
    firsts = pfns[np.concatenate(([True], batch[1:] != batch[:-1]))]
    stops = np.minimum((firsts // BATCH + 1) * BATCH, end)
    # A read starts where the previous batch read did not end where this one begins.
    new = np.concatenate(([True], firsts[1:] != stops[:-1]))
    last = np.concatenate((new[1:], [True]))
    return list(zip(firsts[new].tolist(), stops[last].tolist(), strict=True))
