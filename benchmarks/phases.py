"""Where one pack's time goes: start-up, prepare (bitmaps), write (workers), and CPU per process.

Usage: python benchmarks/phases.py INPUT [--level 1] [--codec lzo] [--workers 2] [--chunk-pages 0]
                                         [--python-loop] [--runs 3]

Prints, per run, wall seconds of the imports, of pipeline.prepare() and of
pipeline.write_dump(), and the CPU seconds of the main process and of all
workers together. The figures in pipeline.py and sources.py comments on chunk
size, self-scheduling workers and mapped input come from this script.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time


def main() -> int:
    t0 = time.monotonic()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--codec", default="lzo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-pages", type=int, default=0)
    ap.add_argument("--python-loop", action="store_true", help="VMCOREPACK_NATIVE=0: no C page loop")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    if args.python_loop:
        os.environ["VMCOREPACK_NATIVE"] = "0"
    from vmcorepack import native, pipeline, sources

    native.ENABLED = not args.python_loop
    t_import = time.monotonic() - t0
    out_dir = tempfile.mkdtemp(prefix="phases-", dir=os.environ.get("BENCH_TMP"))
    out = os.path.join(out_dir, "dump")
    for _ in range(args.runs):
        # A fresh file each time: truncating an old one makes ext4 flush it on close.
        if os.path.exists(out):
            os.unlink(out)
        before_self = resource.getrusage(resource.RUSAGE_SELF)
        before_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        t1 = time.monotonic()
        src = sources.open_elf(args.input)
        opts = pipeline.PackOptions(
            dump_level=args.level, codec=args.codec, workers=args.workers, chunk_pages=args.chunk_pages
        )
        prep = pipeline.prepare(src, opts)
        t2 = time.monotonic()
        pipeline.write_dump(src, prep, out, opts)
        t3 = time.monotonic()
        src.close()
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_me = me.ru_utime + me.ru_stime - before_self.ru_utime - before_self.ru_stime
        cpu_kids = kids.ru_utime + kids.ru_stime - before_kids.ru_utime - before_kids.ru_stime
        print(
            f"import {t_import:.2f} s  prepare {t2 - t1:.2f} s  write {t3 - t2:.2f} s  "
            f"| CPU main {cpu_me:.2f} s, workers {cpu_kids:.2f} s  ({os.path.getsize(out)} bytes)",
            flush=True,
        )
    os.unlink(out)
    os.rmdir(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
