"""Micro-measurements behind design choices cited in comments, the README and notes.

Usage: python benchmarks/micro.py VMCORE

- reading: pread against a 2 MiB mmap window per read, over the whole file
  (sources.py: why contiguous runs use pread);
- zero test: ``any()`` against ``max() == 0`` per 8 MiB of pages (pipeline.zero_mask);
- duplicates: share of kept non-zero pages at -d 1 and -d 31 whose bytes repeat
  an earlier page (what a ``--dedup`` option could save);
- LZO encoders: microseconds per 4 KiB page on 20,000 pages from the start
  and from the middle of the file: liblzo2 (python-lzo) and our _lzo1x.h
  (``_native.lzo1x_1``), both called once per page from Python with a fresh
  dictionary each time, and our encoder as the workers run it (one call per
  chunk, the dictionary kept between pages and only its written slots
  cleared: ``codecs.PageLoop.encode``);
- gaps: at -d 31, how many unwanted pages reading through holes of up to N
  pages copies, against how many separate reads it saves (_native.c GAP_PAGES);
- C page loop (needs vmcorepack._native): LZO over the whole file in 8 MiB
  pieces, read with pread against mapped with MAP_POPULATE (sources._map_dense)
  against "fused" (encode_file_pages: 64 KiB preads, each compressed while in
  cache; pack.encoding.encode_from_file), and microseconds per non-zero page of the
  loop alone;
- codecs: microseconds per page and stored size / page size of every encoder
  (zlib, lzo, snappy, zstd, fast-zlib) on up to 30,000 non-zero pages, one every 5
  pages of the file: the C page loop (``codecs.PageLoop.encode``) against the
  Python loop (``Codec.compress_pages``, one library call per page; for zstd
  also through zstandard, the Python path before the C loop did zstd); median
  of 3 runs, each tool in turn.  With ``--codecs-only`` only this part runs.
"""

from __future__ import annotations

import collections
import hashlib
import mmap
import os
import sys
import time

import numpy as np

from vmcorepack.pack.bitmaps import _chunks
from vmcorepack.pipeline import PackOptions, prepare
from vmcorepack.sources import open_elf

CHUNK = 2 << 20


def reading(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    with open(path, "rb") as f:  # page cache
        while f.read(1 << 24):
            pass
    t = time.perf_counter()
    for off in range(0, size - CHUNK, CHUNK):
        os.pread(fd, CHUNK, off)
    t_pread = time.perf_counter() - t
    t = time.perf_counter()
    for off in range(0, size - CHUNK, CHUNK):
        with mmap.mmap(fd, CHUNK, mmap.MAP_SHARED, mmap.PROT_READ, offset=off) as mm:
            mm[:]
    t_mmap = time.perf_counter() - t
    os.close(fd)
    print(f"reading {size >> 20} MiB in 2 MiB pieces: pread {t_pread:.2f} s, mmap window {t_mmap:.2f} s")


def zero_test() -> None:
    raw = bytes(4096 * 100) + os.urandom(1 << 20) * 8
    w = np.frombuffer(raw, np.uint64).reshape(-1, 512)
    for name, fn in (("any", lambda: ~w.any(axis=1)), ("max", lambda: w.max(axis=1) == 0)):
        t = time.perf_counter()
        for _ in range(20):
            fn()
        print(f"zero test {name}: {(time.perf_counter() - t) / 20 * 1e3:.2f} ms per {len(raw) >> 20} MiB")


def duplicates(path: str) -> None:
    with open_elf(path) as src:
        for level in (1, 31):
            prep = prepare(src, PackOptions(dump_level=level))
            seen: collections.Counter[bytes] = collections.Counter()
            nonzero = 0
            for task in _chunks(prep.bm2, src.max_mapnr, 1 << 20, 4096):
                pages = np.frombuffer(src.read_pfns_bytes(task.pfns), np.uint8).reshape(-1, src.page_size)
                for row in pages[pages.max(axis=1) > 0]:
                    seen[hashlib.blake2b(row.tobytes(), digest_size=16).digest()] += 1
                    nonzero += 1
            dup = sum(c - 1 for c in seen.values() if c > 1)
            share = 100 * dup / nonzero
            print(f"-d {level}: {nonzero} kept non-zero pages, {dup} repeat an earlier one ({share:.1f} %)")


def lzo_encoders(path: str, pages: int = 20000) -> None:
    try:
        import lzo

        from vmcorepack import _native
        from vmcorepack.codecs import get_codec, page_loop
    except ImportError:
        print("LZO encoders: needs python-lzo and vmcorepack._native")
        return
    loop = page_loop(get_codec("lzo"), 4096)
    if loop is None:
        print("LZO encoders: the C page loop is disabled (VMCOREPACK_NATIVE=0)")
        return
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        for start in (1 << 20, size // 2):
            f.seek(start - start % 4096)
            data = f.read(pages * 4096)
            chunk = [data[i : i + 4096] for i in range(0, len(data), 4096)]
            best = {}
            for name, fn in (("ours", _native.lzo1x_1), ("liblzo2", lambda b: lzo.compress(b, 1, False))):
                runs = []
                for _ in range(5):
                    t = time.perf_counter()
                    for page in chunk:
                        fn(page)
                    runs.append(time.perf_counter() - t)
                best[name] = min(runs) / len(chunk) * 1e6
            src = data[: len(chunk) * 4096]
            dst = bytearray(len(src) + loop.headroom)
            sizes = np.empty(len(chunk), np.int64)
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                loop.encode(src, 4096, False, dst, sizes.data)
                runs.append(time.perf_counter() - t)
            best["loop"] = min(runs) / len(chunk) * 1e6
            print(
                f"LZO1X-1, {len(chunk)} pages at offset {start >> 20} MiB, us/page, best of 5: "
                f"liblzo2 {best['liblzo2']:.2f} and ours {best['ours']:.2f} (one Python call per page, fresh "
                f"dictionary); ours in the page loop {best['loop']:.2f} (one call, dictionary kept)"
            )


def gaps(path: str) -> None:
    with open_elf(path) as src:
        prep = prepare(src, PackOptions(dump_level=31, codec="lzo"))
        pfns = np.flatnonzero(np.unpackbits(np.asarray(prep.bm2), bitorder="little")).astype(np.int64)
        off = src.file_offsets(pfns)
    off = off[off >= 0]
    hole = np.diff(off) // 4096 - 1
    for g in (0, 1, 2, 4, 8):
        extra = int(hole[(hole > 0) & (hole <= g)].sum())
        stretches = int(((hole < 0) | (hole > g)).sum()) + 1
        print(
            f"-d 31, {len(off)} pages to read, holes of <= {g} pages read through: "
            f"{extra} unwanted pages copied, {stretches} stretches"
        )


def page_loop(path: str) -> None:
    from vmcorepack import native

    mod = native.module()
    if mod is None:
        print("C page loop: vmcorepack._native is not built")
        return
    piece = 8 << 20
    ps = 4096
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    dst = bytearray(piece + mod.headroom(ps))
    got = np.zeros(piece // ps, np.int64)
    for how in ("pread", "mmap", "fused"):
        t = time.perf_counter()
        encode = 0.0
        nonzero = 0
        for off in range(0, size - piece, piece):
            if how == "fused":
                offsets = np.arange(off, off + piece, ps, dtype=np.int64)
                mod.encode_file_pages(2, fd, offsets.data, ps, True, dst, got.data)
                nonzero += int((got >= 0).sum())
                continue
            if how == "pread":
                src: object = os.pread(fd, piece, off)
            else:
                src = mmap.mmap(fd, piece, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ, offset=off)
            e = time.perf_counter()
            mod.encode_pages(2, src, ps, True, dst, got.data)  # 2: LZO
            encode += time.perf_counter() - e
            nonzero += int((got >= 0).sum())
            if isinstance(src, mmap.mmap):
                src.close()
        total = time.perf_counter() - t
        print(
            f"C page loop, LZO, {size >> 20} MiB read by {how}: {total:.2f} s "
            + (f"({encode / max(nonzero, 1) * 1e6:.2f} us per non-zero page in the loop itself)" if encode else "")
        )
    os.close(fd)


def codec_loops(path: str, pages: int = 30000, stride: int = 5, runs: int = 3) -> None:
    from vmcorepack import codecs

    ps = 4096
    fd = os.open(path, os.O_RDONLY)
    picked: list[bytes] = []
    off = 0
    while len(picked) < pages:
        page = os.pread(fd, ps, off)
        if len(page) < ps:
            break
        if page.count(0) != ps:
            picked.append(page)
        off += ps * stride
    os.close(fd)
    raw = b"".join(picked)
    offs = list(range(0, len(raw), ps))
    n = len(picked)

    def stored(sizes: list[int]) -> float:
        return sum(min(s, ps) for s in sizes) / (n * ps)

    def c_loop(codec: codecs.Codec) -> tuple[float, float] | None:
        loop = codecs.page_loop(codec, ps)
        if loop is None:
            return None
        dst = bytearray(len(raw) + loop.headroom)
        got = np.zeros(n, np.int64)
        t = time.perf_counter()
        loop.encode(raw, ps, False, dst, got.data)
        return time.perf_counter() - t, stored(got.tolist())

    def py_loop(fn) -> tuple[float, float]:
        t = time.perf_counter()
        out = fn(raw, offs, ps)
        return time.perf_counter() - t, stored([len(o) for o in out])

    def zstandard_loop(raw: bytes, offs: list[int], ps: int) -> list[bytes]:
        import zstandard

        cctx = zstandard.ZstdCompressor(level=1)
        return [cctx.compress(raw[o : o + ps]) for o in offs]

    print(f"codecs: {n} non-zero pages, one every {stride} pages of the file; median of {runs}")
    for name in ("zlib", "lzo", "snappy", "zstd", "fast-zlib"):
        if not codecs.available(name):
            print(f"  {name}: unavailable")
            continue
        codec = codecs.get_codec(name)
        tools = {"C loop": lambda c=codec: c_loop(c), "Python loop": lambda c=codec: py_loop(c.compress_pages)}
        if name == "zstd":
            tools["Python loop, zstandard"] = lambda: py_loop(zstandard_loop)
        times: dict[str, list[float]] = {k: [] for k in tools}
        ratio: dict[str, float] = {}
        for _ in range(runs):
            for k, fn in tools.items():
                r = fn()
                if r is not None:
                    times[k].append(r[0])
                    ratio[k] = r[1]
        for k, ts in times.items():
            if ts:
                print(
                    f"  {name:<9} {k:<23} {sorted(ts)[len(ts) // 2] / n * 1e6:6.2f} us/page "
                    f"(range {min(ts) / n * 1e6:.2f}-{max(ts) / n * 1e6:.2f}), stored/page {ratio[k]:.3f}"
                )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--codecs-only"]:
        codec_loops(sys.argv[2])
        raise SystemExit(0)
    reading(sys.argv[1])
    zero_test()
    duplicates(sys.argv[1])
    lzo_encoders(sys.argv[1])
    gaps(sys.argv[1])
    page_loop(sys.argv[1])
    codec_loops(sys.argv[1])
