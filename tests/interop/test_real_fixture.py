"""The real Debian 6.1 vmcore at -d 0 and -d 1, every codec: readers agree page for page (issue 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import codec_params, reference_head, require_drgn, require_kdumpfile, require_tool
from helpers import elf_page_reader, elf_ram_pfns, kdumpfile_reads_every_page, runs
from vmcorepack import codecs
from vmcorepack.pipeline import PackOptions, pack
from vmcorepack.reader import KdumpReader
from vmcorepack.sources import open_elf

pytestmark = [pytest.mark.interop, pytest.mark.slow]

READ_RUN = 256  # pages per reader call


@pytest.fixture(scope="session")
def dumps(real_vmcore: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, str], Path]:
    """Pack the fixture lazily: one dump per (level, codec) asked for."""
    made: dict[tuple[int, str], Path] = {}
    base = tmp_path_factory.mktemp("real")

    class Lazy(dict[tuple[int, str], Path]):
        def __missing__(self, key: tuple[int, str]) -> Path:
            level, codec = key
            out = base / f"d{level}-{codec}.kdump"
            with open_elf(str(real_vmcore)) as src:
                pack(src, str(out), PackOptions(dump_level=level, codec=codec, workers=2))
            self[key] = out
            return out

    return Lazy(made)


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("codec", codec_params())
def test_libkdumpfile_reads_every_page(real_vmcore: Path, dumps: dict, level: int, codec: str) -> None:
    require_kdumpfile()
    assert kdumpfile_reads_every_page(dumps[(level, codec)], real_vmcore, READ_RUN) > 200_000


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("codec", codec_params())
def test_drgn_reads_every_page(real_vmcore: Path, dumps: dict, level: int, codec: str) -> None:
    drgn = require_drgn()
    prog = drgn.Program()
    prog.set_core_dump(str(dumps[(level, codec)]))
    src = elf_page_reader(real_vmcore)
    for start, count in runs(elf_ram_pfns(real_vmcore)):
        for a in range(start, start + count, READ_RUN):
            n = min(READ_RUN, start + count - a)
            assert prog.read(a * 4096, n * 4096, True) == src(a, n), f"pfn {a:#x}+{n} differs"


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("codec", codec_params())
def test_crash_accepts(dumps: dict, level: int, codec: str) -> None:
    crash = require_tool("crash")
    r = subprocess.run(
        [crash, "-d", "1", "--osrelease", str(dumps[(level, codec)])], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "6.1.0-56-amd64"
    assert "total_valid_pages: 212856" in r.stdout


@pytest.mark.parametrize("level", [0, 1])
def test_first_bitmap_equals_makedumpfile(dumps: dict, level: int) -> None:
    head = reference_head(level)
    with KdumpReader(str(dumps[(level, "lzo")])) as ours:
        g = ours.geometry
        ref1 = np.frombuffer(head[g.bitmap1_offset : g.bitmap1_offset + g.bitmap_bytes], np.uint8)
        ours1 = np.frombuffer(ours.file.read(g.bitmap1_offset, g.bitmap_bytes), np.uint8)
        assert ours1.tobytes() == ref1.tobytes()
        assert int(np.unpackbits(ours1).sum()) == 212856


@pytest.mark.parametrize("level", [0, 1])
def test_headers_equal_makedumpfile(dumps: dict, level: int) -> None:
    """Everything up to the page_desc table equals makedumpfile 1.7.9's, with -l."""
    head = reference_head(level)
    with open(dumps[(level, "lzo")], "rb") as f:
        data = f.read(len(head))
    assert data == head
    assert codecs.available("lzo")
