"""--dedup on the real fixture: smaller, the same for any worker count, every page reads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import require_kdumpfile
from helpers import file_sha256, kdumpfile_reads_every_page
from vmcorepack.pipeline import PackOptions, pack
from vmcorepack.sources import open_elf


@pytest.mark.slow
@pytest.mark.interop
def test_dedup_real_fixture(real_vmcore: Path, tmp_path: Path) -> None:
    require_kdumpfile()
    digests = set()
    for workers in (0, 2):
        out = tmp_path / f"w{workers}.kdump"
        with open_elf(str(real_vmcore)) as src:
            pack(src, str(out), PackOptions(dump_level=1, codec="zlib", workers=workers, dedup=True))
        digests.add(file_sha256(out))
    assert len(digests) == 1
    plain = tmp_path / "plain.kdump"
    with open_elf(str(real_vmcore)) as src:
        pack(src, str(plain), PackOptions(dump_level=1, codec="zlib", workers=2))
    # The fixture repeats pages (benchmarks/micro.py: 10.6% of its kept non-zero pages).
    assert out.stat().st_size < 0.97 * plain.stat().st_size
    assert kdumpfile_reads_every_page(out, real_vmcore) > 200_000
