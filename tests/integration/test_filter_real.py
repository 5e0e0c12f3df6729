"""Filtering the real vmcore-A at every level: bitmaps, headers and --show-stats equal makedumpfile 1.7.9's."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REFERENCE, reference_head, reference_stats
from vmcorepack import bitmap, sources
from vmcorepack.cli import main
from vmcorepack.constants import DumpStatus
from vmcorepack.filter import PageFilter
from vmcorepack.pipeline import compute_bitmaps, write_bitmaps
from vmcorepack.writer import Output, make_plan, write_headers

LEVELS = [0, 1, 2, 4, 8, 16, 31]


class MemoryOutput(Output):
    """Collects the writes of the header phase in memory."""

    def __init__(self) -> None:
        self.path = "<memory>"
        self.fd = -1
        self.data = bytearray()

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        end = offset + len(data)
        if len(self.data) < end:
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data


@pytest.fixture(scope="session")
def source(real_vmcore: Path) -> sources.Source:
    return sources.open_elf(str(real_vmcore))


@pytest.fixture(scope="session")
def heads(source: sources.Source) -> dict[int, tuple[bytes, float]]:
    """Our header phase per level (as ``makedumpfile -l``), and the filter time."""
    out: dict[int, tuple[bytes, float]] = {}

    def get(level: int) -> tuple[bytes, float]:
        if level not in out:
            t0 = time.perf_counter()
            flt = PageFilter(source, level)
            bm2, _, dumpable = compute_bitmaps(source, flt, 1 << 22)
            seconds = time.perf_counter() - t0
            plan = make_plan(source, level, int(DumpStatus.COMPRESSED_LZO), dumpable, flt.utsname())
            mem = MemoryOutput()
            write_headers(mem, plan)
            write_bitmaps(mem, source, plan, bm2, 1 << 22)
            out[level] = (bytes(mem.data), seconds)
        return out[level]

    return get  # type: ignore[return-value]


@pytest.mark.parametrize("level", LEVELS)
def test_second_bitmap_equals_makedumpfile(source: sources.Source, heads, level: int) -> None:
    ours, _ = heads(level)
    ref = reference_head(level)
    sub_hdr_size = int(np.frombuffer(ref[4 + 8 + 390 + 6 + 16 + 8 : 4 + 8 + 390 + 6 + 16 + 12], "<i4")[0])
    bitmap_blocks = int(np.frombuffer(ref[4 + 8 + 390 + 6 + 16 + 12 : 4 + 8 + 390 + 6 + 16 + 16], "<u4")[0])
    bm2_off = (1 + sub_hdr_size + bitmap_blocks // 2) * 4096
    n = source.max_mapnr
    ref2 = bitmap.unpack(ref[bm2_off : bm2_off + (n + 7) // 8], n)
    ours2 = bitmap.unpack(ours[bm2_off : bm2_off + (n + 7) // 8], n)
    diff = np.flatnonzero(ref2 != ours2)
    assert not len(diff), f"{len(diff)} pfns differ, first {[hex(p) for p in diff[:8]]}"


@pytest.mark.parametrize("level", LEVELS)
def test_head_byte_identical(heads, level: int) -> None:
    """Main header (utsname, timestamp), sub header, notes and both bitmaps, as makedumpfile -l wrote them."""
    ours, _ = heads(level)
    ref = reference_head(level)
    # The tail of the 2nd bitmap's last block is never written (a hole): zeros.
    assert len(ours) <= len(ref)
    assert ours.ljust(len(ref), b"\0") == ref


def test_level_31_filters_fast(heads) -> None:
    _, seconds = heads(31)
    assert seconds < 2.0, f"filtering -d 31 took {seconds:.2f} s"


def _report(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        if sep and value.strip().startswith("0x"):
            out[label.strip()] = value.strip()
        elif line.strip().startswith("(The number of pages"):
            out["ratio"] = line.strip()
    return out


@pytest.mark.parametrize("level", LEVELS)
def test_show_stats_equal_makedumpfile(real_vmcore: Path, tmp_path: Path, capsys, level: int) -> None:
    rc = main(["-d", str(level), "--dry-run", "--show-stats", "--workers", "0", str(real_vmcore), str(tmp_path / "x")])
    assert rc == 0
    ours = _report(capsys.readouterr().out)
    ref = _report((REFERENCE / f"d{level}.stats").read_text(errors="replace"))
    assert reference_stats(level)  # the reference parses
    assert ours == ref
