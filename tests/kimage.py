"""Tiny synthetic x86_64 kernel images for the kernel-layer and filter unit tests.

An image is raw physical memory from address 0 plus a VMCOREINFO text file,
opened with ``sources.open_raw``.  Page tables are built on demand; the
kernel text map (``0xffffffff80000000 + pa``) covers the first 4 MiB with
2 MiB pages so a FLATMEM ``mem_map`` can live there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vmcorepack import sources
from vmcorepack.kernel.arch.x86_64 import START_KERNEL_MAP

PS = 4096
PRESENT_RW = 0x3
PSE = 0x80
PAGE_OFFSET = 0xFFFF_8880_0000_0000


class KImage:
    """Physical memory under construction."""

    def __init__(self, pages: int, five_level: bool = False, table_base_pfn: int | None = None) -> None:
        self.mem = np.zeros(pages * PS, np.uint8)
        self.five_level = five_level
        # Page tables are allocated downwards from the top of memory.
        self.next_table = (table_base_pfn if table_base_pfn is not None else pages - 1) * PS
        self.top = self.alloc_table()
        self.vmcoreinfo: dict[str, str] = {
            "OSRELEASE": "6.1.0",
            "PAGESIZE": str(PS),
            "SYMBOL(init_top_pgt)": f"{START_KERNEL_MAP + self.top:x}",
            "NUMBER(phys_base)": "0",
            "NUMBER(pgtable_l5_enabled)": "1" if five_level else "0",
        }

    # -- memory ---------------------------------------------------------------
    def u64(self, pa: int, value: int) -> None:
        self.mem[pa : pa + 8] = np.frombuffer((value & (2**64 - 1)).to_bytes(8, "little"), np.uint8)

    def put(self, pa: int, data: bytes) -> None:
        self.mem[pa : pa + len(data)] = np.frombuffer(data, np.uint8)

    def alloc_table(self) -> int:
        pa = self.next_table
        self.next_table -= PS
        return pa

    # -- page tables ----------------------------------------------------------
    def _entry(self, table: int, index: int) -> int:
        return int.from_bytes(self.mem[table + index * 8 : table + index * 8 + 8].tobytes(), "little")

    def map(self, va: int, pa: int, size: int, page: int = PS, flags: int = PRESENT_RW) -> None:
        """Map ``[va, va+size)`` to ``[pa, ...)`` with pages of ``page`` bytes (4K, 2M or 1G)."""
        shifts = [48, 39, 30, 21, 12] if self.five_level else [39, 30, 21, 12]
        leaf_shift = {PS: 12, 1 << 21: 21, 1 << 30: 30}[page]
        for off in range(0, size, page):
            v, p = va + off, pa + off
            table = self.top
            for shift in shifts:
                idx = (v >> shift) & 511
                if shift == leaf_shift:
                    self.u64(table + idx * 8, p | flags | (PSE if shift != 12 else 0))
                    break
                e = self._entry(table, idx)
                if not e & 1:
                    new = self.alloc_table()
                    self.u64(table + idx * 8, new | PRESENT_RW)
                    e = new | PRESENT_RW
                table = e & 0x000F_FFFF_FFFF_F000

    def map_text(self, size: int = 4 << 20) -> None:
        self.map(START_KERNEL_MAP, 0, size, 1 << 21)

    # -- output ---------------------------------------------------------------
    def write(self, directory: Path, name: str = "img") -> sources.Source:
        raw = directory / f"{name}.raw"
        vi = directory / f"{name}.vmcoreinfo"
        raw.write_bytes(self.mem.tobytes())
        vi.write_text("".join(f"{k}={v}\n" for k, v in self.vmcoreinfo.items()))
        return sources.open_raw(str(raw), 0, PS, str(vi))


# struct page layout used by the synthetic images (that of Linux 6.1, 64 bytes).
PAGE_FIELDS = {
    "flags": 0,
    "compound_head": 8,
    "compound_dtor": 16,
    "compound_order": 17,
    "mapping": 24,
    "private": 40,
    "_mapcount": 48,
    "_refcount": 52,
}
STRUCT_PAGE = np.dtype(
    {
        "names": ["flags", "chead", "dtor", "order", "mapping", "private", "mapcount", "refcount"],
        "formats": ["<u8", "<u8", "u1", "u1", "<u8", "<u8", "<i4", "<i4"],
        "offsets": [0, 8, 16, 17, 24, 40, 48, 52],
        "itemsize": 64,
    }
)
# Page-flag numbers of Linux 6.1 x86_64 (as in vmcore-A).
PG = {"lru": 4, "private": 13, "swapcache": 10, "swapbacked": 19, "slab": 9, "hwpoison": 23, "head": 16}


def flatmem_image(
    tmp: Path, pages: int = 2048, extra: dict[str, str | None] | None = None
) -> tuple[KImage, np.ndarray, int]:
    """An image whose FLATMEM mem_map sits at pa 0x100000 (kernel text va).

    ``extra`` adds or replaces VMCOREINFO keys; a value of None removes the key.

    Returns:
        (image, struct page array to fill before ``write``, mem_map pa).
    """
    img = KImage(pages)
    img.map_text()
    mem_map_pa = 0x100000
    ptr_pa = 0x2000
    img.u64(ptr_pa, START_KERNEL_MAP + mem_map_pa)
    img.vmcoreinfo.update(
        {
            "SYMBOL(mem_map)": f"{START_KERNEL_MAP + ptr_pa:x}",
            "SIZE(page)": "64",
            **{f"OFFSET(page.{k})": str(v) for k, v in PAGE_FIELDS.items()},
            "NUMBER(PG_lru)": str(PG["lru"]),
            "NUMBER(PG_private)": str(PG["private"]),
            "NUMBER(PG_swapcache)": str(PG["swapcache"]),
            "NUMBER(PG_swapbacked)": str(PG["swapbacked"]),
            "NUMBER(PG_slab)": str(PG["slab"]),
            "NUMBER(PG_hwpoison)": str(PG["hwpoison"]),
            "NUMBER(PG_head_mask)": str(1 << PG["head"]),
            "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)": "-129",
            "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)": "-257",
            "NUMBER(HUGETLB_PAGE_DTOR)": "2",
            "LENGTH(zone.free_area)": "11",
        }
    )
    for k, v in (extra or {}).items():
        if v is None:
            img.vmcoreinfo.pop(k, None)
        else:
            img.vmcoreinfo[k] = v
    sp = np.zeros(pages, STRUCT_PAGE)
    sp["mapcount"] = -1
    return img, sp, mem_map_pa


def finish_flatmem(img: KImage, sp: np.ndarray, mem_map_pa: int, tmp: Path, name: str = "img") -> sources.Source:
    img.put(mem_map_pa, sp.tobytes())
    return img.write(tmp, name)
