"""Synthetic x86_64 kernel memory images with a known answer, for tests and benchmarks.

:func:`build` turns a declarative :class:`FixtureSpec` into an ELF vmcore (what
/proc/vmcore looks like) or a raw physical-memory image plus a VMCOREINFO text
file, and returns the ground truth: the declared kind of every pfn and the 2nd
bitmap each dump level must produce (makedumpfile 1.7.9's rules,
docs/kdump-format.md §9.6-9.7 and §17.1).

The image holds what a filter needs to find on its own, built the way the
kernel builds it:

* real 4- or 5-level page tables under ``init_top_pgt`` (kernel text with
  2 MiB pages and a 4 KiB tail, the direct map with 1 GiB / 2 MiB / 4 KiB
  pages, the vmemmap with 2 MiB pages for whole sections and 4 KiB pages for a
  partial last one);
* SPARSEMEM_EXTREME: the ``mem_section`` root array (direct-map pointers to
  one page of ``struct mem_section`` per root), ``section_mem_map`` encoded as
  ``mem_map - first_pfn * sizeof(struct page)`` with the low flag bits
  (``sparse_encode_mem_map`` in mm/sparse.c);
* a ``struct page`` per pfn following Linux 6.1 (PG_slab exported,
  ``PAGE_BUDDY_MAPCOUNT_VALUE`` -129, ``compound_dtor``/``compound_order`` in
  the first tail page) or Linux 6.12 (one page type in the top byte of
  ``page_type``, ``PAGE_*_MAPCOUNT_VALUE = type << 24``, folio order in the
  low byte of the first tail's flags);
* ``init_uts_ns``, ``node_online_map``, ``node_data`` and CORE/NT_PRSTATUS notes.

Images are written sparsely in bounded chunks: zero pages are never written,
and pages whose ``struct page`` is all zero (the ``zero`` kind) cost no
vmemmap bytes either, so tens of GiB of mostly-zero memory build in seconds.
Everything derives from ``seed``: the same spec gives the same bytes.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from vmcorepack import pipeline, sources
from vmcorepack.constants import DumpLevel
from vmcorepack.errors import UsageError
from vmcorepack.formats import elf
from vmcorepack.kernel.arch.x86_64 import START_KERNEL_MAP

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
SECTION_SIZE_BITS = 27
PAGES_PER_SECTION = 1 << (SECTION_SIZE_BITS - PAGE_SHIFT)
SIZEOF_PAGE = 64
#: Largest buddy order + 1 (``LENGTH(zone.free_area)``, NR_PAGE_ORDERS).
NR_PAGE_ORDERS = 11
#: Order of THP and hugetlb pages (2 MiB).
HPAGE_ORDER = 9
#: Size of x86_64 ``struct elf_prstatus``.
PRSTATUS_SIZE = 336
#: makedumpfile's struct page batch (``PGMM_CACHED``).
_BATCH = 512
#: pfns handled per step when writing (bounds memory: 16 MiB of page buffer).
_WRITE_CHUNK = 4096
#: ``TAIL_MAPPING`` (0x400 + POISON_POINTER_DELTA), in tail pages' ``mapping``.
_TAIL_MAPPING = 0xDEAD000000000400
_MASK64 = (1 << 64) - 1
_GIB = 1 << 30
_MIB = 1 << 20
#: Page-table entry bits (arch/x86/include/asm/pgtable_types.h).
_PTE_PRESENT = 0x001
_PTE_RW = 0x002
_PTE_ACCESSED = 0x020
_PTE_DIRTY = 0x040
_PTE_PSE = 0x080
_PTE_GLOBAL = 0x100
_PTE_NX = 1 << 63
_KERNPG_TABLE = _PTE_PRESENT | _PTE_RW | _PTE_ACCESSED | _PTE_DIRTY
_PAGE_KERNEL = _KERNPG_TABLE | _PTE_GLOBAL | _PTE_NX
_PAGE_KERNEL_EXEC = _KERNPG_TABLE | _PTE_GLOBAL


class PageKind(enum.IntEnum):
    """What a pfn is declared to be (the ground truth of a generated image)."""

    #: Not in any PT_LOAD (memory hole, crashkernel area, partial page).
    HOLE = 0
    #: All-zero content, all-zero ``struct page``: kept at every level.
    ZERO = 1
    #: Kernel image and kernel data (PG_reserved): kept.
    KERNEL = 2
    #: Pages holding the vmemmap ``struct page`` array: kept.
    MEMMAP = 3
    #: Page-table pages (page type "table"): kept.
    PGTABLE = 4
    #: Page cache, PG_lru, file mapping: excluded at dl & 2 and dl & 4.
    CACHE = 5
    #: Page cache with PG_private: excluded at dl & 4.
    CACHE_PRIVATE = 6
    #: Swap cache (PG_swapcache + PG_swapbacked) of shmem, file mapping: dl & 2, dl & 4.
    SWAPCACHE = 7
    #: Anonymous user page (mapping | PAGE_MAPPING_ANON): dl & 8.
    ANON = 8
    #: Free buddy block of order 0-10, head has the buddy type: dl & 16.
    BUDDY = 9
    #: Anonymous transparent huge page (order 9), head and tails: dl & 8.
    THP = 10
    #: hugetlbfs page (order 9), head and tails: dl & 8.
    HUGETLB = 11
    #: Slab page (order 0-3 compound): kept.
    SLAB = 12
    #: PG_hwpoison: excluded at every level.
    HWPOISON = 13
    #: Offline page type (balloon, virtio-mem): excluded at every level.
    OFFLINE = 14


#: Kinds a spec's ``mix`` may ask for (the remainder of RAM becomes ZERO).
MIX_KINDS: tuple[PageKind, ...] = (
    PageKind.ZERO,
    PageKind.KERNEL,
    PageKind.PGTABLE,
    PageKind.CACHE,
    PageKind.CACHE_PRIVATE,
    PageKind.SWAPCACHE,
    PageKind.ANON,
    PageKind.BUDDY,
    PageKind.THP,
    PageKind.HUGETLB,
    PageKind.SLAB,
    PageKind.HWPOISON,
    PageKind.OFFLINE,
)

#: A mix with every kind, sized for small test images.
DEFAULT_MIX: Mapping[str, float] = {
    "zero": 0.12,
    "kernel": 0.05,
    "pgtable": 0.01,
    "cache": 0.15,
    "cache_private": 0.04,
    "swapcache": 0.02,
    "anon": 0.15,
    "buddy": 0.20,
    "thp": 0.06,
    "hugetlb": 0.04,
    "slab": 0.05,
    "hwpoison": 3,
    "offline": 5,
}

_UNASSIGNED = 255


def _s32(v: int) -> int:
    """Reinterpret the low 32 bits of ``v`` as a signed int (the kernel's ``int`` page types)."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


@dataclasses.dataclass(frozen=True)
class KernelProfile:
    """``struct page`` conventions of one kernel generation.

    Attributes:
        name: ``"6.1"`` or ``"6.12"``.
        osrelease: Default OSRELEASE.
        pg_lru: ``PG_lru``.
        pg_private: ``PG_private``.
        pg_swapcache: ``PG_swapcache`` (= PG_owner_priv_1).
        pg_swapbacked: ``PG_swapbacked``.
        pg_slab: ``PG_slab``, or None when slab is a page type (6.10+).
        pg_hwpoison: ``PG_hwpoison``.
        pg_head: ``PG_head``.
        pg_reserved: ``PG_reserved``.
        harmless_bits: Flag bits no dump-level rule looks at (referenced, dirty, active).
        pg_uptodate: ``PG_uptodate``.
        flags_high: Node/zone/last_cpupid bits every in-use page carries.
        buddy: ``_mapcount`` of a buddy head.
        offline: ``_mapcount`` of an offline page.
        table: ``_mapcount`` of a page-table page.
        slab_type: ``_mapcount`` of a slab head (6.12), or None.
        hugetlb_type: ``_mapcount`` of a hugetlb head (6.12), or None.
        compound_in_flags: The folio order is the low byte of the first tail's flags (6.6+).
    """

    name: str
    osrelease: str
    pg_lru: int
    pg_private: int
    pg_swapcache: int
    pg_swapbacked: int
    pg_slab: int | None
    pg_hwpoison: int
    pg_head: int
    pg_reserved: int
    pg_uptodate: int
    harmless_bits: tuple[int, ...]
    flags_high: int
    buddy: int
    offline: int
    table: int
    slab_type: int | None
    hugetlb_type: int | None
    compound_in_flags: bool


#: Linux 6.1 (include/linux/page-flags.h of v6.1, x86_64 with PG_uncached):
#: matches ../shared/fixtures/vmcoreinfo-A.txt.  Page types clear one bit of
#: an all-ones ``page_type`` (PG_buddy 0x80, PG_offline 0x100, PG_table 0x200).
PROFILE_6_1 = KernelProfile(
    name="6.1",
    osrelease="6.1.0-28-amd64",
    pg_lru=4,
    pg_private=13,
    pg_swapcache=10,
    pg_swapbacked=19,
    pg_slab=9,
    pg_hwpoison=23,
    pg_head=16,
    pg_reserved=12,
    pg_uptodate=2,
    harmless_bits=(1, 3, 5),
    flags_high=0x000FFFFFC0000000,
    buddy=_s32(~0x80),
    offline=_s32(~0x100),
    table=_s32(~0x200),
    slab_type=None,
    hugetlb_type=None,
    compound_in_flags=False,
)

#: Linux 6.12: no PG_error, PG_owner_2 at 11, PG_head at 6; ``page_type`` holds
#: one ``enum pagetype`` in its top byte (buddy 0xf0, offline 0xf1, table 0xf2,
#: hugetlb 0xf4, slab 0xf5) and VMCOREINFO exports ``PGTY_* << 24`` as an int.
PROFILE_6_12 = KernelProfile(
    name="6.12",
    osrelease="6.12.38+deb13-amd64",
    pg_lru=5,
    pg_private=14,
    pg_swapcache=10,
    pg_swapbacked=17,
    pg_slab=None,
    pg_hwpoison=21,
    pg_head=6,
    pg_reserved=13,
    pg_uptodate=3,
    harmless_bits=(2, 4, 8),
    flags_high=0x000FFFFFE0000000,
    buddy=_s32(0xF0 << 24),
    offline=_s32(0xF1 << 24),
    table=_s32(0xF2 << 24),
    slab_type=_s32(0xF5 << 24),
    hugetlb_type=_s32(0xF4 << 24),
    compound_in_flags=True,
)

PROFILES: Mapping[str, KernelProfile] = {"6.1": PROFILE_6_1, "6.12": PROFILE_6_12}


@dataclasses.dataclass(frozen=True)
class FixtureSpec:
    """What to generate.

    Attributes:
        size_bytes: Physical address span (max_mapnr * 4096), a multiple of 4 KiB,
            at least 4 MiB (8 MiB with 5-level paging).
        paging_levels: 4 or 5 (``NUMBER(pgtable_l5_enabled)=1``).
        generation: Kernel generation of the ``struct page`` encoding: ``"6.1"`` or ``"6.12"``.
        mix: ``{kind name: fraction of free RAM (float) or page count (int)}``;
            RAM left over becomes ``zero`` pages.  None uses :data:`DEFAULT_MIX`.
        seed: Seed of every random choice.
        holes: Physical ``(start, end)`` byte ranges that are not RAM; None
            chooses PC-like holes (page 0, 0x9fc00-0x100000, a crashkernel
            area, the PCI hole below 4 GiB).
        kernel_text_alias: Add the PT_LOAD that maps the kernel image a second
            time at its 0xffffffff8xxxxxxx address (ELF only).
        fmt: ``"elf"`` or ``"raw"``.
        kaslr: Randomise the kernel, direct-map and vmemmap bases.
        gbpages: Map the direct map with 1 GiB pages where possible.
        nr_cpus: Number of NT_PRSTATUS notes.
        zeroed_fraction: Fraction of non-zero-kind pages whose content is all zero anyway.
        free_zeroed: Free (buddy) pages have zero content (init_on_free).
        incompressible_fraction: Fraction of pages with random (incompressible) content.
        osrelease: OSRELEASE override.
        crashtime: CRASHTIME.
    """

    size_bytes: int = 64 * _MIB
    paging_levels: int = 4
    generation: str = "6.1"
    mix: Mapping[str, float] | None = None
    seed: int = 0
    holes: tuple[tuple[int, int], ...] | None = None
    kernel_text_alias: bool = True
    fmt: str = "elf"
    kaslr: bool = True
    gbpages: bool = True
    nr_cpus: int = 2
    zeroed_fraction: float = 0.02
    free_zeroed: bool = False
    incompressible_fraction: float = 0.1
    osrelease: str | None = None
    crashtime: int = 1700000000

    def validate(self) -> None:
        """Check the parameters.

        Raises:
            UsageError: A parameter is out of range.
        """
        min_size = (8 if self.paging_levels == 5 else 4) * _MIB
        if self.size_bytes % PAGE_SIZE or self.size_bytes < min_size:
            raise UsageError(
                f"fixture size {self.size_bytes:#x} must be a multiple of 4 KiB and >= {min_size >> 20} MiB"
            )
        max_bits = 52 if self.paging_levels == 5 else 46
        if self.size_bytes > 1 << max_bits:
            raise UsageError(f"fixture size {self.size_bytes:#x} exceeds {max_bits} physical address bits")
        if self.paging_levels not in (4, 5):
            raise UsageError(f"paging levels must be 4 or 5, got {self.paging_levels}")
        if self.generation not in PROFILES:
            raise UsageError(f"kernel generation must be one of {', '.join(PROFILES)}, got {self.generation!r}")
        if self.fmt not in ("elf", "raw"):
            raise UsageError(f"format must be 'elf' or 'raw', got {self.fmt!r}")
        if not 1 <= self.nr_cpus <= 4096:
            raise UsageError(f"nr_cpus must be in 1..4096, got {self.nr_cpus}")
        for name, v in (
            ("zeroed_fraction", self.zeroed_fraction),
            ("incompressible_fraction", self.incompressible_fraction),
        ):
            if not 0.0 <= v <= 1.0:
                raise UsageError(f"{name} must be in [0, 1], got {v}")
        for s, e in self.holes or ():
            if s % PAGE_SIZE or e <= s:
                raise UsageError(f"hole {s:#x}-{e:#x} must be a non-empty range with a page-aligned start")
        mix_targets(self.mix if self.mix is not None else DEFAULT_MIX, 1)


def mix_targets(mix: Mapping[str, float], free_pages: int) -> dict[PageKind, int]:
    """Turn a mix into page counts.

    Args:
        mix: ``{kind name: fraction (float) or count (int)}``.
        free_pages: RAM pages available to the mix.

    Returns:
        Pages per kind; ZERO takes what the others leave.

    Raises:
        UsageError: Unknown kind, negative value or fractions above 1.
    """
    names = {k.name.lower(): k for k in MIX_KINDS}
    out: dict[PageKind, int] = {}
    frac_sum = 0.0
    for name, value in mix.items():
        kind = names.get(name.lower())
        if kind is None:
            raise UsageError(f"unknown page kind {name!r} (known: {', '.join(names)})")
        if value < 0:
            raise UsageError(f"page kind {name}: negative amount {value}")
        if isinstance(value, float):
            frac_sum += value
            out[kind] = int(value * free_pages)
            if kind in (PageKind.THP, PageKind.HUGETLB) and value > 0 and free_pages >= 4 << HPAGE_ORDER:
                # Whole 2 MiB pages, at least one: small images still get huge pages.
                out[kind] = max(1, round(out[kind] / (1 << HPAGE_ORDER))) << HPAGE_ORDER
        else:
            out[kind] = int(value)
    if frac_sum > 1.0 + 1e-9:
        raise UsageError(f"page-kind fractions add up to {frac_sum:.3f} > 1")
    total = sum(v for k, v in out.items() if k != PageKind.ZERO)
    if total > free_pages:
        scale = free_pages / total
        out = {k: int(v * scale) for k, v in out.items()}
        total = sum(v for k, v in out.items() if k != PageKind.ZERO)
    out[PageKind.ZERO] = free_pages - total
    return out


def parse_size(text: str) -> int:
    """Parse ``64M``, ``4G``, ``512K``, ``4096`` (binary units) into bytes.

    Args:
        text: The size.

    Returns:
        Bytes.

    Raises:
        UsageError: Not a size.
    """
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"invalid size {text!r} (use e.g. 64M, 4G)")
    return int(m.group(1)) << (10 * " KMGT".index((m.group(2) or " ").upper()))


def parse_mix(text: str) -> dict[str, float]:
    """Parse ``cache=0.1,anon=0.2,hwpoison=3`` (fractions have a dot, counts do not).

    Args:
        text: Comma-separated ``kind=value`` pairs.

    Returns:
        The mix mapping (ints for counts, floats for fractions).

    Raises:
        UsageError: Malformed pair.
    """
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"invalid mix entry {part!r} (expected kind=value)")
        try:
            out[name.strip()] = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError as e:
            raise UsageError(f"invalid amount in mix entry {part!r}") from e
    mix_targets(out, 1)
    return out


# ----------------------------------------------------------------------------
# Ground truth
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """Where the generator put the kernel's structures.

    Attributes:
        page_offset: Start of the direct map (``page_offset_base``).
        vmemmap_base: Virtual address of the struct page of pfn 0.
        phys_base: ``NUMBER(phys_base)``.
        kernel_phys: Physical address of the kernel image.
        kernel_virt: Virtual address of the kernel image (``_stext``).
        kernel_pages: Pages of the kernel image.
        init_top_pgt: Physical address of the top-level page table.
        mem_section: Virtual address of the root array (``SYMBOL(mem_section)``).
        init_uts_ns: Virtual address of ``init_uts_ns``.
        present_sections: Section numbers that have a mem_map.
    """

    page_offset: int
    vmemmap_base: int
    phys_base: int
    kernel_phys: int
    kernel_virt: int
    kernel_pages: int
    init_top_pgt: int
    mem_section: int
    init_uts_ns: int
    present_sections: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class GeneratedImage:
    """A generated image and what a correct filter must find in it.

    Attributes:
        path: The image (ELF vmcore or raw memory).
        vmcoreinfo_path: The VMCOREINFO text file (raw images), else None.
        spec: The spec it was built from.
        vmcoreinfo: The VMCOREINFO text.
        kinds: ``uint8`` :class:`PageKind` per pfn, length ``max_mapnr``.
        orders: ``uint8`` per pfn: order of the buddy block or compound page
            it belongs to (blocks are aligned: the head is the first pfn), else 0.
        zero_content: Bool per pfn: the page's bytes are all zero.
        layout: Addresses of the kernel structures.
        utsname: ``init_uts_ns`` fields.
    """

    path: Path
    vmcoreinfo_path: Path | None
    spec: FixtureSpec
    vmcoreinfo: bytes
    kinds: np.ndarray
    orders: np.ndarray
    zero_content: np.ndarray
    layout: KernelLayout
    utsname: Mapping[str, bytes]

    @property
    def max_mapnr(self) -> int:
        """Number of pfns covered by the image."""
        return len(self.kinds)

    def count(self, kind: PageKind) -> int:
        """Return the number of pfns of ``kind``."""
        return int(np.count_nonzero(self.kinds == kind))

    def expected_second_bitmap(self, level: int) -> np.ndarray:
        """Return the 2nd bitmap a dump at ``level`` must have (makedumpfile 1.7.9 rules).

        Zero pages keep their bit (dl & 1 acts when writing, §5.4); hwpoison
        and offline pages are dropped at every level (§9.7 rules 7-8); free
        blocks, huge and compound pages go as a whole.

        Args:
            level: Dump level 0-31.

        Returns:
            Bool array of length ``max_mapnr``.
        """
        k = self.kinds
        drop = [PageKind.HOLE, PageKind.HWPOISON, PageKind.OFFLINE]
        if level & DumpLevel.CACHE:
            drop += [PageKind.CACHE, PageKind.SWAPCACHE]
        if level & DumpLevel.CACHE_PRIVATE:
            drop += [PageKind.CACHE, PageKind.CACHE_PRIVATE, PageKind.SWAPCACHE]
        if level & DumpLevel.USER:
            drop += [PageKind.ANON, PageKind.THP, PageKind.HUGETLB]
        if level & DumpLevel.FREE:
            drop.append(PageKind.BUDDY)
        return np.asarray(~np.isin(k, np.array(drop, np.uint8)))

    def expected_zero_pages(self, level: int) -> int:
        """Return how many dumpable pages are all zero (stored as the shared page at dl & 1).

        Args:
            level: Dump level.

        Returns:
            The count (0 when ``level`` lacks bit 1).
        """
        if not level & DumpLevel.ZERO:
            return 0
        return int(np.count_nonzero(self.expected_second_bitmap(level) & self.zero_content))

    def open_source(self) -> sources.Source:
        """Open the image with :mod:`vmcorepack.sources`."""
        if self.spec.fmt == "raw":
            return sources.open_raw(str(self.path), vmcoreinfo_file=str(self.vmcoreinfo_path))
        return sources.open_elf(str(self.path))

    def save_truth(self, path: str | os.PathLike[str]) -> None:
        """Save the per-pfn ground truth as a compressed ``.npz`` (kinds, zero_content, vmcoreinfo).

        Args:
            path: Output file.
        """
        with open(path, "wb") as f:
            np.savez_compressed(
                f,
                kinds=self.kinds,
                orders=self.orders,
                zero_content=self.zero_content,
                vmcoreinfo=np.frombuffer(self.vmcoreinfo, np.uint8),
            )


# ----------------------------------------------------------------------------
# Deterministic per-pfn randomness
# ----------------------------------------------------------------------------


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser over a uint64 array (wrapping arithmetic)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.asarray(z ^ (z >> np.uint64(31)))


def _pfn_hash(seed: int, pfns: np.ndarray, salt: int) -> np.ndarray:
    key = np.uint64((seed * 0x2545F4914F6CDD1D + salt * 0x9E3779B97F4A7C15) & _MASK64)
    return _splitmix(pfns.astype(np.uint64) ^ key)


def _unit(h: np.ndarray) -> np.ndarray:
    """Map hashes to floats in [0, 1)."""
    return np.asarray((h >> np.uint64(11)).astype(np.float64) / float(1 << 53))


# ----------------------------------------------------------------------------
# Physical memory plan
# ----------------------------------------------------------------------------


def default_holes(size: int) -> tuple[tuple[int, int], ...]:
    """PC-like memory holes for a span of ``size`` bytes.

    Page 0, the legacy VGA/BIOS area from 0x9fc00 (so the first PT_LOAD ends
    mid-page, as on real machines), a crashkernel area from 256 MiB up, and
    the PCI hole 3-4 GiB above 4 GiB.

    Args:
        size: Physical span.

    Returns:
        Sorted ``(start, end)`` ranges.
    """
    holes = [(0, PAGE_SIZE), (0x9FC00, 0x100000)]
    if size >= 256 * _MIB:
        ck = min(192 * _MIB, size // 8) & ~(2 * _MIB - 1)
        start = (size // 4) & ~(2 * _MIB - 1)
        holes.append((start, start + ck))
    if size > 4 * _GIB:
        holes.append((3 * _GIB, 4 * _GIB))
    return tuple(holes)


def _ram_ranges(size: int, holes: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    ranges = [(0, size)]
    for hs, he in sorted(holes):
        nxt: list[tuple[int, int]] = []
        for s, e in ranges:
            if he <= s or hs >= e:
                nxt.append((s, e))
                continue
            if s < hs:
                nxt.append((s, hs))
            if he < e:
                nxt.append((he, e))
        ranges = nxt
    return [(s, e) for s, e in ranges if e > s]


class _Phys:
    """Per-pfn kinds and a top-down allocator of free RAM pages."""

    def __init__(self, max_pfn: int, ram: list[tuple[int, int]]) -> None:
        self.max_pfn = max_pfn
        self.kinds = np.full(max_pfn, PageKind.HOLE, np.uint8)
        self.orders = np.zeros(max_pfn, np.uint8)
        for s, e in ram:
            # Only whole pages are RAM: makedumpfile's 1st bitmap rounds the end down.
            lo, hi = -(-s // PAGE_SIZE), e // PAGE_SIZE
            if hi > lo:
                self.kinds[lo:hi] = _UNASSIGNED
        self._cursor = max_pfn

    def free(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        return np.asarray(self.kinds[lo:hi] == _UNASSIGNED)

    def take_range(self, lo: int, n: int, kind: PageKind) -> None:
        if not self.free(lo, lo + n).all():
            raise UsageError(f"fixture too small: pfns {lo:#x}+{n} are not free RAM")
        self.kinds[lo : lo + n] = kind

    def take_aligned(self, npages: int, count: int, kind: PageKind) -> list[int]:
        """Take ``count`` free, ``npages``-aligned blocks from the top of RAM."""
        if count == 0:
            return []
        n_al = self.max_pfn - self.max_pfn % npages
        ok = np.flatnonzero(self.free(0, n_al).reshape(-1, npages).all(axis=1))
        if len(ok) < count:
            raise UsageError(f"fixture too small: need {count} free blocks of {npages} pages, have {len(ok)}")
        starts = (ok[-count:] * npages).tolist()
        for s in starts:
            self.kinds[s : s + npages] = kind
        return [int(s) for s in starts]

    def take_page(self, kind: PageKind) -> int:
        """Take the highest free page."""
        while self._cursor > 0:
            lo = max(0, self._cursor - 4096)
            w = np.flatnonzero(self.free(lo, self._cursor))
            if len(w):
                p = lo + int(w[-1])
                self.kinds[p] = kind
                self._cursor = p
                return p
            self._cursor = lo
        raise UsageError("fixture too small: out of free pages for kernel structures")


class _PageTables:
    """x86_64 page tables being built, one ``uint64[512]`` per table page."""

    def __init__(self, phys: _Phys, levels: int, top_pfn: int) -> None:
        self.phys = phys
        self.shifts = (48, 39, 30, 21, 12) if levels == 5 else (39, 30, 21, 12)
        self.top = top_pfn
        self.tables: dict[int, np.ndarray] = {top_pfn: np.zeros(512, np.uint64)}

    def map(self, va: int, pa: int, shift: int, prot: int) -> None:
        """Map one page of size ``1 << shift`` (12, 21 or 30)."""
        table = self.tables[self.top]
        for lvl_shift in self.shifts:
            idx = (va >> lvl_shift) & 511
            if lvl_shift == shift:
                if table[idx]:
                    raise UsageError(f"fixture bug: {va:#x} mapped twice")
                table[idx] = np.uint64(pa | prot | (_PTE_PSE if shift > 12 else 0))
                return
            entry = int(table[idx])
            if not entry:
                pfn = self.phys.take_page(PageKind.PGTABLE)
                self.tables[pfn] = np.zeros(512, np.uint64)
                table[idx] = np.uint64((pfn << PAGE_SHIFT) | _KERNPG_TABLE)
                entry = int(table[idx])
            if entry & _PTE_PSE:
                raise UsageError(f"fixture bug: {va:#x} lies under a large page")
            table = self.tables[(entry & 0x000FFFFFFFFFF000) >> PAGE_SHIFT]

    def map_range(self, va: int, pa: int, size: int, prot: int, big: bool, gb: bool) -> None:
        """Map ``[va, va+size)`` with the largest pages alignment allows."""
        end = va + size
        while va < end:
            if gb and big and va % _GIB == 0 and pa % _GIB == 0 and va + _GIB <= end:
                self.map(va, pa, 30, prot)
                step = _GIB
            elif big and va % (2 * _MIB) == 0 and pa % (2 * _MIB) == 0 and va + 2 * _MIB <= end:
                self.map(va, pa, 21, prot)
                step = 2 * _MIB
            else:
                self.map(va, pa, 12, prot)
                step = PAGE_SIZE
            va += step
            pa += step


@dataclasses.dataclass(frozen=True)
class _MemmapBlock:
    """Physical pages ``[phys_pfn, +npages)`` hold the struct pages of pfns from ``first_pfn``."""

    phys_pfn: int
    first_pfn: int
    npages: int


_SPAGE = np.dtype(
    [
        ("flags", "<u8"),
        ("w8", "<u8"),  # lru.next / compound_head / slab_list / slab_cache
        ("w16", "<u8"),  # lru.prev / compound_dtor+order+mapcount / freelist
        ("mapping", "<u8"),
        ("index", "<u8"),
        ("private", "<u8"),
        ("mapcount", "<i4"),  # _mapcount / page_type
        ("refcount", "<i4"),
        ("memcg", "<u8"),
    ]
)
assert _SPAGE.itemsize == SIZEOF_PAGE


class _Generator:
    """Builds one image: plan, kinds, struct pages, page contents, file."""

    def __init__(self, spec: FixtureSpec) -> None:
        spec.validate()
        self.spec = spec
        self.prof = PROFILES[spec.generation]
        self.rng = np.random.default_rng([spec.seed, 0x6B64])
        self.max_pfn = spec.size_bytes // PAGE_SIZE
        holes = spec.holes if spec.holes is not None else default_holes(spec.size_bytes)
        self.ram = _ram_ranges(spec.size_bytes, holes)
        if not self.ram:
            raise UsageError("fixture has no RAM left after the holes")
        self.phys = _Phys(self.max_pfn, self.ram)
        self.special: dict[int, bytes] = {}
        self.memmap: list[_MemmapBlock] = []
        self.l5 = spec.paging_levels == 5
        self.max_physmem_bits = 52 if self.l5 else 46
        self.osrelease = spec.osrelease or self.prof.osrelease
        self._plan_kernel()
        self._plan_memmap()
        self._plan_mem_section()
        self._plan_page_tables()
        self._write_kernel_image()
        self._assign_kinds()

    # -- layout ---------------------------------------------------------------
    def _plan_kernel(self) -> None:
        spec, rng = self.spec, self.rng
        if spec.kaslr:
            r_po, r_vm = int(rng.integers(0, 1024)), int(rng.integers(0, 1024))
        else:
            r_po = r_vm = 0
        if self.l5:
            self.page_offset = 0xFF11000000000000 + r_po * _GIB
            self.vmemmap_base = 0xFFD4000000000000 + r_vm * _GIB
        else:
            self.page_offset = 0xFFFF888000000000 + r_po * _GIB
            self.vmemmap_base = (0xFFFFD40000000000 + r_vm * _GIB) if spec.kaslr else 0xFFFFEA0000000000
        # Kernel image: 2 MiB aligned, from 16 MiB up when there is room (LOAD_PHYSICAL_ADDR).
        kbytes = min(max(spec.size_bytes // 32, 512 * 1024), 16 * _MIB)
        self.kpages = kbytes // PAGE_SIZE
        low = 16 * _MIB if spec.size_bytes >= 64 * _MIB else 2 * _MIB
        cands = []
        for s, e in self.ram:
            a = max(-(-s // (2 * _MIB)) * 2 * _MIB, low)
            while a + kbytes <= min(e, _GIB):
                cands.append(a)
                a += 2 * _MIB
        if not cands:
            raise UsageError("fixture too small: no room for the kernel image")
        kphys = int(cands[int(rng.integers(0, len(cands)))]) if spec.kaslr else cands[0]
        # Virtual offset V: phys_base = kphys - V stays >= 0 (physical KASLR never loads below V).
        vmax = min(kphys, _GIB - kbytes - 2 * _MIB)
        if spec.kaslr and vmax > 16 * _MIB:
            v = 16 * _MIB + int(rng.integers(0, (vmax - 16 * _MIB) // (2 * _MIB) + 1)) * 2 * _MIB
        else:
            v = min(16 * _MIB, kphys)
        self.kphys, self.kvirt = kphys, START_KERNEL_MAP + v
        self.phys_base = kphys - v
        self.kerneloffset = max(0, v - 16 * _MIB)
        self.phys.take_range(kphys // PAGE_SIZE, self.kpages, PageKind.KERNEL)
        # Kernel data pages at fixed places in the image's second half.
        half = self.kpages // 2
        self.k_top = kphys // PAGE_SIZE + half
        self.k_uts = self.k_top + 1
        self.k_pgdat = self.k_top + 2  # struct pglist_data (174208 bytes, 43 pages)

    def kva(self, pfn: int, off: int = 0) -> int:
        """Kernel-image virtual address of physical page ``pfn``."""
        return self.kvirt + (pfn * PAGE_SIZE - self.kphys) + off

    def dva(self, pa: int) -> int:
        """Direct-map virtual address of ``pa``."""
        return self.page_offset + pa

    def _plan_memmap(self) -> None:
        # A section has a mem_map when it holds RAM (sparse_init: present sections).
        nsec = -(-self.max_pfn // PAGES_PER_SECTION)
        present = []
        for nr in range(nsec):
            lo, hi = nr * PAGES_PER_SECTION, min((nr + 1) * PAGES_PER_SECTION, self.max_pfn)
            if np.any(self.phys.kinds[lo:hi] != PageKind.HOLE):
                present.append(nr)
        self.present = present
        # struct pages are populated up to the section end, or past max_pfn to a whole
        # makedumpfile batch (it reads 512 entries at a time).
        full = [nr for nr in present if (nr + 1) * PAGES_PER_SECTION <= self.max_pfn]
        blocks = self.phys.take_aligned(512, len(full), PageKind.MEMMAP)
        # Highest blocks for the highest sections, like per-node top-down memblock allocation.
        for nr, b in zip(full, sorted(blocks), strict=True):
            self.memmap.append(_MemmapBlock(b, nr * PAGES_PER_SECTION, 512))
        self.memmap_ptes: list[tuple[int, int]] = []  # (section, struct-page pages) mapped with 4 KiB pages
        for nr in present:
            if nr in full:
                continue
            npfn = -(-(self.max_pfn - nr * PAGES_PER_SECTION) // _BATCH) * _BATCH
            npages = npfn * SIZEOF_PAGE // PAGE_SIZE
            for i in range(npages):
                p = self.phys.take_page(PageKind.MEMMAP)
                self.memmap.append(_MemmapBlock(p, nr * PAGES_PER_SECTION + i * (PAGE_SIZE // SIZEOF_PAGE), 1))
        self.memmap.sort(key=lambda b: b.phys_pfn)
        self._memmap_keys = [b.phys_pfn for b in self.memmap]

    def _plan_mem_section(self) -> None:
        sec_size = 32
        per_root = PAGE_SIZE // sec_size
        self.nr_roots_total = (1 << (self.max_physmem_bits - SECTION_SIZE_BITS)) // per_root
        root_pages = self.nr_roots_total * 8 // PAGE_SIZE
        root_pfn = self.phys.take_aligned(root_pages, 1, PageKind.KERNEL)[0]
        roots = np.zeros(self.nr_roots_total, np.uint64)
        # One page of struct mem_section per root in use (sparse_index_alloc).
        sec_pages: dict[int, tuple[int, np.ndarray]] = {}
        for nr in self.present:
            r = nr // per_root
            if r not in sec_pages:
                p = self.phys.take_page(PageKind.KERNEL)
                sec_pages[r] = (p, np.zeros(PAGE_SIZE // 8, np.uint64))
                roots[r] = self.dva(p * PAGE_SIZE)
            # sparse_encode_mem_map(): mem_map - section_nr_to_pfn(nr), in struct page units,
            # plus SECTION_MARKED_PRESENT | HAS_MEM_MAP | IS_ONLINE | IS_EARLY.
            mem_map = self.vmemmap_base + nr * PAGES_PER_SECTION * SIZEOF_PAGE
            coded = (mem_map - nr * PAGES_PER_SECTION * SIZEOF_PAGE) & _MASK64
            sec_pages[r][1][(nr % per_root) * sec_size // 8] = np.uint64(coded | 0xF)
        for p, arr in sec_pages.values():
            self.special[p] = arr.tobytes()
        raw = roots.tobytes()
        for i in range(root_pages):
            chunk = raw[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]
            if any(chunk):
                self.special[root_pfn + i] = chunk
        self.mem_section_va = self.dva(root_pfn * PAGE_SIZE)

    def _plan_page_tables(self) -> None:
        spec = self.spec
        pt = _PageTables(self.phys, spec.paging_levels, self.k_top)
        # Kernel image: 2 MiB pages, the last partial 2 MiB with 4 KiB pages.
        pt.map_range(self.kvirt, self.kphys, self.kpages * PAGE_SIZE, _PAGE_KERNEL_EXEC, True, False)
        # Direct map of every RAM range (init_memory_mapping).
        for s, e in self.ram:
            s_al, e_al = s - s % PAGE_SIZE, -(-e // PAGE_SIZE) * PAGE_SIZE
            pt.map_range(self.dva(s_al), s_al, e_al - s_al, _PAGE_KERNEL, True, spec.gbpages)
        # vmemmap: one PMD per whole section, PTEs for a partial one (vmemmap_populate).
        for b in self.memmap:
            va = self.vmemmap_base + b.first_pfn * SIZEOF_PAGE
            pt.map_range(va, b.phys_pfn * PAGE_SIZE, b.npages * PAGE_SIZE, _PAGE_KERNEL, b.npages == 512, False)
        for pfn, table in pt.tables.items():
            self.special[pfn] = table.tobytes()

    def _write_kernel_image(self) -> None:
        prof = self.prof
        uts = {
            "sysname": b"Linux",
            "nodename": b"fixture-%d" % self.spec.seed,
            "release": self.osrelease.encode(),
            "version": b"#1 SMP PREEMPT_DYNAMIC Debian (vmcorepack fixture, kernel " + prof.name.encode() + b")",
            "machine": b"x86_64",
            "domainname": b"(none)",
        }
        self.utsname = uts
        page = bytearray(PAGE_SIZE)
        for i, key in enumerate(("sysname", "nodename", "release", "version", "machine", "domainname")):
            page[i * 65 : i * 65 + len(uts[key])] = uts[key]
        # node_online_map (nodemask_t, 128 bytes): node 0 online.
        page[0x800] = 1
        # node_data[MAX_NUMNODES]: node 0's pglist_data.
        page[0xC00:0xC08] = self.kva(self.k_pgdat).to_bytes(8, "little")
        self.special[self.k_uts] = bytes(page)
        self.sym_uts = self.kva(self.k_uts)
        self.sym_online = self.kva(self.k_uts, 0x800)
        self.sym_node_data = self.kva(self.k_uts, 0xC00)
        # pglist_data: node_start_pfn, node_spanned_pages, node_id (offsets of vmcoreinfo-A).
        base = 171552
        pg = bytearray(PAGE_SIZE)
        o = base % PAGE_SIZE
        pg[o : o + 8] = (3).to_bytes(8, "little")  # nr_zones
        pg[o + 8 : o + 16] = (0).to_bytes(8, "little")  # node_start_pfn
        pg[o + 24 : o + 32] = self.max_pfn.to_bytes(8, "little")  # node_spanned_pages
        pg[o + 32 : o + 36] = (0).to_bytes(4, "little")  # node_id
        pgdat_pages = -(-174208 // PAGE_SIZE)
        if pgdat_pages + 2 < self.kpages // 2:
            for i in range(pgdat_pages):
                self.special[self.k_pgdat + i] = bytes(PAGE_SIZE)
            self.special[self.k_pgdat + base // PAGE_SIZE] = bytes(pg)

    # -- kinds ----------------------------------------------------------------
    def _assign_kinds(self) -> None:
        """Spread the mix over the free RAM, one section at a time (bounded memory)."""
        phys, rng = self.phys, self.rng
        free_total = int(np.count_nonzero(phys.kinds == _UNASSIGNED))
        targets = mix_targets(self.spec.mix if self.spec.mix is not None else DEFAULT_MIX, free_total)
        order = [k for k in MIX_KINDS if k != PageKind.ZERO]
        remaining = np.array([targets.get(k, 0) for k in order], np.int64)
        left = free_total
        for lo in range(0, self.max_pfn, PAGES_PER_SECTION):
            hi = min(lo + PAGES_PER_SECTION, self.max_pfn)
            seg_k = phys.kinds[lo:hi]
            f = int(np.count_nonzero(seg_k == _UNASSIGNED))
            if f == 0:
                continue
            colors = np.append(remaining, max(0, left - int(remaining.sum())))
            take = rng.multivariate_hypergeometric(colors, f, method="marginals")[:-1]
            left -= f
            placed = self._fill_section(lo, seg_k, dict(zip(order, take.tolist(), strict=True)))
            remaining -= np.array([placed.get(k, 0) for k in order], np.int64)
            remaining = np.maximum(remaining, 0)
        phys.kinds[phys.kinds == _UNASSIGNED] = PageKind.ZERO

    def _fill_section(self, lo: int, seg: np.ndarray, take: dict[PageKind, int]) -> dict[PageKind, int]:
        """Place ``take`` pages of each kind in the free pages of ``seg`` (a view)."""
        rng = self.rng
        orders = self.phys.orders[lo : lo + len(seg)]
        placed: dict[PageKind, int] = {}

        def blocks(kind: PageKind, order: int, n: int) -> int:
            size = 1 << order
            n_al = len(seg) - len(seg) % size
            if n <= 0 or n_al == 0:
                return 0
            ok = np.flatnonzero((seg[:n_al] == _UNASSIGNED).reshape(-1, size).all(axis=1))
            if not len(ok):
                return 0
            chosen = rng.permutation(ok)[:n] * size
            for s in chosen.tolist():
                seg[s : s + size] = kind
                orders[s : s + size] = order
            placed[kind] = placed.get(kind, 0) + len(chosen) * size
            return len(chosen) * size

        # Huge pages first (2 MiB aligned), then free blocks and slabs from large orders down.
        for kind in (PageKind.HUGETLB, PageKind.THP):
            blocks(kind, HPAGE_ORDER, take.get(kind, 0) >> HPAGE_ORDER)
        for kind, top, p in ((PageKind.BUDDY, NR_PAGE_ORDERS - 1, 0.3), (PageKind.SLAB, 3, 0.3)):
            want = take.get(kind, 0)
            for order in range(top, 0, -1):
                n = int(rng.binomial((want - placed.get(kind, 0)) >> order, p))
                blocks(kind, order, n)
        # Single pages (including order-0 buddy and slab pages) at random free places.
        singles: list[np.ndarray] = []
        for kind in MIX_KINDS:
            if kind == PageKind.ZERO:
                continue
            n = take.get(kind, 0) - placed.get(kind, 0)
            if kind in (PageKind.THP, PageKind.HUGETLB):
                n = 0  # unplaced huge pages are carried over to the next section
            if n > 0:
                singles.append(np.full(n, kind, np.uint8))
        free = np.flatnonzero(seg == _UNASSIGNED)
        if singles:
            vals = rng.permutation(np.concatenate(singles))[: len(free)]
            pos = rng.permutation(free)[: len(vals)]
            seg[pos] = vals
            for kind, cnt in zip(*np.unique(vals, return_counts=True), strict=True):
                placed[PageKind(int(kind))] = placed.get(PageKind(int(kind)), 0) + int(cnt)
        return placed

    # -- struct page ----------------------------------------------------------
    def struct_pages(self, first_pfn: int, count: int) -> np.ndarray:
        """Return the ``struct page`` array of pfns ``[first_pfn, +count)`` (beyond max_pfn: zero)."""
        return self.struct_pages_at(np.arange(first_pfn, first_pfn + count, dtype=np.uint64))

    def struct_pages_at(self, pfn: np.ndarray) -> np.ndarray:
        """Return the ``struct page`` of each pfn in ``pfn`` (uint64; beyond max_pfn: zero)."""
        prof = self.prof
        n = len(pfn)
        sp = np.zeros(n, _SPAGE)
        if n == 0:
            return sp
        valid = pfn < np.uint64(self.max_pfn)
        at = np.minimum(pfn, np.uint64(self.max_pfn - 1)).astype(np.int64)
        k = np.where(valid, self.phys.kinds[at], np.uint8(PageKind.HOLE))
        o = np.where(valid, self.phys.orders[at], np.uint8(0)).astype(np.uint64)
        h = _pfn_hash(self.spec.seed, pfn, 1)
        h2 = _pfn_hash(self.spec.seed, pfn, 2)
        s = sp
        used = (k != PageKind.HOLE) & (k != PageKind.ZERO)
        high = np.uint64(prof.flags_high)
        flags = np.where(used, high, np.uint64(0))
        mapcount = np.where(used, -1, 0).astype(np.int32)
        refcount = np.where(used, 1 + (h & np.uint64(3)).astype(np.int32), 0).astype(np.int32)

        def bit(nr: int) -> np.uint64:
            return np.uint64(1 << nr)

        def ptr(hh: np.ndarray, align: int = 64) -> np.ndarray:
            """A plausible direct-map pointer, ``align``-aligned (bit 0 clear)."""
            span = np.uint64(max(self.spec.size_bytes, PAGE_SIZE))
            return np.asarray(np.uint64(self.page_offset) + ((hh % span) & np.uint64(~(align - 1) & _MASK64)))

        harmless = np.zeros(n, np.uint64)
        for j, b in enumerate(prof.harmless_bits):
            harmless |= np.where((h >> np.uint64(8 + j)) & np.uint64(1), bit(b), np.uint64(0))
        head_pfn = pfn & ~((np.uint64(1) << o) - np.uint64(1))
        is_head = pfn == head_pfn
        compound = np.isin(k, [PageKind.THP, PageKind.HUGETLB, PageKind.SLAB]) & (o > 0)
        tail = compound & ~is_head
        chead = compound & is_head
        mapping = np.zeros(n, np.uint64)
        w8 = np.zeros(n, np.uint64)
        w16 = np.zeros(n, np.uint64)
        private = np.zeros(n, np.uint64)
        index = np.zeros(n, np.uint64)

        def sel(kind: PageKind) -> np.ndarray:
            return np.asarray((k == kind) & ~tail)

        m = sel(PageKind.KERNEL) | sel(PageKind.MEMMAP)
        flags[m] |= bit(prof.pg_reserved)
        m = sel(PageKind.PGTABLE)
        mapcount[m] = prof.table
        m = sel(PageKind.CACHE) | sel(PageKind.CACHE_PRIVATE)
        flags[m] |= bit(prof.pg_lru) | bit(prof.pg_uptodate)
        flags[m] |= harmless[m]
        mapping[m] = ptr(h2[m])
        index[m] = h2[m] >> np.uint64(44)
        w8[m], w16[m] = ptr(h[m] >> np.uint64(3)), ptr(h2[m] >> np.uint64(5))
        mapcount[m] = np.where(h[m] & np.uint64(16), 0, -1)
        m = sel(PageKind.CACHE_PRIVATE)
        flags[m] |= bit(prof.pg_private)
        private[m] = ptr(h[m] >> np.uint64(7))
        m = sel(PageKind.SWAPCACHE)
        flags[m] |= bit(prof.pg_swapcache) | bit(prof.pg_swapbacked) | bit(prof.pg_uptodate)
        flags[m] |= np.where(h[m] & np.uint64(32), bit(prof.pg_lru), np.uint64(0))
        mapping[m] = ptr(h2[m])
        private[m] = (h2[m] >> np.uint64(40)) << np.uint64(1)  # swp_entry_t
        m = sel(PageKind.ANON) | (sel(PageKind.THP) & chead)
        flags[m] |= bit(prof.pg_lru) | bit(prof.pg_swapbacked) | bit(prof.pg_uptodate) | harmless[m]
        flags[m] |= np.where((h[m] & np.uint64(0x300)) == 0, bit(prof.pg_swapcache), np.uint64(0))
        # PAGE_MAPPING_ANON, sometimes PAGE_MAPPING_KSM (both have bit 0).
        mapping[m] = ptr(h2[m]) | np.where((h[m] & np.uint64(0x1F000)) == 0, np.uint64(3), np.uint64(1))
        index[m] = h2[m] >> np.uint64(40)
        mapcount[m] = 0
        m = sel(PageKind.HUGETLB) & chead
        flags[m] |= bit(prof.pg_uptodate)
        mapping[m] = ptr(h2[m])
        if prof.hugetlb_type is not None:
            mapcount[m] = prof.hugetlb_type
        m = sel(PageKind.SLAB)
        if prof.pg_slab is not None:
            # struct slab of 6.1: slab_list at 8, slab_cache at 24 (mapping's place).
            flags[m] |= bit(prof.pg_slab)
            w8[m], w16[m] = ptr(h[m]), ptr(h2[m] >> np.uint64(3))
            mapping[m] = ptr(h2[m], 8)
        else:
            # struct slab of 6.12: slab_cache at 8, freelist at 16, counters at 24 (may be odd).
            w8[m], w16[m] = ptr(h2[m], 8), ptr(h[m] >> np.uint64(3), 8)
            mapping[m] = h[m] >> np.uint64(16)
            mapcount[m] = prof.slab_type if prof.slab_type is not None else -1
        m = sel(PageKind.BUDDY)
        bhead = m & is_head
        mapcount[bhead] = prof.buddy
        private[bhead] = o[bhead]
        w8[bhead], w16[bhead] = ptr(h[bhead]), ptr(h2[bhead])
        refcount[m] = 0
        m = sel(PageKind.HWPOISON)
        flags[m] |= bit(prof.pg_hwpoison)
        m = sel(PageKind.OFFLINE)
        mapcount[m] = prof.offline
        refcount[m] = 0
        # Compound pages: PG_head on the head, compound_head | 1 in every tail,
        # the order (and 6.1's destructor) in the first tail.
        flags[chead] |= bit(prof.pg_head)
        w8[tail] = np.uint64(self.vmemmap_base) + head_pfn[tail] * np.uint64(SIZEOF_PAGE) + np.uint64(1)
        mapping[tail] = np.uint64(_TAIL_MAPPING)
        mapcount[tail] = -1
        refcount[tail] = 0
        first = tail & (pfn == head_pfn + np.uint64(1))
        mapping[first] = (np.uint64(1) << o[first]) << np.uint64(32)
        if prof.compound_in_flags:
            flags[first] |= o[first]
        else:
            # compound_dtor (byte 16), compound_order (byte 17), compound_mapcount -1 (bytes 20-23).
            dtor = np.where(k[first] == PageKind.HUGETLB, 2, np.where(k[first] == PageKind.THP, 3, 1)).astype(np.uint64)
            w16[first] = dtor | (o[first] << np.uint64(8)) | np.uint64(0xFFFFFFFF00000000)
        s["flags"] = flags
        s["w8"] = w8
        s["w16"] = w16
        s["mapping"] = mapping
        s["index"] = index
        s["private"] = private
        s["mapcount"] = mapcount
        s["refcount"] = refcount
        s["memcg"] = np.where(used & np.isin(k, [PageKind.CACHE, PageKind.ANON]), ptr(h2 >> np.uint64(9)), 0)
        return sp

    # -- page contents --------------------------------------------------------
    def pages(self, first_pfn: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the non-zero pages among pfns ``[first_pfn, +count)``.

        Only pages that can hold data get a buffer row, so a mostly-zero range
        costs almost nothing.

        Args:
            first_pfn: First pfn.
            count: Number of pfns.

        Returns:
            Sorted offsets (from ``first_pfn``) of the non-zero pages, and their
            contents as a ``(n, 4096)`` uint8 array.
        """
        per = PAGE_SIZE // SIZEOF_PAGE
        pfn = np.arange(first_pfn, first_pfn + count, dtype=np.uint64)
        k = self.phys.kinds[first_pfn : first_pfn + count]
        h = _pfn_hash(self.spec.seed, pfn, 3)
        zero = (k == PageKind.HOLE) | (k == PageKind.ZERO) | (k == PageKind.MEMMAP)
        zero |= (k != PageKind.KERNEL) & (_unit(h) < self.spec.zeroed_fraction)
        if self.spec.free_zeroed:
            zero |= k == PageKind.BUDDY
        special = [p - first_pfn for p in self.special if first_pfn <= p < first_pfn + count]
        zero[special] = True
        cand = ~zero
        # struct page arrays: a page of them can be non-zero only if it describes a used pfn.
        mm: list[tuple[int, int]] = []  # (row, first described pfn)
        i = max(0, bisect.bisect_right(self._memmap_keys, first_pfn) - 1)
        while i < len(self.memmap) and self.memmap[i].phys_pfn < first_pfn + count:
            b = self.memmap[i]
            i += 1
            lo, hi = max(b.phys_pfn, first_pfn), min(b.phys_pfn + b.npages, first_pfn + count)
            if lo >= hi:
                continue
            d0 = b.first_pfn + (lo - b.phys_pfn) * per
            d1 = min(d0 + (hi - lo) * per, self.max_pfn)
            dk = np.full((hi - lo) * per, PageKind.HOLE, np.uint8)
            dk[: max(0, d1 - d0)] = self.phys.kinds[d0:d1]
            used = ((dk != PageKind.HOLE) & (dk != PageKind.ZERO)).reshape(-1, per).any(axis=1)
            for r in np.flatnonzero(used).tolist():
                cand[lo - first_pfn + r] = True
                mm.append((lo - first_pfn + r, d0 + r * per))
        for r in special:
            cand[r] = bool(self.special[first_pfn + r])
        rows = np.flatnonzero(cand)
        pos = np.full(count, -1, np.int64)
        pos[rows] = np.arange(len(rows))
        buf = np.zeros((len(rows), PAGE_SIZE), np.uint8)
        todo = np.flatnonzero(~zero)
        if len(todo):
            hh = h[todo]
            idx = np.arange(512, dtype=np.uint64)
            rand = _unit(_pfn_hash(self.spec.seed, pfn[todo], 4)) < self.spec.incompressible_fraction
            # Compressible: runs of 16 equal words drawn from 4 low-entropy values.
            pat = _splitmix(hh[:, None] + (idx[None, :] >> np.uint64(4)) % np.uint64(4))
            pat &= np.uint64(0x0F0F0F0F0F0F0F0F)
            noise = _splitmix(hh[:, None] * np.uint64(0x100000001B3) + idx[None, :])
            words = np.where(rand[:, None], noise, pat)
            # Stamp: "PFN" and the pfn, so misplaced pages are caught.
            words[:, 0] = np.uint64(0x4E46500000000000) | pfn[todo]
            buf[pos[todo]] = words.view(np.uint8)
        if mm:
            # All struct-page pages of the chunk in one call.
            mrows = np.array([r for r, _ in mm], np.int64)
            firsts = np.array([d for _, d in mm], np.uint64)
            described = (firsts[:, None] + np.arange(per, dtype=np.uint64)[None, :]).reshape(-1)
            buf[pos[mrows]] = self.struct_pages_at(described).view(np.uint8).reshape(len(mm), PAGE_SIZE)
        for r in special:
            data = self.special[first_pfn + r]
            if data:
                buf[pos[r], : len(data)] = np.frombuffer(data, np.uint8)
        nz = buf.view(np.uint64).any(axis=1)
        return rows[nz], buf[nz]

    # -- VMCOREINFO and notes -------------------------------------------------
    def vmcoreinfo(self) -> bytes:
        """Return the VMCOREINFO text (keys and order of a real kernel of the generation)."""
        prof = self.prof
        build_id = _splitmix(np.array([self.spec.seed, 7, 8], np.uint64)).tobytes()[:20].hex()
        lines = [
            f"OSRELEASE={self.osrelease}",
            f"BUILD-ID={build_id}",
            f"PAGESIZE={PAGE_SIZE}",
            f"SYMBOL(init_uts_ns)={self.sym_uts:x}",
            "OFFSET(uts_namespace.name)=0",
            f"SYMBOL(node_online_map)={self.sym_online:x}",
            f"SYMBOL(swapper_pg_dir)={self.kva(self.k_top):x}",
            f"SYMBOL(_stext)={self.kvirt:x}",
            f"SYMBOL(mem_section)={self.mem_section_va:x}",
            f"LENGTH(mem_section)={self.nr_roots_total}",
            "SIZE(mem_section)=32",
            "OFFSET(mem_section.section_mem_map)=0",
            f"NUMBER(SECTION_SIZE_BITS)={SECTION_SIZE_BITS}",
            f"NUMBER(MAX_PHYSMEM_BITS)={self.max_physmem_bits}",
            f"SIZE(page)={SIZEOF_PAGE}",
            "SIZE(pglist_data)=174208",
            "SIZE(zone)=1536",
            "SIZE(free_area)=88",
            "SIZE(list_head)=16",
            "SIZE(nodemask_t)=128",
            "OFFSET(page.flags)=0",
            "OFFSET(page._refcount)=52",
            "OFFSET(page.mapping)=24",
            "OFFSET(page.lru)=8",
            "OFFSET(page._mapcount)=48",
            "OFFSET(page.private)=40",
        ]
        if not prof.compound_in_flags:
            lines += ["OFFSET(page.compound_dtor)=16", "OFFSET(page.compound_order)=17"]
        lines += [
            "OFFSET(page.compound_head)=8",
            "OFFSET(pglist_data.node_zones)=0",
            "OFFSET(pglist_data.nr_zones)=171552",
            "OFFSET(pglist_data.node_start_pfn)=171560",
            "OFFSET(pglist_data.node_spanned_pages)=171576",
            "OFFSET(pglist_data.node_id)=171584",
            "OFFSET(zone.free_area)=256",
            "OFFSET(zone.vm_stat)=1344",
            "OFFSET(zone.spanned_pages)=144",
            "OFFSET(free_area.free_list)=0",
            "OFFSET(list_head.next)=0",
            "OFFSET(list_head.prev)=8",
            f"LENGTH(zone.free_area)={NR_PAGE_ORDERS}",
            "LENGTH(free_area.free_list)=5",
            "NUMBER(NR_FREE_PAGES)=0",
            f"NUMBER(PG_lru)={prof.pg_lru}",
            f"NUMBER(PG_private)={prof.pg_private}",
            f"NUMBER(PG_swapcache)={prof.pg_swapcache}",
            f"NUMBER(PG_swapbacked)={prof.pg_swapbacked}",
        ]
        if prof.pg_slab is not None:
            lines.append(f"NUMBER(PG_slab)={prof.pg_slab}")
        else:
            lines.append(f"NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)={prof.slab_type}")
        lines += [
            f"NUMBER(PG_hwpoison)={prof.pg_hwpoison}",
            f"NUMBER(PG_head_mask)={1 << prof.pg_head}",
            f"NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)={prof.buddy}",
        ]
        if prof.hugetlb_type is not None:
            lines.append(f"NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)={prof.hugetlb_type}")
        else:
            lines.append("NUMBER(HUGETLB_PAGE_DTOR)=2")
        lines += [
            f"NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)={prof.offline}",
            f"NUMBER(phys_base)={self.phys_base}",
            f"SYMBOL(init_top_pgt)={self.kva(self.k_top):x}",
            f"NUMBER(pgtable_l5_enabled)={1 if self.l5 else 0}",
            f"SYMBOL(node_data)={self.sym_node_data:x}",
            "LENGTH(node_data)=1024",
            f"KERNELOFFSET={self.kerneloffset:x}",
            "NUMBER(KERNEL_IMAGE_SIZE)=1073741824",
            "NUMBER(sme_mask)=0",
            f"CRASHTIME={self.spec.crashtime}",
        ]
        return ("\n".join(lines) + "\n").encode()

    def notes(self, vmcoreinfo: bytes) -> bytes:
        """Return the PT_NOTE blob: one CORE/NT_PRSTATUS per CPU, then VMCOREINFO."""
        parts = []
        for cpu in range(self.spec.nr_cpus):
            pr = np.zeros(PRSTATUS_SIZE // 8, np.uint64)
            pr[32 // 8] = np.uint64(cpu + 1 if cpu else 1234)  # pr_pid (pr_ppid 0)
            regs = np.zeros(27, np.uint64)
            regs[16] = np.uint64(self.kvirt + 0x1000 + cpu * 0x40)  # rip
            regs[17] = np.uint64(0x10)  # cs
            regs[18] = np.uint64(0x46)  # eflags
            regs[19] = np.uint64(self.dva(self.kphys) + 0x3F00 - cpu * 0x100)  # rsp
            regs[20] = np.uint64(0x18)  # ss
            pr[112 // 8 : 112 // 8 + 27] = regs
            parts.append(elf.encode_note(b"CORE", elf.NT_PRSTATUS, pr.tobytes()))
        parts.append(elf.encode_note(b"VMCOREINFO", 0, vmcoreinfo))
        return b"".join(parts)

    def layout(self) -> KernelLayout:
        """Return the kernel layout summary."""
        return KernelLayout(
            page_offset=self.page_offset,
            vmemmap_base=self.vmemmap_base,
            phys_base=self.phys_base,
            kernel_phys=self.kphys,
            kernel_virt=self.kvirt,
            kernel_pages=self.kpages,
            init_top_pgt=self.k_top * PAGE_SIZE,
            mem_section=self.mem_section_va,
            init_uts_ns=self.sym_uts,
            present_sections=tuple(self.present),
        )

    # -- writing --------------------------------------------------------------
    def write_pages(self, fd: int, file_offset: int, first_pfn: int, count: int, zero_out: np.ndarray | None) -> None:
        """Write pfns ``[first_pfn, +count)`` at ``file_offset``, skipping zero pages (sparse)."""
        special = np.array(sorted(self.special), np.int64)
        for lo in range(first_pfn, first_pfn + count, _WRITE_CHUNK):
            n = min(_WRITE_CHUNK, first_pfn + count - lo)
            if zero_out is not None:
                zero_out[lo : lo + n] = True
            k = self.phys.kinds[lo : lo + n]
            busy = bool(np.any((k != PageKind.ZERO) & (k != PageKind.HOLE)))
            if not busy and not np.any((special >= lo) & (special < lo + n)):
                continue
            rows, data = self.pages(lo, n)
            if zero_out is not None:
                zero_out[lo + rows] = False
            mask = np.zeros(n, bool)
            mask[rows] = True
            r = 0
            for a, b in _runs(mask):
                _pwrite_all(fd, data[r : r + b - a].data, file_offset + (lo - first_pfn + a) * PAGE_SIZE)
                r += b - a


def _runs(mask: np.ndarray) -> Iterator[tuple[int, int]]:
    """Yield ``[a, b)`` runs of True in a bool array."""
    if not len(mask):
        return
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    yield from zip(starts.tolist(), ends.tolist(), strict=True)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def build(spec: FixtureSpec, path: str | os.PathLike[str]) -> GeneratedImage:
    """Generate an image (overwriting ``path``) and return it with its ground truth.

    For ``fmt="raw"`` the VMCOREINFO text goes to ``path + ".vmcoreinfo"``
    (give it to ``vmcorepack --raw -i``).

    Args:
        spec: What to build.
        path: Output file.

    Returns:
        The image and its ground truth.

    Raises:
        UsageError: The spec is invalid or the size too small for it.
    """
    gen = _Generator(spec)
    vi = gen.vmcoreinfo()
    out = Path(path)
    zero = np.zeros(gen.max_pfn, bool)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if spec.fmt == "raw":
            gen.write_pages(fd, 0, 0, gen.max_pfn, zero)
            os.ftruncate(fd, spec.size_bytes)
            raw_vi = Path(str(out) + ".vmcoreinfo")
            raw_vi.write_bytes(vi)
            vi_path: Path | None = raw_vi
            kinds = gen.phys.kinds.copy()
            kinds[kinds == PageKind.HOLE] = PageKind.ZERO  # the raw file covers holes with zeros
        else:
            vi_path = None
            kinds = gen.phys.kinds.copy()
            _write_elf(gen, fd, vi, zero)
    finally:
        os.close(fd)
    return GeneratedImage(out, vi_path, spec, vi, kinds, gen.phys.orders.copy(), zero, gen.layout(), dict(gen.utsname))


def _write_elf(gen: _Generator, fd: int, vmcoreinfo: bytes, zero: np.ndarray) -> None:
    """Write an ELF vmcore: PT_NOTE, [kernel-text PT_LOAD,] one PT_LOAD per RAM range."""
    notes = gen.notes(vmcoreinfo)
    loads: list[tuple[int, int, int]] = []  # (vaddr, paddr, size)
    if gen.spec.kernel_text_alias:
        loads.append((gen.kvirt, gen.kphys, gen.kpages * PAGE_SIZE))
    loads += [(gen.dva(s), s, e - s) for s, e in gen.ram]
    phnum = 1 + len(loads)
    head_size = elf.ELF64LE.ehdr.itemsize + phnum * elf.ELF64LE.phdr.itemsize
    note_off = head_size
    off = -(-(note_off + len(notes)) // PAGE_SIZE) * PAGE_SIZE
    phdrs = [elf.encode_phdr(elf.PT_NOTE, note_off, 0, 0, len(notes), len(notes), 0)]
    placed: list[tuple[int, int, int]] = []
    for vaddr, paddr, size in loads:
        phdrs.append(elf.encode_phdr(elf.PT_LOAD, off, vaddr, paddr, size, size))
        placed.append((off, paddr, size))
        off = -(-(off + size) // PAGE_SIZE) * PAGE_SIZE
    _pwrite_all(fd, memoryview(elf.encode_ehdr(phnum) + b"".join(phdrs) + notes), 0)
    for i, (foff, paddr, size) in enumerate(placed):
        first = paddr // PAGE_SIZE
        npages = -(-(paddr + size) // PAGE_SIZE) - first
        alias = gen.spec.kernel_text_alias and i == 0
        gen.write_pages(fd, foff - (paddr % PAGE_SIZE), first, npages, None if alias else zero)
    os.ftruncate(fd, placed[-1][0] + placed[-1][2])


def pack_image(
    image: GeneratedImage,
    output: str | os.PathLike[str],
    dump_level: int,
    codec: str = "none",
    workers: int = 0,
    force: bool = False,
) -> pipeline.PackResult:
    """Pack a generated image with :func:`vmcorepack.pipeline.pack` (a matched source/dump pair).

    Args:
        image: The generated image.
        output: Dump file path.
        dump_level: Dump level.
        codec: Codec name.
        workers: Worker processes (0: in this process).
        force: Overwrite an existing dump.

    Returns:
        The pack result.
    """
    opts = pipeline.PackOptions(dump_level=dump_level, codec=codec, workers=workers, force=force)
    with image.open_source() as src:
        return pipeline.pack(src, os.fspath(output), opts)
