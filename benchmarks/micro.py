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
  cache; pipeline.encode_from_file), and microseconds per non-zero page of the
  loop alone.
"""

from __future__ import annotations

import collections
import hashlib
import mmap
import os
import sys
import time

import numpy as np

from vmcorepack.pipeline import PackOptions, _chunks, prepare
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


if __name__ == "__main__":
    reading(sys.argv[1])
    zero_test()
    duplicates(sys.argv[1])
    lzo_encoders(sys.argv[1])
    gaps(sys.argv[1])
    page_loop(sys.argv[1])
