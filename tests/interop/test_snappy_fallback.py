"""A -p dump written with the python-snappy fallback (no libsnappy) reads back through libkdumpfile and crash."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from conftest import require_kdumpfile, require_tool
from helpers import elf_page_reader
from vmcorepack import codecs
from vmcorepack.pipeline import PackOptions, pack
from vmcorepack.reader import KdumpReader
from vmcorepack.sources import open_elf

pytestmark = [pytest.mark.interop, pytest.mark.slow]


@pytest.fixture(scope="module")
def fallback_dump(real_vmcore: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real fixture at -d 31, snappy pages from python-snappy (forked workers inherit the choice)."""
    out = tmp_path_factory.mktemp("snappy") / "py.kdump"
    saved = codecs.CODECS["snappy"]
    # As without libsnappy: no C page loop for snappy either (it would dlopen libsnappy).
    codecs.CODECS["snappy"] = dataclasses.replace(saved, loaders=(codecs._python_snappy,), native_id=None)
    codecs._impl.cache_clear()
    try:
        assert codecs.get_codec("snappy").impl().label.startswith("python-snappy")
        with open_elf(str(real_vmcore)) as src:
            pack(src, str(out), PackOptions(dump_level=31, codec="snappy", workers=2))
    finally:
        codecs.CODECS["snappy"] = saved
        codecs._impl.cache_clear()
    return out


def test_pages_are_not_libsnappys_bytes(fallback_dump: Path) -> None:
    """Otherwise this file would not test the fallback: python-snappy's Rust encoder chooses other matches."""
    lib = codecs._libsnappy()
    differ = compressed = 0
    with KdumpReader(str(fallback_dump)) as r:
        for pfn in list(r.dumpable_pfns())[:3000]:
            d = r.descriptor(int(pfn))
            if int(d["flags"]) & codecs.CODECS["snappy"].flag:
                compressed += 1
                stored = r.file.read(int(d["offset"]), int(d["size"]))
                differ += stored != lib.compress(r.read_page(int(pfn)))
    assert compressed > 500 and differ > compressed // 10, (compressed, differ)


def test_libkdumpfile_reads_every_page(real_vmcore: Path, fallback_dump: Path) -> None:
    kdumpfile = require_kdumpfile()
    k = kdumpfile.kdumpfile(str(fallback_dump))
    src = elf_page_reader(real_vmcore)
    with KdumpReader(str(fallback_dump)) as r:
        pfns = [int(p) for p in r.dumpable_pfns()]
    for pfn in pfns:
        assert bytes(k.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * 4096, 4096)) == src(pfn, 1), f"pfn {pfn:#x}"
    assert len(pfns) > 20_000


def test_crash_opens_it(fallback_dump: Path) -> None:
    """crash accepts the file; without a vmlinux (and with no log buffer it can find in 6.1's VMCOREINFO)
    it reads only the headers, so the pages are checked above, through libkdumpfile."""
    crash = require_tool("crash")
    r = subprocess.run(
        [crash, "-d", "1", "--osrelease", str(fallback_dump)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "6.1.0-56-amd64"
    assert "status: 4 (DUMP_DH_COMPRESSED_SNAPPY)" in r.stdout
