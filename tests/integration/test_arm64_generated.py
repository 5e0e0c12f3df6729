"""arm64 images of every granule packed and checked against the generator's ground truth (issue 17, point 6).

The 2nd bitmap at -d 1 and -d 31, block_size, utsname, and every kept page
read back through libkdumpfile equal to the source.  tests/interop/test_arm64_real.py
does the same against makedumpfile on real captures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import require_kdumpfile
from helpers import elf_page_reader, in_child
from vmcorepack import bitmap, fixtures
from vmcorepack.cli import main
from vmcorepack.reader import KdumpReader

CONFIGS = [(4096, 39), (4096, 48), (4096, 52), (16384, 36), (16384, 47), (16384, 48), (65536, 42), (65536, 48)]


def _kept_pages_match(dump: Path, vmcore: Path, page_size: int, pfns: list[int]) -> int:
    import kdumpfile

    k = kdumpfile.kdumpfile(str(dump))
    src = elf_page_reader(vmcore, page_size)
    for pfn in pfns:
        got = k.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * page_size, page_size)
        assert bytes(got) == src(pfn), f"pfn {pfn:#x} differs"
    return len(pfns)


@pytest.mark.parametrize(("ps", "va"), CONFIGS, ids=[f"{ps >> 10}K-{va}" for ps, va in CONFIGS])
def test_arm64_image_packs_to_the_ground_truth(tmp_path: Path, ps: int, va: int) -> None:
    size = (64 << 20) if ps < 65536 else (512 << 20)
    spec = fixtures.FixtureSpec(arch="arm64", page_size=ps, va_bits=va, size_bytes=size, seed=ps + va)
    img = fixtures.build(spec, tmp_path / "img.vmcore")
    for level in (1, 31):
        out = tmp_path / f"d{level}.kdump"
        assert main(["--message-level", "0", "-l", "-d", str(level), str(img.path), str(out)]) == 0
        with KdumpReader(str(out)) as r:
            assert r.header.block_size == ps
            assert r.header.utsname["machine"] == "aarch64"
            bits = bitmap.unpack(r.bitmap2, r.header.max_mapnr)[: img.max_mapnr]
            kept = r.dumpable_pfns()
        assert np.array_equal(bits, img.expected_second_bitmap(level)), f"-d {level}: 2nd bitmap differs"
    require_kdumpfile()
    every = [int(p) for p in kept]
    assert in_child(_kept_pages_match, tmp_path / "d31.kdump", img.path, ps, every) == len(every) > 500


@pytest.mark.parametrize("ps", [16384, 65536])
def test_elf_output_and_split_carry_the_page_size(tmp_path: Path, ps: int) -> None:
    """-E and --split of a 16/64 KiB-page image: the ELF's PT_LOADs hold every kept page, the parts reassemble."""
    spec = fixtures.FixtureSpec(arch="arm64", page_size=ps, va_bits=48, size_bytes=512 << 20, seed=11)
    img = fixtures.build(spec, tmp_path / "img.vmcore")
    direct, elf_out = tmp_path / "direct.kdump", tmp_path / "out.elf"
    common = ["--message-level", "0", "-d", "31"]
    assert main([*common, "-l", str(img.path), str(direct)]) == 0
    assert main([*common, "-E", str(img.path), str(elf_out)]) == 0
    with KdumpReader(str(direct)) as r:
        kept = [int(p) for p in r.dumpable_pfns()]
        pages = {p: r.read_page(p) for p in kept[:: max(1, len(kept) // 300)]}
    out = elf_page_reader(elf_out, ps)
    nonzero = {pfn: page for pfn, page in pages.items() if any(page)}  # -E leaves zero pages out at dl & 1
    assert len(nonzero) > 100
    for pfn, page in nonzero.items():
        assert out(pfn) == page, f"-E: pfn {pfn:#x}"
    parts = [tmp_path / f"part{i}" for i in range(3)]
    split = [*common, "-l", "--split", "--splitblock-size", str(ps * 64 // 1024), str(img.path), *map(str, parts)]
    assert main(split) == 0
    merged = tmp_path / "merged.kdump"
    assert main(["--message-level", "0", "--reassemble", *map(str, parts), str(merged)]) == 0
    assert merged.read_bytes() == direct.read_bytes()
