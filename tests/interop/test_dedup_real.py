"""--dedup on the real fixture: smaller, the same for any worker count, every page reads back."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conftest import require_kdumpfile
from helpers import elf_page_reader, elf_ram_pfns, runs
from vmcorepack.pipeline import PackOptions, pack
from vmcorepack.sources import open_elf


@pytest.mark.slow
@pytest.mark.interop
def test_dedup_real_fixture(real_vmcore: Path, tmp_path: Path) -> None:
    kdumpfile = require_kdumpfile()
    digests = set()
    for workers in (0, 2):
        out = tmp_path / f"w{workers}.kdump"
        with open_elf(str(real_vmcore)) as src:
            pack(src, str(out), PackOptions(dump_level=1, codec="zlib", workers=workers, dedup=True))
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1
    plain = tmp_path / "plain.kdump"
    with open_elf(str(real_vmcore)) as src:
        pack(src, str(plain), PackOptions(dump_level=1, codec="zlib", workers=2))
    # The fixture repeats pages (benchmarks/micro.py: 10.6% of its kept non-zero pages).
    assert out.stat().st_size < 0.97 * plain.stat().st_size
    k = kdumpfile.kdumpfile(str(out))
    src_pages = elf_page_reader(real_vmcore)
    for start, count in runs(elf_ram_pfns(real_vmcore)):
        for a in range(start, start + count, 256):
            n = min(256, start + count - a)
            got = k.read(kdumpfile.KDUMP_MACHPHYSADDR, a * 4096, n * 4096)
            assert bytes(got) == src_pages(a, n), f"pfn {a:#x}+{n} differs"
