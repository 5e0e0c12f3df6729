"""Real arm64 captures (tests/data/arm64, issue 17): the fixtures and makedumpfile's references.

Each capture directory holds a reduced ELF vmcore and makedumpfile's outputs at every level
(see its README). The first tests check that the fixture is what the README says and that the
references agree with themselves; the last one compares vmcorepack's bitmaps with
makedumpfile's and is expected to fail with MachineError until the arm64 walker is registered
(kernel/arch/__init__.py): strict, so that enabling it turns this mark into a failure to remove.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import zstandard

from conftest import CACHE, LEVELS, REPO, _zstd_decompress, require_tool
from helpers import elf_loads, elf_ram_pfns
from vmcorepack.formats.kdump import KdumpLayout
from vmcorepack.sources import open_elf
from vmcorepack.vmcoreinfo import VmcoreInfo

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ARM64 = REPO / "tests" / "data" / "arm64"
CAPTURES = sorted(p.name for p in ARM64.iterdir() if (p / "vmcore.elf.zst").exists())


def _refdir(name: str) -> Path:
    (ref,) = (ARM64 / name).glob("makedumpfile-*")
    return ref


def _head(name: str, key: str) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress((_refdir(name) / f"{key}.head.zst").read_bytes())


def _geometry(head: bytes) -> tuple[int, int, int]:
    """(block_size, sub_hdr_size, bitmap_blocks) of a kdump main header, little-endian 64-bit (arm64, x86_64)."""
    h = np.frombuffer(head, KdumpLayout.for_target("<", 8).disk_dump_header, 1)[0]
    return int(h["block_size"]), int(h["sub_hdr_size"]), int(h["bitmap_blocks"])


def _bitmaps(head: bytes) -> tuple[np.ndarray, np.ndarray]:
    bs, sub, bb = _geometry(head)
    both = np.frombuffer(head, np.uint8, bb * bs, (1 + sub) * bs)
    return both[: bb * bs // 2], both[bb * bs // 2 :]


def _stat(name: str, key: str, label: str) -> int:
    text = (_refdir(name) / f"{key}.stats").read_text(errors="replace")
    m = re.search(rf"^\s*{label}\s*: 0x([0-9a-f]+)$", text, re.M)
    assert m, f"{key}.stats has no {label}"
    return int(m.group(1), 16)


def _repeats(pfns: np.ndarray) -> np.ndarray:
    """Each pfn once per time it occurs after its first (the pfns of a doubly mapped range)."""
    values, counts = np.unique(pfns, return_counts=True)
    return np.repeat(values, counts - 1)


def _popcount(bits: np.ndarray) -> int:
    return int(np.unpackbits(bits).sum())


@pytest.fixture(scope="module", params=CAPTURES)
def capture(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """(capture name, its ELF decompressed into the cache)."""
    name: str = request.param
    require_tool("zstd")
    return name, _zstd_decompress(ARM64 / name / "vmcore.elf.zst", CACHE / "arm64" / f"{name}.elf")


def test_three_captures() -> None:
    assert CAPTURES == ["6.1.0-57-arm64", "6.12.117+deb13-arm64-16k", "7.3.4+deb13-arm64"]


def test_vmcoreinfo_matches(capture: tuple[str, Path]) -> None:
    name, elf = capture
    with open_elf(str(elf)) as src:
        assert src.e_machine == 183  # EM_AARCH64
        info = src.vmcoreinfo
        assert info is not None
    text = VmcoreInfo.parse((ARM64 / name / "vmcoreinfo.txt").read_bytes())
    assert info.osrelease == text.osrelease == name
    assert info.entries == text.entries
    assert info.page_size == _geometry(_head(name, "d31"))[0]


@pytest.mark.parametrize("level", LEVELS)
def test_references_agree(capture: tuple[str, Path], level: int) -> None:
    """1st bitmap = the ELF's RAM pfns, 2nd within it, pages counted as the stats say, -c the same as -l."""
    name, elf = capture
    head = _head(name, f"d{level}")
    page = _geometry(head)[0]
    b1, b2 = _bitmaps(head)
    ram = elf_ram_pfns(elf, page)
    assert _popcount(b1) == len(ram)
    assert np.flatnonzero(np.unpackbits(b1, bitorder="little")).tolist() == ram.tolist()
    assert not (b2 & ~b1).any()
    # The page-count table counts the kernel text twice (a second PT_LOAD maps it), the bitmaps once.
    every = np.concatenate([np.arange(-(-p // page), (p + f) // page) for p, _m, _o, f in elf_loads(elf)])
    again = _repeats(every)
    assert _stat(name, f"d{level}", "Original pages") == len(ram) + len(again)
    if level == 0:
        assert _stat(name, "d0", "Remaining pages") == len(ram) + len(again)
        assert b2.tobytes() == b1.tobytes()
    c1, c2 = _bitmaps(_head(name, f"d{level}-c"))
    assert c1.tobytes() == b1.tobytes() and c2.tobytes() == b2.tobytes()
