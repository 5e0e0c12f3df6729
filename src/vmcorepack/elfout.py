"""ELF output (``makedumpfile -E``): a filtered copy of the vmcore as an ELF core.

The layout is makedumpfile's (``write_elf_header``, ``get_loads_dumpfile_cyclic``,
``write_elf_pages_cyclic``, ``write_elf_load_segment`` in makedumpfile.c):

* the input's ELF header, with ``e_phnum`` = 1 + the number of output PT_LOADs
  (``PN_XNUM`` and one section header holding the count when that reaches
  0xffff), ``e_flags`` bit 0 set when the dump is incomplete;
* the program headers at offset 64: the input's first PT_NOTE (only
  ``p_offset`` changed), then the PT_LOADs in input order;
* the notes, copied verbatim right after the program headers (no padding);
* the segment data, packed one after another right after the notes (no
  alignment), each a contiguous copy of the input file's bytes.

Each input PT_LOAD is walked page by page against the 2nd bitmap (which, for
ELF, also loses the all-zero pages when the dump level has bit 1).  A run of
``PFN_EXCLUDED`` (256) or more excluded pages followed by a dumpable page
ends the current PT_LOAD: its ``p_memsz`` covers the run, its ``p_filesz``
stops at its last dumpable page, and a new PT_LOAD starts at the dumpable
page (``p_paddr`` and ``p_vaddr`` advance by the previous ``p_memsz``).
Shorter runs stay in the file with the input's bytes, whatever the filter
said about them; excluded pages at the end of an input PT_LOAD are dropped
whatever their number (``p_filesz < p_memsz``).  A PT_LOAD left without file
data gets ``p_offset`` 0, except the last piece of each input PT_LOAD, which
keeps the running offset.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from vmcorepack import bitmap
from vmcorepack.constants import DumpLevel
from vmcorepack.errors import ElfFormatError, FormatError, IncompleteDumpError, OutputError, UsageError
from vmcorepack.filter import PageFilter
from vmcorepack.formats import elf
from vmcorepack.pack.bitmaps import compute_bitmaps, memory_stats
from vmcorepack.pack.encoding import read_pfns, zero_mask
from vmcorepack.pack.options import DEFAULT_CYCLE_PFNS, PackResult, Progress
from vmcorepack.sources import Source
from vmcorepack.writer import FileOutput, FlatOutput, Output, notes_for

#: makedumpfile ``PFN_EXCLUDED``: excluded runs this long split a PT_LOAD.
PFN_EXCLUDED = 256
#: makedumpfile ``NOT_PADDR``: PT_LOADs with this physical address are skipped.
NOT_PADDR = (1 << 64) - 1
#: Bytes per copy step (and pages per zero-page check step).
COPY_BYTES = 8 << 20


@dataclasses.dataclass(frozen=True)
class ElfLoad:
    """One output PT_LOAD and where its data comes from.

    Attributes:
        p_vaddr: Virtual address.
        p_paddr: Physical address.
        p_filesz: Bytes of data in the file.
        p_memsz: Bytes of memory described.
        p_flags: Copied from the input PT_LOAD.
        p_align: Copied from the input PT_LOAD.
        src_offset: Input file offset of the data.
        last: Last piece of its input PT_LOAD (keeps ``p_offset`` without data).
    """

    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_flags: int
    p_align: int
    src_offset: int
    last: bool


@dataclasses.dataclass(frozen=True)
class ElfInput:
    """The input's ELF header, PT_NOTE and PT_LOADs (a raw image gets synthetic ones).

    Attributes:
        ehdr: ELF header record (``elf.ELF64LE.ehdr``).
        note: PT_NOTE program header record, or None.
        notes: The notes blob.
        loads: PT_LOAD program header records, in file order.
    """

    ehdr: np.ndarray
    note: np.ndarray | None
    notes: bytes
    loads: np.ndarray


def read_input(source: Source) -> ElfInput:
    """Read the program headers the ELF writer copies.

    An ELF vmcore's headers are re-read from the file (the source keeps only
    the segment table).  A raw image gets a synthetic ELF header, one PT_LOAD
    per segment (``p_vaddr`` 0) and the notes :func:`writer.notes_for` gives.

    Args:
        source: The input.

    Returns:
        The headers.
    """
    layout = elf.ELF64LE
    size = source.file_size
    core: elf.ElfCore | None = None
    if elf.identify(source.read_file(0, 16)) is not None:
        try:
            core = elf.parse_core(source.read_file, source.path, size)
        except ElfFormatError:
            core = None
    if core is None or len(core.segments) != len(source.segments):
        ehdr = np.frombuffer(elf.encode_ehdr(0), layout.ehdr, count=1).copy()
        loads = np.zeros(len(source.segments), layout.phdr)
        loads["p_type"] = elf.PT_LOAD
        loads["p_flags"] = elf.PF_R | elf.PF_W | elf.PF_X
        loads["p_offset"] = source.segments["file_offset"]
        loads["p_paddr"] = source.segments["phys_start"]
        loads["p_filesz"] = source.segments["file_size"]
        loads["p_memsz"] = source.segments["phys_end"] - source.segments["phys_start"]
        blob = notes_for(source).blob
        note = None
        if blob:
            note = np.zeros(1, layout.phdr)
            note["p_type"] = elf.PT_NOTE
            note["p_filesz"] = note["p_memsz"] = len(blob)
        return ElfInput(ehdr, note, blob, loads)
    ehdr = np.frombuffer(core.ehdr.tobytes(), layout.ehdr, count=1).copy()
    phnum = int(ehdr["e_phnum"][0])
    if phnum == elf.PN_XNUM:
        sh0 = source.read_file(int(ehdr["e_shoff"][0]), layout.shdr.itemsize)
        phnum = int(np.frombuffer(sh0, layout.shdr, count=1)[0]["sh_info"])
    raw = source.read_file(int(ehdr["e_phoff"][0]), phnum * layout.phdr.itemsize)
    phdrs = np.frombuffer(raw, layout.phdr).copy()
    notes = phdrs[phdrs["p_type"] == elf.PT_NOTE]
    # write_elf_header copies the first PT_NOTE it finds.
    note = notes[:1] if len(notes) else None
    blob = b""
    if note is not None:
        blob = source.read_file(int(note["p_offset"][0]), int(note["p_filesz"][0]))
        if len(blob) != int(note["p_filesz"][0]):
            raise ElfFormatError(source.path, int(note["p_offset"][0]), "truncated PT_NOTE")
    loads = phdrs[(phdrs["p_type"] == elf.PT_LOAD) & (phdrs["p_paddr"] != NOT_PADDR)]
    return ElfInput(ehdr, note, blob, loads)


def split_load(phdr: np.void, dumpable: np.ndarray, page_size: int) -> list[ElfLoad]:
    """Cut one input PT_LOAD into output PT_LOADs (``write_elf_pages_cyclic``).

    Args:
        phdr: The input program header.
        dumpable: 2nd-bitmap bits of the pfns makedumpfile walks for it: from
            ``p_paddr`` rounded up to the end of ``p_paddr + p_memsz`` rounded up.
        page_size: Page size.

    Returns:
        The output PT_LOADs, in order.
    """
    ps = page_size
    paddr = int(phdr["p_paddr"])
    vaddr = int(phdr["p_vaddr"])
    memsz_in = int(phdr["p_memsz"])
    head = -paddr % ps  # frac_head of a segment that starts inside a page: always kept
    tail = (paddr + memsz_in) % ps  # frac_tail: the last pfn covers only this much
    n = len(dumpable)
    # Byte offset (from p_paddr) where pfn index i of the walk starts and ends.
    starts = head + np.arange(n, dtype=np.int64) * ps
    sizes = np.full(n, ps, np.int64)
    if tail and n:
        sizes[-1] = tail
    # Excluded runs of PFN_EXCLUDED or more that a dumpable page follows.
    excl = ~dumpable
    edges = np.flatnonzero(np.diff(np.concatenate(([0], excl.view(np.int8), [0]))))
    run_s, run_e = edges[0::2], edges[1::2]
    big = (run_e - run_s >= PFN_EXCLUDED) & (run_e < n)
    cuts = run_e[big].tolist()  # each starts a new piece at a dumpable pfn
    bounds = [0, *cuts, n]
    kept = np.flatnonzero(dumpable)
    out: list[ElfLoad] = []
    base = 0  # bytes from p_paddr where the current piece starts
    flags, align, src = int(phdr["p_flags"]), int(phdr["p_align"]), int(phdr["p_offset"])
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        last = k == len(bounds) - 2
        end = int(starts[b - 1] + sizes[b - 1]) if b > a else head
        i = np.searchsorted(kept, b) - 1  # last dumpable pfn before b
        filesz_end = int(starts[kept[i]] + sizes[kept[i]]) if i >= 0 and kept[i] >= a else None
        if k == 0:
            memsz = end
            filesz = filesz_end if filesz_end is not None else head
        else:
            memsz = end - base
            filesz = (filesz_end if filesz_end is not None else base) - base
            if a == n - 1 and tail:
                # A piece starting at the last, partial pfn is given a whole
                # page (memsz = filesz = page_size after a split).
                memsz = filesz = ps
        out.append(ElfLoad(vaddr + base, paddr + base, filesz, memsz, flags, align, src + base, last))
        base += memsz
    return out


@dataclasses.dataclass(frozen=True)
class ElfPlan:
    """The whole output file, fixed before any data is written.

    Attributes:
        header: ELF header, program headers, optional section header and notes.
        loads: Output PT_LOADs with their file offsets.
        offsets: ``p_offset`` of each load.
        data_offset: Where the first segment's data goes.
        file_size: Size of the complete file.
    """

    header: bytes
    loads: list[ElfLoad]
    offsets: list[int]
    data_offset: int
    file_size: int


def make_plan(inp: ElfInput, loads: list[ElfLoad]) -> ElfPlan:
    """Lay the file out as ``write_elf_header`` and ``write_elf_pages_cyclic`` do.

    Args:
        inp: Input headers.
        loads: Output PT_LOADs.

    Returns:
        The plan.
    """
    layout = elf.ELF64LE
    ehdr = inp.ehdr.copy()
    nphdr = len(loads) + 1  # PT_NOTE first (written even if the input has none: see below)
    note = inp.note.copy() if inp.note is not None else np.zeros(1, layout.phdr)
    if inp.note is None:
        note["p_type"] = elf.PT_NOTE
    ehdr["e_phoff"] = layout.ehdr.itemsize
    ehdr["e_phentsize"] = layout.phdr.itemsize
    note_off = layout.ehdr.itemsize + layout.phdr.itemsize * nphdr
    shdr = b""
    if nphdr >= elf.PN_XNUM:
        # Extended numbering: the count goes into section header 0, written
        # right after the program headers.
        ehdr["e_phnum"] = elf.PN_XNUM
        ehdr["e_shoff"] = note_off
        ehdr["e_shentsize"] = layout.shdr.itemsize
        ehdr["e_shnum"] = 1
        ehdr["e_shstrndx"] = 0
        sh = np.zeros(1, layout.shdr)
        sh["sh_size"] = 1
        sh["sh_info"] = nphdr - 1
        shdr = sh.tobytes()
        note_off += len(shdr)
    else:
        ehdr["e_phnum"] = nphdr
    note["p_offset"] = note_off
    data = note_off + len(inp.notes)
    off = data
    offsets = []
    phdrs = np.zeros(len(loads), layout.phdr)
    for j, ld in enumerate(loads):
        # A piece without data gets p_offset 0, except the last of its input PT_LOAD.
        offsets.append(off if ld.p_filesz or ld.last else 0)
        ph = phdrs[j : j + 1]
        ph["p_type"], ph["p_flags"], ph["p_offset"], ph["p_align"] = elf.PT_LOAD, ld.p_flags, offsets[-1], ld.p_align
        ph["p_vaddr"], ph["p_paddr"], ph["p_filesz"], ph["p_memsz"] = ld.p_vaddr, ld.p_paddr, ld.p_filesz, ld.p_memsz
        off += ld.p_filesz
    header = ehdr.tobytes() + note.tobytes() + phdrs.tobytes() + shdr + inp.notes
    return ElfPlan(header, loads, offsets, data, off)


def _zero_pass(source: Source, bm2: np.ndarray) -> int:
    """Clear the all-zero dumpable pages from ``bm2`` (``exclude_zero_pages_cyclic``)."""
    ps = source.page_size
    step = max(1, COPY_BYTES // ps)
    pfns = np.flatnonzero(bitmap.unpack(bm2, source.max_mapnr)).astype(np.int64)
    zero = 0
    for a in range(0, len(pfns), step):
        part = pfns[a : a + step]
        z = part[zero_mask(read_pfns(source, part), ps)]
        if len(z):
            # ufunc.at: several zero pages may share a bitmap byte.
            np.bitwise_and.at(bm2, z // 8, ~(np.uint8(1) << (z % 8).astype(np.uint8)))
            zero += len(z)
    return zero


def _copy(out: Output, src_fd: int, src_off: int, size: int, dst_off: int) -> None:
    """Copy input file bytes to the output (``copy_file_range`` when possible)."""
    done = 0
    use_cfr = isinstance(out, FileOutput) and hasattr(os, "copy_file_range")
    while done < size:
        n = min(COPY_BYTES, size - done)
        if use_cfr:
            try:
                got = os.copy_file_range(src_fd, out.fd, n, src_off + done, dst_off + done)
            except OSError:
                use_cfr = False
                continue
            if got > 0:
                done += got
                continue
            use_cfr = False  # end of input (or unsupported): fall back to read + zero fill
            continue
        chunk = os.pread(src_fd, n, src_off + done)
        # Past the end of the input (a partial last page rounded up) reads as zeros.
        out.pwrite(chunk.ljust(n, b"\0"), dst_off + done)
        done += n


def plan_elf(source: Source, bm2: np.ndarray) -> ElfPlan:
    """Lay out the ELF dump of ``source`` for a given 2nd bitmap.

    Args:
        source: The input.
        bm2: Packed 2nd bitmap (zero pages already removed for dl & 1).

    Returns:
        The plan.
    """
    inp = read_input(source)
    ps = source.page_size
    loads: list[ElfLoad] = []
    for ph in inp.loads:
        paddr, memsz = int(ph["p_paddr"]), int(ph["p_memsz"])
        # The pfns write_elf_pages_cyclic walks: a partial first page is kept
        # outright, a partial last page is looked up.
        first = -(-paddr // ps)
        last = -(-(paddr + memsz) // ps)
        lo, hi = min(first, source.max_mapnr), min(last, source.max_mapnr)
        bits = np.zeros(max(0, last - first), bool)
        if hi > lo:
            bits[: hi - lo] = bitmap.unpack(bm2[lo // 8 : (hi + 7) // 8], hi - (lo - lo % 8))[lo % 8 :]
        loads.extend(split_load(ph, bits, ps))
    return make_plan(inp, loads)


def pack_elf(
    source: Source,
    output: str | int,
    dump_level: int = 0,
    force: bool = False,
    progress: Progress | None = None,
    flat: bool = False,
    dry_run: bool = False,
    cycle_pfns: int = DEFAULT_CYCLE_PFNS,
) -> PackResult:
    """Write ``source`` as a filtered ELF core, as ``makedumpfile -E -d LEVEL`` does.

    Args:
        source: The input.
        output: Output path, or with ``flat`` a writable descriptor.
        dump_level: Dump level 0-31.
        force: Overwrite an existing output file.
        progress: :class:`~vmcorepack.pack.options.Progress` callback.
        flat: Write a flattened stream (``-E -F``).
        dry_run: Compute everything, write nothing.
        cycle_pfns: pfns per filter cycle.

    Returns:
        What was done (``dumpable`` counts the pages whose data is in the file,
        short excluded runs included; ``zero_pages`` the zero pages removed).

    Raises:
        OutputError: The output cannot be created or written; a regular file
            written in part gets ``e_flags`` bit 0 (incomplete).
    """
    t0 = time.monotonic()
    flt = PageFilter(source, dump_level)
    bm2, ram, _ = compute_bitmaps(source, flt, cycle_pfns, progress=progress)
    zero = _zero_pass(source, bm2) if dump_level & DumpLevel.ZERO else 0
    plan = plan_elf(source, bm2)
    ps = source.page_size
    result = PackResult(max_mapnr=source.max_mapnr, ram_pages=ram)
    result.counts = flt.counts
    result.counts.zero = zero
    result.original_pages, result.memory_hole = memory_stats(source)
    total = sum(ld.p_filesz for ld in plan.loads)
    result.dumpable = total // ps
    result.zero_pages = zero
    result.raw_pages = result.dumpable
    result.file_size = plan.file_size
    if dry_run:
        result.seconds = time.monotonic() - t0
        return result
    out = _open_output(output, force, flat)
    written = 0
    try:
        src_fd = os.open(source.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        out.abort()
        raise FormatError(source.path, None, f"cannot open: {e.strerror}") from e
    try:
        out.pwrite(plan.header, 0)
        if progress:
            progress(0, total // ps)
        for ld, off in zip(plan.loads, plan.offsets, strict=True):
            if ld.p_filesz:
                _copy(out, src_fd, ld.src_offset, ld.p_filesz, off)
                written += ld.p_filesz
                if progress:
                    progress(written // ps, total // ps)
        if isinstance(out, FileOutput):
            out.truncate(plan.file_size)
        out.finish()
    except (Exception, KeyboardInterrupt) as e:
        out.close()
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
        if isinstance(out, FileOutput):
            # A cut ELF dump is kept with e_flags bit 0 (check_and_modify_elf_headers).
            mark_incomplete(out.path)
            raise IncompleteDumpError(
                out.path, f"{why}; ELF dump marked incomplete (e_flags bit 0)", written // ps
            ) from e
        raise IncompleteDumpError(out.path, f"{why}; stream left without its end marker", 0) from e
    finally:
        os.close(src_fd)
    out.close()
    result.seconds = time.monotonic() - t0
    return result


def _open_output(output: str | int, force: bool, flat: bool) -> Output:
    if flat:
        if isinstance(output, int):
            return FlatOutput("<stdout>", output)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        return FlatOutput(output, fd)
    if not isinstance(output, str):
        raise UsageError("an ELF dump needs an output path (or -F)")
    return FileOutput.create(output, force)


def mark_incomplete(path: str) -> None:
    """Set bit 0 of ``e_flags`` (makedumpfile ``check_and_modify_elf_headers``).

    Args:
        path: The ELF dump.
    """
    off = 48  # e_flags in Elf64_Ehdr
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise OutputError(path, f"cannot reopen to mark incomplete: {e.strerror}") from e
    try:
        flags = int.from_bytes(os.pread(fd, 4, off).ljust(4, b"\0"), "little")
        os.pwrite(fd, (flags | elf.ELF_FLAG_INCOMPLETE).to_bytes(4, "little"), off)
    except OSError as e:
        raise OutputError(path, f"cannot mark incomplete: {e.strerror}") from e
    finally:
        os.close(fd)
