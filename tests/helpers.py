"""Test helpers independent of the code under test (plain struct parsing)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


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


class ElfPageReader:
    """read(pfn, count) over an ELF's PT_LOADs (first PT_LOAD containing the page wins).

    pread, not a mapping: a mapping of the 926 MB real fixture kept every page read in the
    test process's RSS until the reader was collected.
    """

    def __init__(self, path: Path, page_size: int = 4096) -> None:
        self.loads = elf_loads(path)
        self.page_size = page_size
        self.fd = os.open(path, os.O_RDONLY)

    def __call__(self, pfn: int, count: int = 1) -> bytes:
        pa, size = pfn * self.page_size, count * self.page_size
        for paddr, _memsz, off, filesz in self.loads:
            if paddr <= pa and pa + size <= paddr + filesz:
                data = os.pread(self.fd, size, off + pa - paddr)
                assert len(data) == size, f"short read of pfn {pfn:#x}"
                return data
        raise KeyError(pfn)

    def __del__(self) -> None:
        os.close(self.fd)


def elf_page_reader(path: Path, page_size: int = 4096) -> ElfPageReader:
    """Return read(pfn, count) over the ELF's PT_LOADs (first PT_LOAD containing the page wins)."""
    return ElfPageReader(path, page_size)


def in_child(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a forked process; return its result or raise its exception there.

    ``fn`` must be a module-level function (it is pickled by name).  For whole-dump reads through
    python3-libkdumpfile: its kdumpfile objects are never freed (0.5.1: the object and its
    ``attr_dir`` form a cycle the collector cannot break) and each keeps the pages it read of its
    dump mapped, so in the test process every dump read whole stayed in RSS for the session.
    """
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def kdumpfile_reads_every_page(dump: Path, vmcore: Path, run: int = 256) -> int:
    """Compare every RAM page of the ELF ``vmcore`` with libkdumpfile's read of ``dump``; return the count.

    Runs in a child process (:func:`in_child`); the caller checks that libkdumpfile imports.
    """
    return in_child(_kdumpfile_reads_every_page, dump, vmcore, run)


def _kdumpfile_reads_every_page(dump: Path, vmcore: Path, run: int) -> int:
    import kdumpfile

    k = kdumpfile.kdumpfile(str(dump))
    src = elf_page_reader(vmcore)
    checked = 0
    for start, count in runs(elf_ram_pfns(vmcore)):
        for a in range(start, start + count, run):
            n = min(run, start + count - a)
            got = k.read(kdumpfile.KDUMP_MACHPHYSADDR, a * 4096, n * 4096)
            assert bytes(got) == src(a, n), f"pfn {a:#x}+{n} differs"
            checked += n
    return checked


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


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in pieces (dumps of the real fixture are hundreds of MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def first_difference(a: Path, b: Path, chunk: int = 1 << 20) -> int | None:
    """Offset of the first byte where two files differ (the shorter one's end counts), None if equal.

    Streamed: ``a.read_bytes() == b.read_bytes()`` on two dumps of the real fixture held both whole.
    """
    with open(a, "rb") as fa, open(b, "rb") as fb:
        pos = 0
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                n = min(len(x), len(y))
                diff = np.flatnonzero(np.frombuffer(x[:n], np.uint8) != np.frombuffer(y[:n], np.uint8))
                return pos + int(diff[0]) if len(diff) else pos + n
            if not x:
                return None
            pos += len(x)
