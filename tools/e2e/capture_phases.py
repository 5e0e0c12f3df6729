"""Where vmcorepack's time goes on one input, phase by phase (run in the e2e capture kernel).

    python tools/e2e/capture_phases.py INPUT OUT.json [--level 31] [--codec lzo] [--write-dir DIR]

Measured in this process, in the order a run does them, with the same functions:

* ``startup_s``: process start (``/proc/self/stat`` starttime, clock ticks) to this script's
  first line: exec, dynamic linking, interpreter start, ``site``;
* ``import_numpy_s``, ``import_vmcorepack_s``: ``import numpy``, then ``vmcorepack.cli`` and
  what it imports;
* ``open_s``: open the input, read its ELF headers, notes and VMCOREINFO;
* ``prepare_s``: the page pass (``pipeline.prepare``: mem_map reads and the exclusion rules);
* ``read_pread_s``, ``read_mmap_s``: read the kept pages only, with ``preadv`` / out of mapped
  windows (the C loop's two ways, codec ``none`` on known-zero-free input is a copy);
* ``encode_pread_s``, ``encode_mmap_s``: read and compress them in the C loop, both ways;
* ``compress_s``: compress them from memory only (``encode_pages``);
* ``write_s``: write as many bytes as the compressed pages take to ``--write-dir`` in
  8 MiB pieces, as the writer does.

Each read pass reads the pages afresh from /proc/vmcore (the kernel copies or maps the old
memory every time; nothing is cached). The rest of a real run (headers, bitmaps, page
descriptors, Python per chunk) is its wall time minus these.
"""

from __future__ import annotations

import os
import sys
import time

_T0 = time.monotonic()


def _since_start() -> float:
    """Seconds from this process's start to now (``/proc`` clock ticks: 10 ms resolution)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rpartition(")")[2].split()[19])
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return up - start_ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    """Measure and write the JSON report."""
    startup = _since_start() - (time.monotonic() - _T0)
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("out")
    ap.add_argument("--level", type=int, default=31)
    ap.add_argument("--codec", default="lzo")
    ap.add_argument("--write-dir", default=None, help="where to time the writes (default: OUT's directory)")
    ap.add_argument("--chunk-pages", type=int, default=2048)
    a = ap.parse_args()
    r: dict[str, float | int | str] = {"startup_s": round(startup, 3)}
    t = time.monotonic()
    import numpy as np

    r["import_numpy_s"] = time.monotonic() - t
    t = time.monotonic()
    import vmcorepack.cli  # noqa: F401  (what a run imports)
    from vmcorepack import codecs, native, pipeline, sources

    r["import_vmcorepack_s"] = time.monotonic() - t
    t = time.monotonic()
    src = sources.open_elf(a.input)
    r["open_s"] = time.monotonic() - t
    t = time.monotonic()
    opts = pipeline.PackOptions(dump_level=a.level, codec=a.codec, workers=0)
    prep = pipeline.prepare(src, opts)
    r["prepare_s"] = time.monotonic() - t
    pfns = np.flatnonzero(np.unpackbits(prep.bm2, bitorder="little")).astype(np.int64)
    partial = src.partial_pages()  # zero-filled in part: not plain file bytes, and a page or two
    if partial:
        pfns = pfns[~np.isin(pfns, np.fromiter(partial, np.int64, len(partial)))]
    plan = src.page_plan(pfns)
    if plan is None:
        raise SystemExit("capture_phases: the input's pages are not plain file bytes")
    fd, offsets, _ = plan
    ps = src.page_size
    r["pages"] = len(offsets)
    r["bytes"] = len(offsets) * ps
    chunks = [offsets[i : i + a.chunk_pages] for i in range(0, len(offsets), a.chunk_pages)]
    mod = native.module()
    window = sources.MAP_WINDOW
    for codec_name, label in (("none", "read"), (a.codec, "encode")):
        loop = codecs.page_loop(codecs.get_codec(codec_name), ps)
        assert loop is not None
        dst = bytearray(a.chunk_pages * ps + loop.headroom)
        sizes = np.empty(a.chunk_pages, np.int64)
        for how, win in (("pread", 0), ("mmap", window)):
            t = time.monotonic()
            total = 0
            for c in chunks:
                total += loop.encode_file(fd, c.data, ps, True, dst, sizes.data, win, src.file_size)
            r[f"{label}_{how}_s"] = time.monotonic() - t
            if label == "encode":
                r["encoded_bytes"] = total
    loop = codecs.page_loop(codecs.get_codec(a.codec), ps)
    assert loop is not None
    raw = bytearray(a.chunk_pages * ps)
    dst = bytearray(a.chunk_pages * ps + loop.headroom)
    sizes = np.empty(a.chunk_pages, np.int64)
    spent = 0.0
    for c in chunks:
        mod.read_pages(fd, c.data, ps, raw)
        t = time.monotonic()
        loop.encode(memoryview(raw)[: len(c) * ps], ps, True, dst, sizes.data)
        spent += time.monotonic() - t
    r["compress_s"] = spent
    write_dir = a.write_dir or os.path.dirname(os.path.abspath(a.out))
    path = os.path.join(write_dir, f".capture_phases.{os.getpid()}")
    piece = bytes(8 << 20)
    left = int(r["encoded_bytes"])
    t = time.monotonic()
    wfd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        off = 0
        while left > 0:
            n = os.pwrite(wfd, memoryview(piece)[: min(left, len(piece))], off)
            off += n
            left -= n
    finally:
        os.close(wfd)
        os.unlink(path)
    r["write_s"] = time.monotonic() - t
    src.close()
    out = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(" ".join(f"{k}={v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
