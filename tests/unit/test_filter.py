"""The per-page rules of makedumpfile 1.7.9 on synthetic struct pages (docs/kdump-format.md §9.6-9.7, §17.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kimage import PG, finish_flatmem, flatmem_image
from vmcorepack.errors import UnsupportedError, VmcoreinfoError
from vmcorepack.filter import ExclusionCounts, PageFilter, resolve_skips

N = 2048
LRU = 1 << PG["lru"]
PRIV = 1 << PG["private"]
HEAD = 1 << PG["head"]
FILE_MAPPING = 0xFFFF888001234000
ANON_MAPPING = 0xFFFF888005678001


def run(
    tmp: Path, pages: dict[int, dict[str, int]], level: int, extra: dict[str, str | None] | None = None, cycles: int = 1
) -> tuple[set[int], ExclusionCounts]:
    """Build an image, filter it, return (excluded pfns, counters)."""
    img, sp, mm_pa = flatmem_image(tmp, N, extra)
    for pfn, fields in pages.items():
        for k, v in fields.items():
            sp[pfn][k] = v
    src = finish_flatmem(img, sp, mm_pa, tmp, f"img{level}")
    flt = PageFilter(src, level)
    step = N // cycles
    bits = np.concatenate([flt.second_bitmap(s, s + step) for s in range(0, N, step)])
    return set(np.flatnonzero(~bits).tolist()), flt.counts


def test_page_classes_per_level(tmp_path: Path) -> None:
    pages: dict[int, dict[str, Any]] = {
        2: {"flags": LRU, "mapping": FILE_MAPPING},
        3: {"flags": LRU | PRIV, "mapping": FILE_MAPPING},
        4: {"flags": LRU | (1 << PG["swapbacked"]), "mapping": ANON_MAPPING},
        6: {"mapcount": -129, "private": 1},
        9: {"flags": 1 << PG["slab"], "mapping": ANON_MAPPING},
    }
    assert run(tmp_path, pages, 2)[0] == {2}
    excl, c = run(tmp_path, pages, 4)
    assert excl == {2, 3} and (c.cache, c.cache_private) == (1, 1)
    assert run(tmp_path, pages, 8)[0] == {4}  # slab with the anon bit is not user data (1.7.3+)
    excl, c = run(tmp_path, pages, 16)
    assert excl == {6, 7} and c.free == 2
    excl, c = run(tmp_path, pages, 31)
    assert excl == {2, 3, 4, 6, 7}
    assert (c.cache, c.cache_private, c.user, c.free) == (1, 1, 1, 2)


def test_hwpoison_and_offline_at_level_0(tmp_path: Path) -> None:
    pages = {2: {"flags": 1 << PG["hwpoison"]}, 3: {"mapcount": -257}}
    excl, c = run(tmp_path, pages, 0)
    assert excl == {2, 3} and (c.hwpoison, c.offline) == (1, 1)


def test_bit_tests_use_a_32_bit_mask(tmp_path: Path) -> None:
    # PG_hwpoison=55 tests bit 23; bit 55 itself is not seen (§17.1.2).
    pages = {10: {"flags": 1 << 23}, 11: {"flags": 1 << 55}}
    excl, c = run(tmp_path, pages, 0, {"NUMBER(PG_hwpoison)": "55"})
    assert excl == {10} and c.hwpoison == 1
    # PG number 31 sign-extends: any of bits 31-63.
    pages = {12: {"flags": 1 << 40}, 13: {"flags": 1 << 30}}
    assert run(tmp_path, pages, 0, {"NUMBER(PG_hwpoison)": "31"})[0] == {12}


def test_pg_slab_fallback_is_bit_7(tmp_path: Path) -> None:
    # 6.10+ kernels export no PG_slab: makedumpfile assumes 7 (PG_waiters there), §17.1.3.
    pages = {20: {"flags": LRU | 0x80, "mapping": ANON_MAPPING}}
    excl8, _ = run(tmp_path, pages, 8, {"NUMBER(PG_slab)": None})
    excl2, c2 = run(tmp_path, pages, 2, {"NUMBER(PG_slab)": None})
    assert excl8 == set() and excl2 == {20} and c2.cache == 1


def test_range_skips_pages_inside_it(tmp_path: Path) -> None:
    # 0x30 order 1 and 0x31 order 3: 0x31 is never examined (§17.1.4).
    pages = {0x30: {"mapcount": -129, "private": 1}, 0x31: {"mapcount": -129, "private": 3}}
    excl, c = run(tmp_path, pages, 16)
    assert excl == {0x30, 0x31} and c.free == 2


def test_invalid_buddy_order_is_kept(tmp_path: Path) -> None:
    pages = {0x40: {"mapcount": -129, "private": 11, "flags": 1 << PG["hwpoison"]}}
    excl, c = run(tmp_path, pages, 31)
    assert excl == set() and c.free == 0 and c.hwpoison == 0


def test_range_carried_into_the_next_cycle(tmp_path: Path) -> None:
    pages = {1020: {"mapcount": -129, "private": 3}}
    excl, c = run(tmp_path, pages, 16, cycles=2)
    assert excl == set(range(1020, 1028)) and c.free == 8


def test_range_counts_pfns_past_the_section(tmp_path: Path) -> None:
    # A range running past max_mapnr is clipped to the cycle, counted as cleared.
    pages = {N - 2: {"mapcount": -129, "private": 2}}
    excl, c = run(tmp_path, pages, 16)
    assert excl == {N - 2, N - 1} and c.free == 2


def test_compound_pages(tmp_path: Path) -> None:
    pages: dict[int, dict[str, Any]] = {
        # THP page cache of order 2: head, first tail carries the order.
        0x100: {"flags": LRU | HEAD, "mapping": FILE_MAPPING},
        0x101: {"chead": 0xFFFFEA0000004001, "order": 2},
        0x102: {"chead": 0xFFFFEA0000004001, "flags": LRU},  # tails are skipped
        0x103: {"chead": 0xFFFFEA0000004001},
        # hugetlb: dtor 2 in the first tail.
        0x280: {"flags": HEAD},
        0x281: {"chead": 0xFFFFEA0000008001, "order": 1, "dtor": 2},
        # head in batch slot 511: the first tail is not looked at (§17.1.1).
        511: {"flags": LRU | HEAD, "mapping": FILE_MAPPING},
        512: {"chead": 1, "order": 1},
        # misaligned order is ignored.
        0x302: {"flags": LRU | HEAD, "mapping": FILE_MAPPING},
        0x303: {"order": 2},
    }
    excl, c = run(tmp_path, pages, 2)
    assert excl == {0x100, 0x101, 0x102, 0x103, 511, 0x302} and c.cache == 6
    excl, c = run(tmp_path, pages, 8)
    assert excl == {0x280, 0x281} and c.user == 2


def test_page_types_of_6_12_compared_exactly(tmp_path: Path) -> None:
    extra: dict[str, str | None] = {
        "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)": "-268435456",  # 0xf0000000
        "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)": "-251658240",  # 0xf1000000
        "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)": "-184549376",  # 0xf5000000
        "NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)": "-201326592",  # 0xf4000000
        "NUMBER(PG_slab)": None,
    }
    i32 = lambda v: v - (1 << 32)  # noqa: E731
    pages: dict[int, dict[str, Any]] = {
        0x10: {"mapcount": i32(0xF0000000), "private": 0},
        0x11: {"mapcount": i32(0xF0000080), "private": 0},  # not exactly the value
        0x12: {"mapcount": i32(0xF1000000)},
        0x13: {"mapcount": i32(0xF5000000), "mapping": ANON_MAPPING},  # slab: never anon
        # 6.9+: hugetlb from the head's type, order from the first tail's flags.
        0x20: {"flags": HEAD, "mapcount": i32(0xF4000000)},
        0x21: {"flags": 1, "chead": 0xFFFFEA0000000801},
    }
    excl, c = run(tmp_path, pages, 31, extra)
    assert excl == {0x10, 0x12, 0x20, 0x21}
    assert (c.free, c.offline, c.user) == (1, 1, 2)


def test_no_vmcoreinfo_keys_for_level_2(tmp_path: Path) -> None:
    with pytest.raises(VmcoreinfoError) as e:
        run(tmp_path, {}, 2, {"OFFSET(page.mapping)": None})
    assert e.value.key == "OFFSET(page.mapping)"


def test_free_pages_need_a_buddy_marker(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError):
        run(tmp_path, {}, 16, {"OFFSET(page._mapcount)": None})


@pytest.mark.parametrize(
    ("starts", "ends", "resume", "keep"),
    [
        ([0, 4, 8], [4, 8, 12], 0, [True, True, True]),
        ([0, 1, 4], [2, 9, 8], 0, [True, False, True]),  # 1 inside [0,2): its longer range never happens
        ([0, 1, 2, 10], [10, 3, 20, 11], 0, [True, False, False, True]),  # 2 was skipped: its range cannot skip 10
        ([3, 6], [5, 7], 4, [False, True]),
    ],
)
def test_resolve_skips(starts: list[int], ends: list[int], resume: int, keep: list[bool]) -> None:
    got = resolve_skips(np.array(starts, np.int64), np.array(ends, np.int64), resume)
    assert got.tolist() == keep


def test_second_pass_counts_afresh(tmp_path: Path) -> None:
    img, sp, mm_pa = flatmem_image(tmp_path, N)
    sp[0x30]["mapcount"] = -129
    sp[0x30]["private"] = 2
    flt = PageFilter(finish_flatmem(img, sp, mm_pa, tmp_path), 16)
    first = flt.second_bitmap(0, N)
    assert flt.counts.free == 4
    assert (flt.second_bitmap(0, N) == first).all() and flt.counts.free == 4
