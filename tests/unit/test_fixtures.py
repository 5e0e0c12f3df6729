"""vmcorepack.fixtures: determinism, kernel structures reachable by a page walk, round trips."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from vmcorepack import fixtures as F
from vmcorepack import mkfixture
from vmcorepack.errors import UsageError
from vmcorepack.fixtures import FixtureSpec, PageKind
from vmcorepack.kernel.arch import x86_64
from vmcorepack.reader import KdumpReader
from vmcorepack.sources import Source

MIB = 1 << 20
ENTRY_MASK = 0x000FFFFFFFFFF000


def _sha(path: os.PathLike[str] | str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> F.GeneratedImage:
    return F.build(FixtureSpec(size_bytes=16 * MIB, seed=11), tmp_path_factory.mktemp("fx") / "small.elf")


# -- an independent reader of the kernel structures (docs/kdump-format.md §9.4, §9.5) ----------


def _u64(src: Source, pa: int) -> int:
    return int.from_bytes(src.read_phys(pa, 8), "little")


def _vtop(src: Source, va: int) -> int:
    vi = src.vmcoreinfo
    assert vi is not None
    top = vi.require("SYMBOL", "init_top_pgt") - 0xFFFFFFFF80000000 + x86_64.phys_base(src)
    shifts = (48, 39, 30, 21, 12) if vi.number("pgtable_l5_enabled") else (39, 30, 21, 12)
    table = top
    for shift in shifts:
        e = _u64(src, table + ((va >> shift) & 511) * 8)
        assert e & 1, f"{va:#x} not present at shift {shift}"
        if shift in (30, 21) and e & 0x80:
            return (e & ENTRY_MASK & ~((1 << shift) - 1)) + (va & ((1 << shift) - 1))
        table = e & ENTRY_MASK
    return table + (va & 4095)


def _struct_page(src: Source, pfn: int) -> bytes:
    vi = src.vmcoreinfo
    assert vi is not None
    per_root = 4096 // vi.require("SIZE", "mem_section")
    nr = pfn >> 15
    root = _u64(src, _vtop(src, vi.require("SYMBOL", "mem_section") + (nr // per_root) * 8))
    coded = _u64(src, _vtop(src, root + (nr % per_root) * vi.require("SIZE", "mem_section")))
    assert coded & 1, "section not present"
    mem_map = (coded & ~0x1F) + (nr << 15) * 64
    return src.read_phys(_vtop(src, mem_map + (pfn - (nr << 15)) * 64), 64)


@pytest.mark.parametrize(
    ("generation", "levels", "fmt"),
    [
        pytest.param("6.1", 4, "elf", id="6.1-l4-elf"),
        pytest.param("6.12", 5, "elf", id="6.12-l5-elf"),
        pytest.param("6.12", 4, "raw", id="6.12-l4-raw"),
    ],
)
def test_kernel_structures_walk(tmp_path, generation: str, levels: int, fmt: str) -> None:
    img = F.build(
        FixtureSpec(size_bytes=24 * MIB, seed=5, generation=generation, paging_levels=levels, fmt=fmt), tmp_path / "i"
    )
    prof = F.PROFILES[generation]
    with img.open_source() as src:
        vi = src.vmcoreinfo
        assert vi is not None
        assert vi.osrelease == prof.osrelease
        assert vi.number("pgtable_l5_enabled") == (levels == 5)
        uts = src.read_phys(_vtop(src, vi.require("SYMBOL", "init_uts_ns")), 6 * 65)
        assert uts[130:195].rstrip(b"\0") == prof.osrelease.encode()
        assert uts[:5] == b"Linux"
        ks = img.kinds
        head_mask = vi.require("NUMBER", "PG_head_mask")
        buddy = int(np.flatnonzero((ks == PageKind.BUDDY) & (img.orders >= 1))[0])
        sp = np.frombuffer(_struct_page(src, buddy), F._SPAGE)[0]
        assert int(sp["mapcount"]) == vi.require("NUMBER", "PAGE_BUDDY_MAPCOUNT_VALUE")
        assert int(sp["private"]) == int(img.orders[buddy])
        thp = int(np.flatnonzero(ks == PageKind.THP)[0])
        head = np.frombuffer(_struct_page(src, thp), F._SPAGE)[0]
        tail = np.frombuffer(_struct_page(src, thp + 1), F._SPAGE)[0]
        assert int(head["flags"]) & head_mask and int(head["mapping"]) & 1
        assert int(tail["w8"]) & 1
        if generation == "6.1":
            assert "NUMBER(PG_slab)" in vi.entries and "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)" not in vi.entries
            assert (int(tail["w16"]) >> 8) & 0xFF == 9  # compound_order at byte 17
            assert vi.require("NUMBER", "PAGE_BUDDY_MAPCOUNT_VALUE") == -129
        else:
            assert "NUMBER(PG_slab)" not in vi.entries
            assert vi.require("NUMBER", "PAGE_BUDDY_MAPCOUNT_VALUE") == -268435456
            assert vi.require("NUMBER", "PAGE_HUGETLB_MAPCOUNT_VALUE") == F._s32(0xF4 << 24)
            assert int(tail["flags"]) & 0xFF == 9  # folio order in the first tail's flags
        hw = int(np.flatnonzero(ks == PageKind.HWPOISON)[0])
        flags = int(np.frombuffer(_struct_page(src, hw), F._SPAGE)[0]["flags"])
        assert flags >> vi.require("NUMBER", "PG_hwpoison") & 1


def test_deterministic(tmp_path) -> None:
    spec = FixtureSpec(size_bytes=8 * MIB, seed=3)
    a = F.build(spec, tmp_path / "a.elf")
    b = F.build(spec, tmp_path / "b.elf")
    c = F.build(FixtureSpec(size_bytes=8 * MIB, seed=4), tmp_path / "c.elf")
    assert _sha(a.path) == _sha(b.path) != _sha(c.path)
    assert np.array_equal(a.kinds, b.kinds) and np.array_equal(a.zero_content, b.zero_content)
    r1 = F.build(FixtureSpec(size_bytes=8 * MIB, seed=3, fmt="raw"), tmp_path / "r1.raw")
    r2 = F.build(FixtureSpec(size_bytes=8 * MIB, seed=3, fmt="raw"), tmp_path / "r2.raw")
    assert _sha(r1.path) == _sha(r2.path)
    assert r1.vmcoreinfo == a.vmcoreinfo


def test_elf_layout(small: F.GeneratedImage) -> None:
    with small.open_source() as src:
        assert src.nr_cpus == 2
        segs = src.segments
        lay = small.layout
        # Kernel text PT_LOAD first, then RAM ranges at page_offset + paddr.
        assert int(segs[0]["virt_start"]) == lay.kernel_virt >= 0xFFFFFFFF80000000
        assert int(segs[0]["phys_start"]) == lay.kernel_phys
        for s in segs[1:]:
            assert int(s["virt_start"]) - int(s["phys_start"]) == lay.page_offset
        assert int(segs[1]["phys_start"]) == 0x1000 and int(segs[1]["phys_end"]) == 0x9FC00
        assert x86_64.phys_base(src) == lay.phys_base
        # Both copies of the kernel image hold the same bytes.
        text = src.read_file(int(segs[0]["file_offset"]), lay.kernel_pages * 4096)
        ram = next(s for s in segs[1:] if int(s["phys_start"]) <= lay.kernel_phys < int(s["phys_end"]))
        off = int(ram["file_offset"]) + lay.kernel_phys - int(ram["phys_start"])
        assert src.read_file(off, len(text)) == text


def test_kinds_and_truth(small: F.GeneratedImage) -> None:
    k = small.kinds
    assert small.count(PageKind.HWPOISON) == 3 and small.count(PageKind.OFFLINE) == 5
    for kind in (PageKind.THP, PageKind.HUGETLB):
        pfns = np.flatnonzero(k == kind)
        assert len(pfns) % 512 == 0 and (pfns[::512] % 512 == 0).all()
    assert small.count(PageKind.MEMMAP) == 16 * MIB // 4096 * 64 // 4096
    exp = [small.expected_second_bitmap(lvl) for lvl in range(32)]
    dropped = np.isin(k, [PageKind.HOLE, PageKind.HWPOISON, PageKind.OFFLINE])
    dropped[list(small.partial_pfns)] = False  # a HOLE the bitmap-file variant keeps (expected_second_bitmap)
    for lvl, bits in enumerate(exp):
        assert not bits[dropped].any()
        assert bits[np.isin(k, [PageKind.ZERO, PageKind.KERNEL, PageKind.SLAB, PageKind.MEMMAP])].all()
        assert bits[k == PageKind.BUDDY].any() == (not lvl & 16)
        assert bits[k == PageKind.HUGETLB].any() == (not lvl & 8)
    assert exp[2][k == PageKind.CACHE_PRIVATE].all() and not exp[4][k == PageKind.CACHE_PRIVATE].any()
    with small.open_source() as src:
        zero = np.flatnonzero(k == PageKind.ZERO)[:50]
        for p in zero.tolist():
            assert not src.read_pages(p, 1).any()
        busy = np.flatnonzero((k == PageKind.CACHE) & ~small.zero_content)[:50]
        for p in busy.tolist():
            assert src.read_pages(p, 1).any()


@pytest.mark.parametrize("fmt", ["elf", "raw"])
@pytest.mark.parametrize("level", [0, 1])
def test_roundtrip_levels_0_1(tmp_path, fmt: str, level: int) -> None:
    img = F.build(FixtureSpec(size_bytes=12 * MIB, seed=9, fmt=fmt), tmp_path / f"img.{fmt}")
    out = tmp_path / "out.kdump"
    res = F.pack_image(img, out, level, "zlib")
    assert res.zero_pages == img.expected_zero_pages(level)
    with KdumpReader(str(out)) as rd, img.open_source() as src:
        pfns = rd.dumpable_pfns()
        assert np.array_equal(pfns, np.flatnonzero(img.expected_second_bitmap(level)))
        pages = src.read_pages(0, img.max_mapnr)
        for p in pfns.tolist():
            assert rd.read_page(p) == pages[p].tobytes(), f"pfn {p:#x}"


def test_sparse_big_image(tmp_path) -> None:
    spec = FixtureSpec(size_bytes=2 << 30, seed=1, mix={"cache": 200, "anon": 200, "buddy": 300, "thp": 512})
    img = F.build(spec, tmp_path / "big.elf")
    st = os.stat(img.path)
    assert st.st_size > 1 << 30
    assert st.st_blocks * 512 < 48 * MIB
    assert img.count(PageKind.THP) == 512


def test_parse_helpers() -> None:
    assert F.parse_size("64M") == 64 * MIB and F.parse_size("4G") == 4 << 30 and F.parse_size("4096") == 4096
    assert F.parse_mix("cache=0.1, hwpoison=3") == {"cache": 0.1, "hwpoison": 3}
    for bad in ("12Q", "M"):
        with pytest.raises(UsageError):
            F.parse_size(bad)
    for bad in ("nosuch=1", "cache", "cache=x", "cache=0.7,anon=0.6"):
        with pytest.raises(UsageError):
            F.parse_mix(bad)
    for spec in (
        FixtureSpec(size_bytes=2 * MIB),
        FixtureSpec(size_bytes=4 * MIB, paging_levels=5),
        FixtureSpec(generation="5.4"),
        FixtureSpec(fmt="qcow2"),
        FixtureSpec(paging_levels=3),
    ):
        with pytest.raises(UsageError):
            spec.validate()


def test_mkfixture_cli(tmp_path, capsys) -> None:
    img, dump = tmp_path / "c.raw", tmp_path / "c.kdump"
    argv = ["--size", "8M", "--format", "raw", "--generation", "6.12", "--mix", "anon=0.2,buddy=100"]
    assert (
        mkfixture.main(
            [*argv, str(img), "--pack", "1", "--codec", "zlib", str(dump), "--truth", str(tmp_path / "t.npz")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "c.kdump: level 1" in out and os.path.exists(str(img) + ".vmcoreinfo")
    truth = np.load(tmp_path / "t.npz")
    assert len(truth["kinds"]) == 2048
    with KdumpReader(str(dump)) as rd:
        assert len(rd.dumpable_pfns()) == int(np.isin(truth["kinds"], [1, 2, 3, 4, 8, 9]).sum())
    assert mkfixture.main(["--size", "8M", str(img)]) == 1  # exists, no -f
    assert mkfixture.main(["--size", "1M", "-f", str(img)]) == 1
    assert mkfixture.main(["-f", str(img), "--pack", "1"]) == 1  # no DUMPFILE
    assert "vmcorepack-mkfixture:" in capsys.readouterr().err
