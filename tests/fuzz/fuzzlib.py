"""Fuzzing machinery shared by the hypothesis tests and ``run_long.py``.

One mutation generator serves three engines through a tiny :class:`Chooser`
interface: hypothesis (``data.draw``), a seeded :mod:`random` loop and atheris'
``FuzzedDataProvider``.  Mutations are structure-aware: they aim at the fields
of the seed file (ELF header, program headers, note headers, kdump headers,
bitmaps, page descriptors, flattened record headers) with boundary values,
besides plain byte flips, truncation and splices.

The oracle: a target may raise only :class:`vmcorepack.errors.VmcorepackError`
(our one-line errors); anything else, or an allocation larger than
:data:`ALLOC_LIMIT`, is a finding.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import io
import os
import resource
import shutil
import struct
import tempfile
import traceback
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from vmcorepack import cli, fixtures, reader, sources
from vmcorepack.constants import DumpStatus
from vmcorepack.errors import VmcorepackError
from vmcorepack.formats import elf, flat, kdump
from vmcorepack.kernel.arch import x86_64
from vmcorepack.vmcoreinfo import VmcoreInfo

REPO = Path(__file__).resolve().parents[2]
#: conftest.VECTORS, named again here because run_long.py imports this module without pytest.
VECTORS = REPO / "tests" / "data" / "vectors"
CORPUS = Path(__file__).resolve().parent / "corpus"

#: An input of under 100 KiB may not make us allocate more than this.
ALLOC_LIMIT = 256 << 20
#: Pages a target reads at most per input (keeps one example in milliseconds).
MAX_PAGES = 64

SEEDS: dict[str, tuple[str, ...]] = {
    "elf": ("tiny.vmcore", "filt.vmcore", "filt2.vmcore"),
    "kdump": (
        "tiny_d1_raw.kdump",
        "tiny_d1_zlib.kdump",
        "tiny_d1_lzo.kdump",
        "tiny_d1_snappy.kdump",
        "tiny_d1_zstd.kdump",
        "tiny_d0_raw.kdump",
        "tiny_incomplete.kdump",
        "filt_d31.kdump",
    ),
    "split": ("tiny_split1.kdump", "tiny_split2.kdump"),
    "flat": ("tiny_d1_raw.flat",),
    "notes": ("notes:tiny.vmcore", "notes:filt.vmcore"),
}

#: Values that break size and offset arithmetic.
BOUNDARY = (
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    0x10,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0xFFF,
    0x1000,
    0x1001,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    1 << 32,
    1 << 40,
    1 << 52,
    1 << 62,
    0x7FFFFFFFFFFFFFFF,
    1 << 63,
    0xFFFFFFFFFFFFF000,
    0xFFFFFFFFFFFFFFFF,
)


def examples(default: int) -> int:
    """Return the hypothesis budget: ``VMCOREPACK_FUZZ_EXAMPLES`` if set, else ``default``."""
    env = os.environ.get("VMCOREPACK_FUZZ_EXAMPLES")
    return int(env) if env else default


# ----------------------------------------------------------------------------
# choosers: one interface over hypothesis, random.Random and atheris
# ----------------------------------------------------------------------------


class Chooser(Protocol):
    """Where the mutation generator gets its decisions from."""

    def integer(self, lo: int, hi: int) -> int:
        """Return an integer in ``[lo, hi]``."""
        ...

    def pick(self, seq: Sequence[object]) -> object:
        """Return one element of a non-empty sequence."""
        ...


class RandomChooser:
    """Decisions from a :class:`random.Random`."""

    def __init__(self, rng: object) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)  # type: ignore[attr-defined,no-any-return]

    def pick(self, seq: Sequence[object]) -> object:
        return seq[self.rng.randrange(len(seq))]  # type: ignore[attr-defined]


class HypothesisChooser:
    """Decisions from hypothesis' ``st.data()`` (so failures shrink)."""

    def __init__(self, data: object) -> None:
        from hypothesis import strategies as st

        self.data = data
        self.st = st

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))  # type: ignore[attr-defined,no-any-return]

    def pick(self, seq: Sequence[object]) -> object:
        return self.data.draw(self.st.sampled_from(seq))  # type: ignore[attr-defined]


class AtherisChooser:
    """Decisions from an atheris ``FuzzedDataProvider`` (coverage-guided)."""

    def __init__(self, fdp: object) -> None:
        self.fdp = fdp

    def integer(self, lo: int, hi: int) -> int:
        return self.fdp.ConsumeIntInRange(lo, hi)  # type: ignore[attr-defined,no-any-return]

    def pick(self, seq: Sequence[object]) -> object:
        return seq[self.fdp.ConsumeIntInRange(0, len(seq) - 1)]  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------
# seeds and the fields inside them
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Field:
    """One integer field of a seed: where, how wide, which byte order."""

    offset: int
    width: int
    big: bool = False


@functools.cache
def seed(name: str) -> bytes:
    """Return the bytes of a vector file (``notes:FILE``: the PT_NOTE blob of FILE)."""
    if name.startswith("notes:"):
        data = seed(name[6:])
        off, size = _note_range(data)
        return data[off : off + size]
    return (VECTORS / name).read_bytes()


def _note_range(data: bytes) -> tuple[int, int]:
    phoff, phnum = struct.unpack_from("<Q", data, 32)[0], struct.unpack_from("<H", data, 56)[0]
    for i in range(phnum):
        p_type, _, p_off, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * 56)
        if p_type == elf.PT_NOTE:
            return p_off, p_filesz
    return 0, 0


def _dtype_fields(dt: np.dtype[np.void], base: int, big: bool = False) -> list[Field]:
    out: list[Field] = []
    for fname, (sub, off) in dt.fields.items():  # type: ignore[union-attr,misc]
        if fname.startswith("_") or sub.kind in "SV":
            continue
        out.append(Field(base + off, sub.itemsize, big))
    return out


def _elf_fields(data: bytes) -> list[Field]:
    lay = elf.ELF64LE
    out = _dtype_fields(lay.ehdr, 0)
    phoff, phnum = struct.unpack_from("<Q", data, 32)[0], struct.unpack_from("<H", data, 56)[0]
    for i in range(phnum):
        out += _dtype_fields(lay.phdr, phoff + i * lay.phdr.itemsize)
    note_off, note_size = _note_range(data)
    return out + _note_fields(data[note_off : note_off + note_size], note_off)


def _note_fields(blob: bytes, base: int) -> list[Field]:
    out: list[Field] = []
    for note in elf.iter_notes(blob, "seed", base):
        out += _dtype_fields(elf.ELF64LE.nhdr, base + note.offset)
    return out


def _kdump_fields(data: bytes, base: int = 0) -> list[Field]:
    """Fields of a kdump file whose logical offset 0 is at ``base`` in ``data``."""
    lay = kdump.X86_64
    out = _dtype_fields(lay.disk_dump_header, base)
    bs = struct.unpack_from("<i", data, base + 428)[0]
    out += _dtype_fields(lay.kdump_sub_header, base + bs)
    sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from("<iII", data, base + 432)
    geo = kdump.FileGeometry(bs, sub_hdr_size, bitmap_blocks, max_mapnr, 0)
    nbytes = -(-max_mapnr // 8)
    for b in range(min(nbytes, 16)):
        out.append(Field(base + geo.bitmap1_offset + b, 1))
        out.append(Field(base + geo.bitmap2_offset + b, 1))
    bm2 = data[base + geo.bitmap2_offset : base + geo.bitmap2_offset + nbytes]
    ndesc = sum(bin(x).count("1") for x in bm2)
    for i in range(min(ndesc, 32)):
        out += _dtype_fields(kdump.PAGE_DESC, base + geo.table_offset + i * kdump.PAGE_DESC.itemsize)
    return [f for f in out if f.offset + f.width <= len(data)]


def _flat_fields(data: bytes) -> list[Field]:
    out = _dtype_fields(flat.FLAT_HEADER, 0, big=True)
    pos = 4096
    while pos + 16 <= len(data):
        out += [Field(pos, 8, True), Field(pos + 8, 8, True)]
        off, size = struct.unpack_from(">qq", data, pos)
        if off == -1:
            break
        if off == 0:
            # The record holding the main header: aim at the kdump fields inside.
            out += [f for f in _kdump_fields_partial(data, pos + 16, size)]
        pos += 16 + size
    return out


def _kdump_fields_partial(data: bytes, base: int, size: int) -> list[Field]:
    lay = kdump.X86_64
    return [f for f in _dtype_fields(lay.disk_dump_header, base) if f.offset + f.width <= base + size]


@functools.cache
def fields(kind: str, name: str) -> tuple[Field, ...]:
    """Return the interesting integer fields of seed ``name`` of kind ``kind``."""
    data = seed(name)
    if kind == "elf":
        return tuple(_elf_fields(data))
    if kind in ("kdump", "split"):
        return tuple(_kdump_fields(data))
    if kind == "flat":
        return tuple(_flat_fields(data))
    if kind == "notes":
        return tuple(_note_fields(data, 0))
    return ()


# ----------------------------------------------------------------------------
# mutations
# ----------------------------------------------------------------------------


def _boundary_for(ch: Chooser, data: bytes, fld: Field) -> int:
    mask = (1 << (8 * fld.width)) - 1
    cur = int.from_bytes(data[fld.offset : fld.offset + fld.width], "big" if fld.big else "little")
    how = ch.integer(0, 5)
    if how == 0:
        return cur + ch.pick((-1, 1, -8, 8, -4096, 4096)) & mask  # type: ignore[operator]
    if how == 1:
        return len(data) + ch.integer(-64, 64) & mask
    if how == 2:
        return ch.integer(0, mask)
    if how == 3:
        return cur ^ (1 << ch.integer(0, 8 * fld.width - 1))
    return ch.pick(BOUNDARY) & mask  # type: ignore[operator]


def mutate(ch: Chooser, kind: str, name: str, max_ops: int = 6) -> bytes:
    """Return seed ``name`` mutated by 1..``max_ops`` structure-aware edits.

    Args:
        ch: Source of decisions.
        kind: Seed family (selects the field table).
        name: Seed file name.
        max_ops: Most edits.

    Returns:
        The mutated bytes.
    """
    data = bytearray(seed(name))
    flds = fields(kind, name)
    for _ in range(ch.integer(1, max_ops)):
        op = ch.integer(0, 11)
        n = len(data)
        if op <= 4 and flds:
            fld = flds[ch.integer(0, len(flds) - 1)]
            if fld.offset + fld.width > n:
                continue
            width = fld.width if op < 4 else ch.pick((1, 2, 4, 8))  # type: ignore[assignment]
            width = min(width, n - fld.offset)  # type: ignore[type-var,assignment]
            fld = Field(fld.offset, width, fld.big)
            v = _boundary_for(ch, bytes(data), fld)
            data[fld.offset : fld.offset + width] = v.to_bytes(width, "big" if fld.big else "little")
        elif op == 5 and n:
            i = ch.integer(0, n - 1)
            data[i] ^= 1 << ch.integer(0, 7)
        elif op == 6 and n:
            i = ch.integer(0, n - 1)
            data[i] = ch.pick((0, 0xFF, 0x7F, 0x80, ch.integer(0, 255)))  # type: ignore[assignment]
        elif op == 7 and n >= 8:
            # A random 2/4/8-byte field anywhere, little or big endian.
            width = ch.pick((2, 4, 8))
            i = ch.integer(0, n - width)  # type: ignore[operator]
            fld = Field(i, width, bool(ch.integer(0, 1)))  # type: ignore[arg-type]
            data[i : i + width] = _boundary_for(ch, bytes(data), fld).to_bytes(width, "big" if fld.big else "little")  # type: ignore[operator,arg-type]
        elif op == 8:
            del data[ch.pick((ch.integer(0, n), n - ch.integer(0, min(n, 64)), ch.integer(0, min(n, 600)))) :]  # type: ignore[misc]
        elif op == 9 and n:
            a = ch.integer(0, n - 1)
            del data[a : a + ch.integer(1, 4096)]
        elif op == 10 and n:
            a = ch.integer(0, n - 1)
            data[a:a] = bytes([ch.integer(0, 255)]) * ch.integer(1, 64)
        elif op == 11 and n > 16:
            # Copy a chunk of the file over another place (duplicated headers, records).
            a, b = ch.integer(0, n - 1), ch.integer(0, n - 1)
            size = ch.integer(1, 64)
            chunk = data[a : a + size]
            data[b : b + len(chunk)] = chunk
    return bytes(data)


VMCOREINFO_VALUES = (
    "0",
    "1",
    "-1",
    "64",
    "4096",
    "-129",
    "ffffffffffffffff",
    "0xffffffffffffffff",
    "ffffffff8000b000",
    "ffffffff80000000",
    "7fffffffffffffff",
    "99999999999999999999999999",
    "-99999999999999999999",
    "4097",
    "262144",
    "1024",
    "",
    "zz",
    "0x",
    "1e9",
    " 12",
    "5.15.0",
    "99.99.99",
)


@functools.cache
def sparse_vmcore() -> Path:
    """A 16 MiB generated SPARSEMEM_EXTREME vmcore (6.1 struct page), built once per process."""
    d = tempfile.mkdtemp(prefix="vmcorepack-fuzz-sparse-")
    atexit.register(shutil.rmtree, d, True)
    path = Path(d) / "sparse.vmcore"
    fixtures.build(fixtures.FixtureSpec(size_bytes=16 << 20, seed=1), path)
    return path


def vmcoreinfo_seed(base: str = "filt") -> str:
    """The VMCOREINFO text of filt.vmcore (FLATMEM) or of :func:`sparse_vmcore`."""
    path = sparse_vmcore() if base == "sparse" else VECTORS / "filt.vmcore"
    with sources.open_elf(str(path)) as s:
        assert s.vmcoreinfo is not None
        return s.vmcoreinfo.raw.decode()


@functools.cache
def _vmcoreinfo_lines(base: str) -> tuple[str, ...]:
    return tuple(vmcoreinfo_seed(base).splitlines())


EXTRA_KEYS = (
    "SYMBOL(mem_section)",
    "LENGTH(mem_section)",
    "SIZE(mem_section)",
    "OFFSET(mem_section.section_mem_map)",
    "NUMBER(SECTION_SIZE_BITS)",
    "NUMBER(MAX_PHYSMEM_BITS)",
    "SYMBOL(init_level4_pgt)",
    "NUMBER(pgtable_l5_enabled)",
    "NUMBER(sme_mask)",
    "KERNELOFFSET",
    "SYMBOL(vmemmap_base)",
    "SYMBOL(page_offset_base)",
    "OFFSET(page.compound_order)",
    "OFFSET(page.compound_dtor)",
    "OFFSET(folio._folio_order)",
    "NUMBER(PG_head_mask)",
    "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)",
    "NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)",
    "SYMBOL(log_buf)",
    "SYMBOL(log_buf_len)",
    "SYMBOL(prb)",
    "NUMBER(N_ONLINE)",
    "SYMBOL(node_online_map)",
    "SYMBOL(pgdat_list)",
)


def mutate_vmcoreinfo(ch: Chooser, max_ops: int = 5, base: str = "filt") -> bytes:
    """Return the VMCOREINFO of :func:`vmcoreinfo_seed` with line-level and byte-level edits."""
    lines = list(_vmcoreinfo_lines(base))
    for _ in range(ch.integer(1, max_ops)):
        op = ch.integer(0, 6)
        if op <= 2 and lines:
            i = ch.integer(0, len(lines) - 1)
            key = lines[i].partition("=")[0]
            lines[i] = f"{key}={ch.pick(VMCOREINFO_VALUES)}"
        elif op == 3 and lines:
            del lines[ch.integer(0, len(lines) - 1)]
        elif op == 4:
            lines.insert(ch.integer(0, len(lines)), f"{ch.pick(EXTRA_KEYS)}={ch.pick(VMCOREINFO_VALUES)}")
        elif op == 5 and lines:
            i = ch.integer(0, len(lines) - 1)
            lines.insert(ch.integer(0, len(lines)), lines[i])
        else:
            lines.insert(ch.integer(0, len(lines)), ch.pick(("", "=", "KEY", "=x", "\0", "\x7f", "K=V=W")))  # type: ignore[arg-type]
    text = ("\n".join(lines) + "\n").encode("latin-1")
    if ch.integer(0, 7) == 0 and text:
        b = bytearray(text)
        b[ch.integer(0, len(b) - 1)] = ch.integer(0, 255)
        text = bytes(b)
    return text


# ----------------------------------------------------------------------------
# the oracle
# ----------------------------------------------------------------------------


class Finding(Exception):
    """A target did something other than succeed or raise a VmcorepackError."""


@contextlib.contextmanager
def memory_cap(extra: int = 1 << 30) -> Iterator[None]:
    """Cap the address space at its current size plus ``extra`` (restored after).

    A hostile size that slips past a check then raises MemoryError instead of
    taking the machine's memory (the suite shares it).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * resource.getpagesize()
    except OSError:
        yield
        return
    cap = vm + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def alloc_guard(limit: int = ALLOC_LIMIT) -> Iterator[None]:
    """Fail with :class:`Finding` if the block allocated more than ``limit`` at once."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1] - base
        if started:
            tracemalloc.stop()
    if peak > limit:
        raise Finding(f"allocated {peak >> 20} MiB for one input")


def signature(exc: BaseException) -> str:
    """Where an unexpected exception comes from: type and innermost vmcorepack frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "vmcorepack" in f.filename and "/tests/" not in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    loc = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
    return f"{type(exc).__name__} at {loc}"


# ----------------------------------------------------------------------------
# targets: each takes the mutated bytes and a scratch directory
# ----------------------------------------------------------------------------


def _write(work: Path, name: str, data: bytes) -> str:
    p = work / name
    p.write_bytes(data)
    return str(p)


def _exercise_source(src: sources.Source) -> None:
    _ = x86_64.phys_base(src), src.nr_cpus, src.max_mapnr
    vi = src.notes.vmcoreinfo_bytes
    if vi is not None and src.vmcoreinfo is not None:
        _ = src.vmcoreinfo.page_size, src.vmcoreinfo.osrelease
    for seg in src.segments[:8]:
        pfn = int(seg["phys_start"]) // src.page_size
        src.read_pages(pfn, min(MAX_PAGES, max(1, src.max_mapnr - pfn)))
        src.read_pages_bytes(pfn, 4)
        with contextlib.suppress(VmcorepackError):
            src.read_phys(int(seg["phys_start"]), 64)


def target_elf(data: bytes, work: Path) -> None:
    """Open a mutated ELF vmcore and read pages from every segment."""
    with sources.open_elf(_write(work, "in.vmcore", data)) as src:
        _exercise_source(src)


def target_notes(data: bytes, work: Path) -> None:
    """Walk a mutated PT_NOTE blob and parse the VMCOREINFO found in it."""
    info = sources.NoteInfo.parse(data, "<notes>", 0)
    vi = info.vmcoreinfo_bytes
    if vi is not None:
        _exercise_vmcoreinfo(VmcoreInfo.parse(vi, "<notes>"))


def _exercise_vmcoreinfo(vi: VmcoreInfo) -> None:
    from vmcorepack.kernel import memmap

    for key in list(vi.entries)[:64]:
        kind, _, rest = key.partition("(")
        name = rest.rstrip(")")
        getter = {
            "SYMBOL": vi.symbol,
            "SIZE": vi.size,
            "OFFSET": vi.offset,
            "LENGTH": vi.length,
            "NUMBER": vi.number,
        }.get(kind)
        with contextlib.suppress(VmcorepackError):
            if getter is not None:
                getter(name)
    for prop in ("page_size", "crashtime", "kerneloffset", "phys_base", "osrelease"):
        with contextlib.suppress(VmcorepackError):
            getattr(vi, prop)
    memmap.kernel_version(vi)
    with contextlib.suppress(VmcorepackError):
        memmap.PageLayout.from_vmcoreinfo(vi)


def target_vmcoreinfo(data: bytes, work: Path) -> None:
    """Parse mutated VMCOREINFO text and read every key and the page layout."""
    _exercise_vmcoreinfo(VmcoreInfo.parse(data, "<vmcoreinfo>"))


def _exercise_dump(path: str, strict: bool = False) -> None:
    with reader.KdumpReader(path) as k:
        _ = k.notes, k.vmcoreinfo, k.header
        pfns = k.dumpable_pfns()
        for pfn in [int(p) for p in pfns[:MAX_PAGES]] + [0, k.header.max_mapnr - 1, k.header.max_mapnr]:
            try:
                k.read_page(pfn)
            except VmcorepackError:
                if strict and pfn in pfns:
                    raise


def target_kdump(data: bytes, work: Path) -> None:
    """Open a mutated kdump file (or split part) and read its pages."""
    _exercise_dump(_write(work, "in.kdump", data))


def target_flat(data: bytes, work: Path) -> None:
    """Index a mutated flattened stream, read it as a dump, and rebuild it with ``-R``."""
    path = _write(work, "in.flat", data)
    with contextlib.suppress(VmcorepackError):
        f = reader.FlatFile(path)
        try:
            for off in (0, 4096, f.size // 2, max(0, f.size - 100)):
                f.read(off, 8192)
        finally:
            f.close()
    with contextlib.suppress(VmcorepackError):
        _exercise_dump(path)
    out = work / "rebuilt.kdump"
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    try:
        reader.reassemble_flat(io.BytesIO(data), str(out), name="<flat>")
    except VmcorepackError:
        if out.exists():
            raise Finding("-R left an output file after an error") from None


def _check_cli(args: list[str], out: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli.main(["--workers", "0", "--message-level", "0", *args, str(out)])
    if rc not in (0, 1):
        raise Finding(f"exit status {rc}")
    if rc == 1:
        lines = err.getvalue().strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("vmcorepack: "):
            raise Finding(f"error output is not one line: {err.getvalue()!r}")
        if out.exists():
            head = out.read_bytes()[:464]
            status = struct.unpack_from("<I", head, 424)[0] if len(head) >= 428 else 0
            if not status & DumpStatus.COMPRESSED_INCOMPLETE:
                raise Finding(f"failed run left {out.name} without the INCOMPLETE bit")
        return
    # Our own output must read back without any error.
    _exercise_dump(str(out), strict=True)


CLI_OPTIONS = (
    ("-d", "1"),
    ("-d", "0"),
    ("-d", "31"),
    ("-c", "-d", "31"),
    ("-d", "31", "-L", "40000"),
    ("-z", "-d", "1"),
    ("-d", "1", "--cyclic-buffer", "1"),
)


#: Inputs describing more pfns than this are parsed but not packed: packing is
#: linear in max_mapnr (a sparse 2^40-pfn span is legitimate, only slow).
CLI_MAX_MAPNR = 1 << 24


def target_cli(data: bytes, work: Path, options: Sequence[str] = ("-d", "31")) -> None:
    """Run ``vmcorepack`` in-process on a mutated vmcore; exit 0 or 1, never an exception."""
    path = _write(work, "in.vmcore", data)
    with contextlib.suppress(VmcorepackError), sources.open_elf(path) as src:
        if src.max_mapnr > CLI_MAX_MAPNR:
            return
    _check_cli([*options, path], work / "out.kdump")


def target_cli_vmcoreinfo(data: bytes, work: Path, options: Sequence[str] = ("-d", "31")) -> None:
    """Pack filt.vmcore at a filtering level with mutated VMCOREINFO given by ``-i``."""
    vi = _write(work, "vmcoreinfo.txt", data)
    _check_cli([*options, "-i", vi, str(VECTORS / "filt.vmcore")], work / "out.kdump")


def target_cli_sparse(data: bytes, work: Path, options: Sequence[str] = ("-d", "31")) -> None:
    """Pack the generated SPARSEMEM image with mutated VMCOREINFO given by ``-i``."""
    vi = _write(work, "vmcoreinfo.txt", data)
    _check_cli([*options, "-i", vi, str(sparse_vmcore())], work / "out.kdump")


def corpus_target(target: str) -> list[Callable[[bytes, Path], None]]:
    """The functions that replay a corpus file of ``target`` (the CLI ones under every option set)."""
    simple: dict[str, Callable[[bytes, Path], None]] = {
        "elf": target_elf,
        "notes": target_notes,
        "vmcoreinfo": target_vmcoreinfo,
        "kdump": target_kdump,
        "split": target_kdump,
        "flat": target_flat,
    }
    if target in simple:
        return [simple[target]]
    base = {"cli": target_cli, "cli_vmcoreinfo": target_cli_vmcoreinfo, "cli_sparse": target_cli_sparse}[target]
    return [functools.partial(base, options=o) for o in CLI_OPTIONS]


def run_target(target: Callable[[bytes, Path], None], data: bytes, work: Path) -> None:
    """Run one input through ``target`` under the oracle.

    Raises:
        Finding: Anything but success or a VmcorepackError, chained to the cause.
    """
    fds = _open_fds()
    try:
        with alloc_guard():
            target(data, work)
    except VmcorepackError:
        pass
    except Finding:
        raise
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        raise Finding(signature(e)) from e
    if _open_fds() > fds:
        raise Finding("file descriptor leaked")


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def scratch() -> tempfile.TemporaryDirectory[str]:
    """A scratch directory for one test or run."""
    return tempfile.TemporaryDirectory(prefix="vmcorepack-fuzz-")
