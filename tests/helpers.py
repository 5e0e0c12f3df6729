"""Test helpers independent of the code under test (plain struct parsing)."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def elf_loads(path: Path) -> list[tuple[int, int, int, int]]:
    """Return (p_paddr, p_memsz, p_offset, p_filesz) of every PT_LOAD, parsed with struct."""
    with open(path, "rb") as f:
        eh = f.read(64)
        (phoff,) = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    out = []
    for i in range(phnum):
        p_type, _flags, off, _vaddr, paddr, filesz, memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", table, i * phentsize
        )
        if p_type == 1:
            out.append((paddr, memsz, off, filesz))
    return out


def elf_ram_pfns(path: Path, page_size: int = 4096) -> np.ndarray:
    """pfns whose whole page lies in some PT_LOAD's file data (each once, sorted)."""
    pfns: set[int] = set()
    for paddr, _memsz, _off, filesz in elf_loads(path):
        first = -(-paddr // page_size)
        last = (paddr + filesz) // page_size
        pfns.update(range(first, last))
    return np.array(sorted(pfns), dtype=np.int64)


def elf_page_reader(path: Path, page_size: int = 4096):
    """Return read(pfn, count) over the ELF's PT_LOADs (first PT_LOAD containing the page wins)."""
    loads = elf_loads(path)
    data = np.memmap(path, np.uint8, mode="r")

    def read(pfn: int, count: int = 1) -> bytes:
        pa = pfn * page_size
        for paddr, _memsz, off, filesz in loads:
            if paddr <= pa and pa + count * page_size <= paddr + filesz:
                start = off + pa - paddr
                return bytes(data[start : start + count * page_size])
        raise KeyError(pfn)

    return read


def runs(pfns: np.ndarray) -> Iterator[tuple[int, int]]:
    """Split sorted pfns into (start, count) runs of consecutive values."""
    if not len(pfns):
        return
    brk = np.flatnonzero(np.diff(pfns) != 1) + 1
    starts = np.concatenate(([0], brk))
    ends = np.concatenate((brk, [len(pfns)]))
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(pfns[a]), b - a


#: A makedumpfile progress line written without a carriage return (print_progress):
#: the phase padded to 50 columns, then tenths of a percent.
PROGRESS_LINE = re.compile(r"^(?P<phase>[A-Z][a-z ]+?) +: \[(?P<pct>[ \d]{3}\.\d) %\]$")


def message_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not progress lines."""
    return [line for line in stderr.strip().splitlines() if not PROGRESS_LINE.match(line)]
