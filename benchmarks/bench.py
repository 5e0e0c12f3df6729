"""Wall time, peak summed RSS and output size: vmcorepack against makedumpfile, same run.

Usage: python benchmarks/bench.py [--runs 3] [--workers 2] INPUT[:LEVEL[:CODEC]] ...

Each case runs makedumpfile (single-threaded, as kdump services run it) and
vmcorepack alternately, `--runs` times each, on the same input with the same
dump level and codec, and prints the median wall time, the ratio, the peak
proportional set size (PSS) summed over the whole process tree (sampled
every 20 ms from /proc/PID/smaps_rollup), and the output sizes. The input is read once before timing so both
tools see it in the page cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CODEC_OPT = {"none": [], "zlib": ["-c"], "lzo": ["-l"], "snappy": ["-p"], "zstd": ["-z"]}


def _children(pid: int) -> list[int]:
    # /proc/PID/task/TID/children is cheap; scanning all of /proc would steal
    # a core from the measured run on a 2-CPU machine.
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return kids


def _rss_kib(pid: int) -> int:
    # Proportional set size: pages shared by forked workers (the interpreter,
    # numpy) count once in the sum instead of once per process.
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], stdout: int | None = None) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS summed over its process tree, KiB)."""
    peak = 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout if stdout is not None else subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            tree = [proc.pid]
            i = 0
            while i < len(tree):
                tree.extend(_children(tree[i]))
                i += 1
            peak = max(peak, sum(_rss_kib(p) for p in tree))
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}")
    return wall, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="+", help="INPUT[:LEVEL[:CODEC]] (default level 1, codec lzo)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--vmcorepack", default=str(Path(sys.executable).with_name("vmcorepack")))
    ap.add_argument("--makedumpfile", default=shutil.which("makedumpfile") or "makedumpfile")
    ap.add_argument("--extra", default="", help="extra vmcorepack options")
    ap.add_argument("--dry-run", action="store_true", help="both tools filter and count but write nothing")
    ap.add_argument("--ours-only", action="store_true", help="skip makedumpfile (memory runs on big inputs)")
    args = ap.parse_args()
    cols = ("mdf s", "ours s", "ratio", "mdf MiB", "ours MiB", "mdf bytes", "ours bytes", "size")
    widths = (7, 7, 6, 8, 8, 12, 12, 6)
    print(f"{'input':<28} {'opts':<8} " + " ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True)))
    for case in args.cases:
        parts = case.split(":")
        path, level, codec = parts[0], parts[1] if len(parts) > 1 else "1", parts[2] if len(parts) > 2 else "lzo"
        with open(path, "rb") as f:  # warm the page cache
            while f.read(1 << 24):
                pass
        tmp = Path(tempfile.mkdtemp(prefix="bench-", dir=os.environ.get("BENCH_TMP")))
        opts = [*CODEC_OPT[codec], "-d", level, *(["--dry-run"] if args.dry_run else [])]
        times: dict[str, list[float]] = {"mdf": [], "ours": []}
        mem: dict[str, int] = {"mdf": 0, "ours": 0}
        size: dict[str, int] = {}
        for _ in range(args.runs):
            for who in ("ours",) if args.ours_only else ("mdf", "ours"):
                out = tmp / f"{who}.kdump"
                out.unlink(missing_ok=True)
                if who == "mdf":
                    cmd = [args.makedumpfile, *opts, "--message-level", "0", path, str(out)]
                else:
                    cmd = [
                        args.vmcorepack,
                        *opts,
                        "--message-level",
                        "0",
                        "--workers",
                        str(args.workers),
                        *args.extra.split(),
                        path,
                        str(out),
                    ]
                wall, peak = run_measured(cmd)
                times[who].append(wall)
                mem[who] = max(mem[who], peak)
                size[who] = out.stat().st_size if out.exists() else 0
                out.unlink(missing_ok=True)
        if args.ours_only:
            times["mdf"], size["mdf"] = [float("nan")], 0
        tm, to = statistics.median(times["mdf"]), statistics.median(times["ours"])
        print(
            f"{Path(path).name:<28} {'-d' + level + ' ' + codec:<8} {tm:7.2f} {to:7.2f} {to / tm:6.2f} "
            f"{mem['mdf'] / 1024:8.1f} {mem['ours'] / 1024:8.1f} {size['mdf']:12d} {size['ours']:12d} "
            f"{size['ours'] / size['mdf'] if size['mdf'] else 0:6.3f}"
        )
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
