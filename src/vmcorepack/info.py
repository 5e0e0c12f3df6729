"""What a kdump file holds: headers, page kinds, codec mix, and a picture of physical memory.

:func:`dump_info` reads the headers, both bitmaps and the whole page_desc table
of a dump (regular file, flattened stream, compressed stream, or a set of
split parts) and counts, per pfn, what the dump has for it:

* kept: a descriptor with stored data (raw or compressed);
* zero: a descriptor pointing at the shared zero page (dump level bit 1, §5.4);
* excluded: a 1st-bitmap bit without a 2nd-bitmap bit;
* hole: no 1st-bitmap bit;
* missing: a zeroed descriptor (incomplete dump, §12) or a pfn outside every given split part.

The table is read in slices of :data:`WINDOW_PFNS` pfns with numpy, so the cost
is a few array passes per 16 GiB of memory.  :func:`page_map` aggregates the
same per-pfn kinds into groups of pages for :func:`render_map`; given the
source vmcore, kept and excluded pages alike are told apart as kernel, page
cache, user or free pages by re-running the filter one level bit at a time.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vmcorepack import bitmap
from vmcorepack.codecs import CODECS
from vmcorepack.constants import DumpLevel, DumpStatus
from vmcorepack.errors import KdumpFormatError, UnsupportedError
from vmcorepack.filter import PageFilter
from vmcorepack.formats import kdump
from vmcorepack.reader import DecompressedFile, FlatFile, KdumpHeader, KdumpReader
from vmcorepack.sources import Source

#: pfns per slice of the bitmaps and the descriptor table (a multiple of 8).
WINDOW_PFNS = 1 << 22
#: Largest picture, in pixels (one pixel = a power-of-two group of pages).
MAX_PIXELS = 1 << 20
#: Largest picture width in pixels.
MAX_WIDTH = 1024


class PageKind(enum.IntEnum):
    """What the dump has for a pfn; the order is the tie-break of the picture.

    Without the source only KEPT, ZERO, EXCLUDED, MISSING and HOLE occur; with
    it, kept and excluded pages are both told apart as page cache, user data
    or free pages (the ``*_KEPT`` kinds and CACHE, USER, FREE), KEPT and
    EXCLUDED keeping the rest.
    """

    KEPT = 0
    CACHE_KEPT = 1
    USER_KEPT = 2
    FREE_KEPT = 3
    ZERO = 4
    CACHE = 5
    USER = 6
    FREE = 7
    EXCLUDED = 8
    MISSING = 9
    HOLE = 10


#: Picture colours (RGB 0-255) and legend labels per kind: a dark shade for
#: kept pages, a light one of the same hue for excluded pages of that kind.
KIND_STYLE: dict[PageKind, tuple[tuple[int, int, int], str]] = {
    PageKind.KEPT: ((31, 78, 160), "kernel, kept"),
    PageKind.CACHE_KEPT: ((190, 100, 0), "page cache, kept"),
    PageKind.USER_KEPT: ((25, 110, 45), "user data, kept"),
    PageKind.FREE_KEPT: ((140, 140, 130), "free, kept"),
    PageKind.ZERO: ((170, 205, 240), "zero page (shared)"),
    PageKind.CACHE: ((250, 195, 120), "page cache, excluded"),
    PageKind.USER: ((150, 215, 155), "user data, excluded"),
    PageKind.FREE: ((235, 235, 225), "free, excluded"),
    PageKind.EXCLUDED: ((200, 40, 40), "excluded (other)"),
    PageKind.MISSING: ((150, 40, 160), "missing (incomplete / other part)"),
    PageKind.HOLE: ((25, 25, 25), "hole (not RAM)"),
}
#: What a kind of page becomes when the source tells it apart: (kept, excluded).
_SORTED_KIND = {
    PageKind.CACHE: (PageKind.CACHE_KEPT, PageKind.CACHE),
    PageKind.USER: (PageKind.USER_KEPT, PageKind.USER),
    PageKind.FREE: (PageKind.FREE_KEPT, PageKind.FREE),
}


@dataclasses.dataclass(frozen=True)
class PartInfo:
    """One file of the dump.

    Attributes:
        path: File name.
        container: ``regular``, ``flattened``, or ``<compressor>+regular`` /
            ``<compressor>+flattened`` for a compressed file.
        size: Logical size of the kdump file (the reassembled size for streams).
        start_pfn: First pfn of this part.
        end_pfn: End pfn of this part.
        descriptors: Page descriptors of this part.
    """

    path: str
    container: str
    size: int
    start_pfn: int
    end_pfn: int
    descriptors: int


@dataclasses.dataclass(frozen=True)
class PageCounts:
    """Pages per kind over the pfns ``[0, max_mapnr)``.

    Attributes:
        max_mapnr: pfns described by the bitmaps.
        ram: Set bits of the 1st bitmap.
        dumpable: Set bits of the 2nd bitmap (= descriptors of all parts).
        kept: Pages with stored data.
        zero: Pages stored as the shared zero page.
        excluded: 1st-bitmap bits without a 2nd-bitmap bit.
        holes: pfns without a 1st-bitmap bit.
        missing: Zeroed descriptors and pfns in no given part.
    """

    max_mapnr: int
    ram: int
    dumpable: int
    kept: int
    zero: int
    excluded: int
    holes: int
    missing: int


@dataclasses.dataclass(frozen=True)
class DumpInfo:
    """Everything ``vmcorepack --info`` reports.

    Attributes:
        header: Main and sub header fields of the first part.
        kernel_release: ``utsname.release``, else VMCOREINFO's OSRELEASE, else "".
        codec_mix: Descriptors per kind of storage: ``raw``, a codec name,
            ``zero-page``, ``incomplete`` (zeroed) or the hex flags value.
        pages: Pages per kind.
        stored_bytes: Bytes of page data (the shared zero page counted once per part).
        compression_ratio: ``stored_bytes / ((kept + zero) * page size)``.
        incomplete: The INCOMPLETE status bit of any part.
        parts: The files, in pfn order.
    """

    header: KdumpHeader
    kernel_release: str
    codec_mix: dict[str, int]
    pages: PageCounts
    stored_bytes: int
    compression_ratio: float
    incomplete: bool
    parts: tuple[PartInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict.

        Returns:
            Plain Python values (signature decoded as latin-1).
        """
        d = dataclasses.asdict(self)
        d["header"]["signature"] = self.header.signature.decode("latin-1")
        d["parts"] = [dataclasses.asdict(p) for p in self.parts]
        return d


@dataclasses.dataclass(frozen=True)
class PageMap:
    """Page kinds aggregated into groups of ``group`` pages.

    Attributes:
        group: Pages per group (a power of two).
        width: Groups per picture row.
        counts: ``(n_groups, len(PageKind))`` int64 array of pages per kind.
        page_size: Page size.
        classified: Excluded pages were told apart using the source.
    """

    group: int
    width: int
    counts: np.ndarray
    page_size: int
    classified: bool

    def kinds(self) -> np.ndarray:
        """Return the dominant kind of every group (ties go to the lower :class:`PageKind`)."""
        out: np.ndarray = np.argmax(self.counts, axis=1).astype(np.uint8)
        return out

    def totals(self) -> dict[PageKind, int]:
        """Return pages per kind over the whole map."""
        t = self.counts.sum(axis=0)
        return {k: int(t[k]) for k in PageKind}


# ----------------------------------------------------------------------------
# Walking the bitmaps and the table
# ----------------------------------------------------------------------------


def window_bits(packed: np.ndarray, start: int, end: int) -> np.ndarray:
    """Unpack the bits of pfns ``[start, end)`` from a kdump bitmap.

    Args:
        packed: Bitmap bytes (LSB first).
        start: First pfn.
        end: End pfn.

    Returns:
        Bool array of ``end - start`` entries (missing bytes read as 0).
    """
    a = start // 8
    raw = packed[a : -(-end // 8)]
    bits = bitmap.unpack(raw, len(raw) * 8)[start - 8 * a : end - 8 * a]
    if len(bits) < end - start:
        bits = np.concatenate((bits, np.zeros(end - start - len(bits), bool)))
    return bits


def zero_page_offset(r: KdumpReader) -> int | None:
    """Return the file offset of the shared zero page, or None when the level has none.

    It is the first item of the data region, after a table sized for every
    descriptor of the whole dump (§5.4; split parts reserve the whole table, §8).

    Args:
        r: An open dump.

    Returns:
        The offset, or None.
    """
    if not r.header.dump_level & DumpLevel.ZERO:
        return None
    return r.geometry.table_offset + kdump.PAGE_DESC.itemsize * r.nr_dumpable


@dataclasses.dataclass
class Window:
    """One slice of a part: per-pfn kinds and the descriptors of its dumpable pfns.

    Attributes:
        start: First pfn.
        kinds: :class:`PageKind` per pfn (uint8).
        pfns: Dumpable pfns (int64).
        descs: Their ``page_desc`` entries.
        desc_index: Table index of the first of them.
    """

    start: int
    kinds: np.ndarray
    pfns: np.ndarray
    descs: np.ndarray
    desc_index: int


def iter_windows(r: KdumpReader, window: int = WINDOW_PFNS) -> Iterator[Window]:
    """Walk a part's pfn range in slices, reading its descriptors as whole arrays.

    Args:
        r: An open dump (one part).
        window: pfns per slice.

    Yields:
        One :class:`Window` per slice, in pfn order.
    """
    h = r.header
    zoff = zero_page_offset(r)
    desc_index = 0
    for s in range(h.start_pfn, min(h.end_pfn, h.max_mapnr), window):
        e = min(s + window, h.end_pfn, h.max_mapnr)
        b1 = window_bits(r.bitmap1, s, e)
        b2 = window_bits(r.bitmap2, s, e)
        kinds = np.where(b1, np.uint8(PageKind.EXCLUDED), np.uint8(PageKind.HOLE))
        idx = np.flatnonzero(b2)
        descs = r.descriptors(desc_index, len(idx)) if len(idx) else np.zeros(0, kdump.PAGE_DESC)
        k = np.full(len(idx), PageKind.KEPT, np.uint8)
        if zoff is not None:
            k[descs["offset"] == zoff] = PageKind.ZERO
        k[descs["offset"] == 0] = PageKind.MISSING
        kinds[idx] = k
        yield Window(s, kinds, idx.astype(np.int64) + s, descs, desc_index)
        desc_index += len(idx)


def open_parts(paths: Sequence[str]) -> list[KdumpReader]:
    """Open a dump or a set of split parts, sorted by start pfn.

    Args:
        paths: One file, or every part of a split dump.

    Returns:
        The readers (the caller closes them).

    Raises:
        KdumpFormatError: Parts that do not belong together.
    """
    readers: list[KdumpReader] = []
    try:
        # extend() keeps the readers opened before a failing one, for the cleanup.
        readers.extend(KdumpReader(p) for p in paths)
        readers.sort(key=lambda r: r.header.start_pfn)
        first = readers[0]
        for r in readers[1:]:
            if (r.header.max_mapnr, r.header.block_size) != (first.header.max_mapnr, first.header.block_size):
                raise KdumpFormatError(r.path, None, f"not a part of the same dump as {first.path}")
            if not np.array_equal(r.bitmap2, first.bitmap2):
                raise KdumpFormatError(r.path, None, f"2nd bitmap differs from {first.path}'s: not the same dump")
    except BaseException:
        for r in readers:
            r.close()
        raise
    return readers


def container_of(r: KdumpReader) -> str:
    """Name how a part is stored: ``regular``, ``flattened``, ``gzip+flattened``, ...

    Args:
        r: An open dump.

    Returns:
        The name.
    """
    f = r.file
    if isinstance(f, DecompressedFile):
        return f"{f.compression}+{'flattened' if f.flat else 'regular'}"
    return "flattened" if isinstance(f, FlatFile) else "regular"


def _storage_names(flags: np.ndarray, counts: np.ndarray) -> dict[str, int]:
    by_flag = {c.flag: c.name for c in CODECS.values() if c.flag}
    out: dict[str, int] = {}
    for f, n in zip(flags.tolist(), counts.tolist(), strict=True):
        name = "raw" if f == 0 else by_flag.get(f, f"{f:#x}")
        out[name] = out.get(name, 0) + n
    return out


def dump_info(paths: Sequence[str]) -> DumpInfo:
    """Describe a dump.

    Args:
        paths: One dump file (regular, flattened, compressed) or all split parts.

    Returns:
        The description.

    Raises:
        KdumpFormatError: Malformed dump.
        FlatFormatError: Malformed flattened stream.
    """
    readers = open_parts(paths)
    try:
        return _describe(readers)
    finally:
        for r in readers:
            r.close()


def _describe(readers: list[KdumpReader]) -> DumpInfo:
    first = readers[0]
    h = first.header
    bs = h.block_size
    per_kind = np.zeros(len(PageKind), np.int64)
    flag_counts: dict[int, int] = {}
    stored = 0
    parts = []
    covered = 0
    for r in readers:
        zoff = zero_page_offset(r)
        ndesc = 0
        for w in iter_windows(r):
            per_kind += np.bincount(w.kinds, minlength=len(PageKind))
            real = w.kinds[w.pfns - w.start] == PageKind.KEPT
            ndesc += len(w.pfns)
            stored += int(w.descs["size"][real].sum(dtype=np.int64))
            f, n = np.unique(w.descs["flags"][real], return_counts=True)
            for fv, nv in zip(f.tolist(), n.tolist(), strict=True):
                flag_counts[fv] = flag_counts.get(fv, 0) + nv
        if zoff is not None and r.nr_dumpable:
            stored += bs
        covered += max(0, min(r.header.end_pfn, h.max_mapnr) - r.header.start_pfn)
        parts.append(PartInfo(r.path, container_of(r), r.file.size, r.header.start_pfn, r.header.end_pfn, ndesc))
    ram = bitmap.count_set(first.bitmap1)
    uncovered = h.max_mapnr - covered
    mix = _storage_names(np.array(list(flag_counts), np.int64), np.array(list(flag_counts.values()), np.int64))
    if per_kind[PageKind.ZERO]:
        mix["zero-page"] = int(per_kind[PageKind.ZERO])
    if per_kind[PageKind.MISSING]:
        mix["incomplete"] = int(per_kind[PageKind.MISSING])
    pages = PageCounts(
        max_mapnr=h.max_mapnr,
        ram=ram,
        dumpable=first.nr_dumpable,
        kept=int(per_kind[PageKind.KEPT]),
        zero=int(per_kind[PageKind.ZERO]),
        excluded=int(per_kind[PageKind.EXCLUDED]),
        holes=int(per_kind[PageKind.HOLE]),
        missing=int(per_kind[PageKind.MISSING]) + uncovered,
    )
    kept_bytes = (pages.kept + pages.zero) * bs
    release = h.utsname.get("release", "")
    if not release:
        release = _osrelease(first.vmcoreinfo)
    return DumpInfo(
        header=h,
        kernel_release=release,
        codec_mix=mix,
        pages=pages,
        stored_bytes=stored,
        compression_ratio=stored / kept_bytes if kept_bytes else 0.0,
        incomplete=any(r.header.status & DumpStatus.COMPRESSED_INCOMPLETE for r in readers),
        parts=tuple(parts),
    )


def _osrelease(vmcoreinfo: bytes) -> str:
    for line in vmcoreinfo.decode("latin-1").splitlines():
        if line.startswith("OSRELEASE="):
            return line.partition("=")[2].strip()
    return ""


# ----------------------------------------------------------------------------
# The picture
# ----------------------------------------------------------------------------


def map_geometry(max_mapnr: int, max_pixels: int = MAX_PIXELS, max_width: int = MAX_WIDTH) -> tuple[int, int]:
    """Choose pages per pixel and pixels per row for ``max_mapnr`` pfns.

    Args:
        max_mapnr: pfns to draw.
        max_pixels: Bound on the number of pixels.
        max_width: Bound on the row length.

    Returns:
        ``(group, width)``: both powers of two; the picture is about square.
    """
    group = 1
    while -(-max_mapnr // group) > max_pixels:
        group *= 2
    ngroups = max(1, -(-max_mapnr // group))
    width = 1
    while width * width < ngroups and width < max_width:
        width *= 2
    return group, width


class _Classifier:
    """Tells kept and excluded pages apart by running the filter once per level bit.

    Every bit is run whatever the dump's level, so that a ``-d 1`` dump shows
    which of its kept pages are page cache, user data or free.
    """

    ORDER = (
        (DumpLevel.FREE, PageKind.FREE),
        (DumpLevel.CACHE, PageKind.CACHE),
        (DumpLevel.CACHE_PRIVATE, PageKind.CACHE),
        (DumpLevel.USER, PageKind.USER),
    )

    def __init__(self, source: Source) -> None:
        # One filter per bit, all walked in increasing pfn order (PageFilter's rule).
        # makedumpfile tests free pages first, then cache, then user (§9.7).
        self.filters = [(PageFilter(source, bit), kind) for bit, kind in self.ORDER]

    def classify(self, kinds: np.ndarray, start: int, end: int) -> None:
        kept = kinds == PageKind.KEPT
        excluded = kinds == PageKind.EXCLUDED
        for flt, kind in self.filters:
            dropped = ~flt.second_bitmap(start, end)
            as_kept, as_excluded = _SORTED_KIND[kind]
            kinds[dropped & kept] = as_kept
            kinds[dropped & excluded] = as_excluded
            kept &= ~dropped
            excluded &= ~dropped


def page_map(paths: Sequence[str], source: Source | None = None, max_pixels: int = MAX_PIXELS) -> PageMap:
    """Aggregate the dump's page kinds into picture groups.

    pfns in no given part count as MISSING where the 1st bitmap has RAM and
    as HOLE elsewhere, so that the kinds other than HOLE add up to the RAM
    pages of the dump.

    Args:
        paths: The dump (or its split parts).
        source: The vmcore the dump was made from, to tell kept and excluded
            pages apart (needs VMCOREINFO for levels above 1).
        max_pixels: Bound on the number of groups.

    Returns:
        The map.
    """
    readers = open_parts(paths)
    try:
        h = readers[0].header
        group, width = map_geometry(h.max_mapnr, max_pixels)
        nk = len(PageKind)
        ngroups = max(1, -(-h.max_mapnr // group))
        counts = np.zeros((ngroups, nk), np.int64)
        # pfns in no given part: RAM or not, by the 1st bitmap (every part has all of it).
        ram = _ram_per_group(readers[0].bitmap1, h.max_mapnr, group)
        counts[:, PageKind.MISSING] = ram
        counts[:, PageKind.HOLE] = _group_sizes(h.max_mapnr, group) - ram
        classifier = _Classifier(source) if source is not None else None
        for r in readers:
            for w in _windows_aligned(r, group):
                if classifier is not None:
                    classifier.classify(w.kinds, w.start, w.start + len(w.kinds))
                g0 = w.start // group
                rel = (np.arange(w.start, w.start + len(w.kinds), dtype=np.int64) // group - g0) * nk
                bc = np.bincount(rel + w.kinds, minlength=(-(-(w.start + len(w.kinds)) // group) - g0) * nk)
                block = bc.reshape(-1, nk)
                counts[g0 : g0 + len(block)] += block
                holes = block[:, PageKind.HOLE]
                counts[g0 : g0 + len(block), PageKind.MISSING] -= block.sum(axis=1) - holes
                counts[g0 : g0 + len(block), PageKind.HOLE] -= holes
        return PageMap(group, width, counts, h.block_size, classifier is not None)
    finally:
        for r in readers:
            r.close()


def _ram_per_group(bitmap1: np.ndarray, max_mapnr: int, group: int) -> np.ndarray:
    out = np.zeros(max(1, -(-max_mapnr // group)), np.int64)
    step = max(group, WINDOW_PFNS // group * group)
    for s in range(0, max_mapnr, step):
        e = min(s + step, max_mapnr)
        bits = window_bits(bitmap1, s, e)
        g = np.arange(s, e, dtype=np.int64)[bits] // group
        out += np.bincount(g, minlength=len(out))
    return out


def _group_sizes(max_mapnr: int, group: int) -> np.ndarray:
    n = max(1, -(-max_mapnr // group))
    sizes = np.full(n, group, np.int64)
    sizes[-1] = max_mapnr - group * (n - 1)
    return sizes


def _windows_aligned(r: KdumpReader, group: int) -> Iterator[Window]:
    return iter_windows(r, max(group, WINDOW_PFNS // group * group))


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if nbytes == int(nbytes) else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} B"


#: The one-line error when --plot has no matplotlib (an extra, unlike the codecs).
_PLOT_HINT = "--plot needs matplotlib: pip install 'vmcorepack[plot]'"


def require_plot() -> None:
    """Fail now, before any report is printed, when :func:`render_map` could not draw.

    Raises:
        UnsupportedError: matplotlib is not installed.
    """
    import importlib.util  # --plot only

    if importlib.util.find_spec("matplotlib") is None:
        raise UnsupportedError(_PLOT_HINT)


def address_ticks(span: int, most: int = 16) -> list[int]:
    """Choose physical addresses to mark on the picture's axis: multiples of a power-of-two size.

    The step is 1 GiB, doubled until at most ``most`` marks fit in ``span``
    bytes, or halved for a span under 4 GiB until at least four marks fit.

    Args:
        span: Bytes the picture covers.
        most: Largest number of marks.

    Returns:
        The addresses, from 0, below ``span``.
    """
    step = 1 << 30
    while -(-span // step) > most:
        step *= 2
    while step > 1 and span <= 3 * step:
        step //= 2
    return list(range(0, max(span, 1), step))


def render_map(info: DumpInfo, pmap: PageMap, path: str) -> None:
    """Draw the map as a PNG: one pixel per group, rows of ``width`` groups, legend and headline.

    Args:
        info: The dump's description (headline figures).
        pmap: The aggregated kinds.
        path: Output file (format from the suffix, PNG recommended).

    Raises:
        UnsupportedError: matplotlib is not installed (``pip install vmcorepack[plot]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as e:
        raise UnsupportedError(_PLOT_HINT) from e
    palette = np.array([KIND_STYLE[k][0] for k in PageKind], np.uint8)
    ngroups = len(pmap.counts)
    width = pmap.width
    rows = -(-ngroups // width)
    pixels = np.full((rows * width, 3), 255, np.uint8)
    pixels[:ngroups] = palette[pmap.kinds()]
    img = pixels.reshape(rows, width, 3)
    # Small dumps are scaled up so the picture is at least ~512 pixels wide.
    scale = max(1, 512 // width)
    dpi = 100
    fig_w = width * scale / dpi + 3.6
    fig_h = rows * scale / dpi + 1.4
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=dpi)
    ax.imshow(img, interpolation="nearest", aspect="equal")
    ps = pmap.page_size
    row_bytes = width * pmap.group * ps
    ticks = address_ticks(rows * row_bytes)
    # Row r covers [r, r + 1) * row_bytes; imshow puts its top edge at r - 0.5.
    ax.set_yticks([t / row_bytes - 0.5 for t in ticks])
    ax.set_yticklabels([f"{t:#x}  {_human(t)}" for t in ticks], fontsize=8, family="monospace")
    ax.set_xticks([])
    ax.set_ylabel("physical address")
    ax.set_xlabel(
        f"1 pixel = {pmap.group} page{'s' if pmap.group > 1 else ''} ({_human(pmap.group * ps)}); "
        f"1 row = {_human(row_bytes)}"
    )
    totals = pmap.totals()
    shown = [k for k in PageKind if totals[k] or k in (PageKind.KEPT, PageKind.HOLE)]
    # One denominator for the legend and the title: the RAM pages (1st bitmap).
    ram = max(1, info.pages.ram)
    labels = {k: KIND_STYLE[k][1] for k in PageKind}
    if not pmap.classified:
        labels[PageKind.KEPT] = "kept"
        labels[PageKind.EXCLUDED] = "excluded"

    def entry(k: PageKind) -> str:
        if k == PageKind.HOLE:
            return f"{labels[k]}: {totals[k]:,} pfns"
        return f"{labels[k]}: {totals[k]:,} ({100 * totals[k] / ram:.1f} %)"

    handles = [
        Patch(facecolor="#{:02x}{:02x}{:02x}".format(*KIND_STYLE[k][0]), edgecolor="0.5", label=entry(k)) for k in shown
    ]
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=8,
        frameon=False,
        title="pages (% of RAM)" + ("" if pmap.classified else "; --source tells kinds apart"),
        title_fontsize=8,
        alignment="left",
    )
    h = info.header
    p = info.pages
    codecs = ", ".join(f"{k} {v:,}" for k, v in sorted(info.codec_mix.items(), key=lambda kv: -kv[1]))
    ax.set_title(
        f"{info.kernel_release or 'unknown kernel'} - {_human(h.max_mapnr * ps)} physical, "
        f"{p.ram:,} RAM pages ({_human(p.ram * ps)}), dump level {h.dump_level}"
        f"{' (INCOMPLETE)' if info.incomplete else ''}\n"
        f"kept {p.kept + p.zero:,} pages ({100 * (p.kept + p.zero) / ram:.1f} % of RAM), "
        f"stored {_human(info.stored_bytes)}, ratio {info.compression_ratio:.2f}\n{codecs}",
        fontsize=9,
        loc="left",
    )
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
