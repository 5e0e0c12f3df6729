"""Differential test: Debian's makedumpfile (1.7.2) filters generated images as their ground truth says.

makedumpfile walks our page tables, decodes our mem_section and reads every
``struct page``; its 2nd bitmap must equal ``expected_second_bitmap`` at every
level.  On the 6.12 encoding, 1.7.2 predates two rules of 1.7.9
(docs/kdump-format.md §9.6, §14.3): it takes a slab page whose ``counters``
word (at mapping's offset) has bit 0 for anonymous, it does not know the
hugetlb page type, and it cannot find the folio order (the low byte of the
first tail's flags since 6.6), so it drops only the head of a THP.  The
differences must be exactly those.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import require_tool
from vmcorepack import fixtures as F
from vmcorepack.fixtures import FixtureSpec, PageKind
from vmcorepack.reader import KdumpReader

LEVELS = (0, 1, 2, 4, 8, 16, 31)
MIB = 1 << 20

pytestmark = pytest.mark.interop


def _makedumpfile_bitmap(tool: str, img: F.GeneratedImage, level: int, out) -> np.ndarray:
    r = subprocess.run([tool, "-d", str(level), str(img.path), str(out)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with KdumpReader(str(out)) as rd:
        got = np.zeros(img.max_mapnr, bool)
        got[rd.dumpable_pfns()] = True
        return got


@pytest.mark.parametrize(
    ("levels", "size", "seed"),
    [pytest.param(4, 40 * MIB, 1, id="l4-40M"), pytest.param(5, 24 * MIB, 2, id="l5-24M")],
)
def test_makedumpfile_matches_truth_6_1(tmp_path, levels: int, size: int, seed: int) -> None:
    tool = require_tool("makedumpfile")
    img = F.build(FixtureSpec(size_bytes=size, seed=seed, paging_levels=levels), tmp_path / "img.elf")
    for level in LEVELS:
        got = _makedumpfile_bitmap(tool, img, level, tmp_path / f"d{level}.kdump")
        diff = np.flatnonzero(got != img.expected_second_bitmap(level, bitmap_file=False))
        assert not len(diff), [(hex(p), PageKind(int(img.kinds[p])).name) for p in diff[:10]]


def test_makedumpfile_multi_section(tmp_path) -> None:
    """Several sections, 2 MiB vmemmap blocks, a crashkernel hole, 1 GiB direct-map pages."""
    tool = require_tool("makedumpfile")
    mix = {"cache": 0.01, "anon": 0.01, "buddy": 0.02, "thp": 1024, "hugetlb": 512, "slab": 300, "hwpoison": 2}
    img = F.build(FixtureSpec(size_bytes=1 << 30, seed=4, mix=mix), tmp_path / "img.elf")
    assert len(img.layout.present_sections) > 4
    for level in (0, 31):
        got = _makedumpfile_bitmap(tool, img, level, tmp_path / f"d{level}.kdump")
        assert np.array_equal(got, img.expected_second_bitmap(level, bitmap_file=False))


def test_makedumpfile_1_7_2_on_6_12(tmp_path) -> None:
    tool = require_tool("makedumpfile")
    img = F.build(FixtureSpec(size_bytes=24 * MIB, seed=5, generation="6.12"), tmp_path / "img.elf")
    for level in LEVELS:
        got = _makedumpfile_bitmap(tool, img, level, tmp_path / f"d{level}.kdump")
        diff = got != img.expected_second_bitmap(level, bitmap_file=False)
        if not level & 8:
            assert not diff.any(), level
            continue
        # Only slab pages (taken for anonymous), hugetlb pages (kept) and THP tails (kept) differ.
        assert diff.any()
        assert set(np.unique(img.kinds[diff]).tolist()) <= {PageKind.SLAB, PageKind.HUGETLB, PageKind.THP}
        assert got[img.kinds == PageKind.HUGETLB].all()
        thp = np.flatnonzero(img.kinds == PageKind.THP)
        heads = thp[thp % 512 == 0]
        assert not got[heads].any() and got[np.setdiff1d(thp, heads)].all()
