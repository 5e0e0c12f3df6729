"""Wall time, peak summed RSS and output size: vmcorepack against makedumpfile, same run.

Usage: python benchmarks/bench.py [--runs 3] [--workers 2] INPUT[:LEVEL[:CODEC]] ...

Each case runs makedumpfile (single-threaded, as kdump services run it) and
vmcorepack alternately, `--runs` times each, on the same input with the same
dump level and codec, and prints the median wall time, the ratio, the peak
proportional set size (PSS) summed over the whole process tree, and the
output sizes. Before every timed run the input is read again if any of it
has left the page cache (`fincore`): this machine runs DAMON reclaim, which
pages out file data it has not seen touched for about a minute, and a run that
finds its input half-evicted reads from disk. How much had to be read back is
reported with each case. A file larger than half the memory (the sparse
64 GiB image) has only its data extents cached.

Timed runs are not sampled: reading /proc/PID/smaps_rollup walks a process's
page tables, and sampling three processes every 20 ms took enough of a core
to slow vmcorepack's workers. Memory comes from one extra run per tool,
sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CODEC_OPT = {
    "none": [],
    "zlib": ["-c"],
    "lzo": ["-l"],
    "snappy": ["-p"],
    "zstd": ["-z"],
    "fast-zlib": ["--fast-zlib", "-c"],
}


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


def run_timed(cmd: list[str]) -> float:
    """Run ``cmd`` unobserved; return its wall time in seconds."""
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}")
    return wall


def run_measured(cmd: list[str], stdout: int | None = None) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak PSS summed over its process tree, KiB)."""
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


@dataclasses.dataclass
class Result:
    """One case: median wall times, peak PSS and output sizes of a baseline and of vmcorepack."""

    input: str
    level: str
    codec: str
    baseline: str  # "makedumpfile" or "vmcorepack --workers 0"
    base_s: float
    ours_s: float
    base_kib: int
    ours_kib: int
    base_bytes: int
    ours_bytes: int
    ram_bytes: int  # the input's size (memory covered), for throughput
    base_min: float = 0.0  # fastest and slowest timed run of each tool
    base_max: float = 0.0
    ours_min: float = 0.0
    ours_max: float = 0.0
    reread_mib: int = 0  # input found evicted before the runs and read again, MiB in all
    cpus: str = "2"  # "1": both tools pinned to one CPU (taskset -c 0); "2": vmcorepack with 2 workers

    @property
    def ratio(self) -> float:
        return self.ours_s / self.base_s if self.base_s else float("nan")


def _whole(path: str) -> bool:
    """Whether to cache all of ``path``, holes included, or only its data.

    Reading a sparse 64 GiB image whole would push 64 GiB of zeros through a
    page cache that cannot hold them.
    """
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return os.path.getsize(path) <= mem // 2


def warm(path: str) -> None:
    """Read the input so that the next run finds it in the page cache."""
    buf = bytearray(1 << 24)
    with open(path, "rb", buffering=0) as f:
        if _whole(path):
            while f.readinto(buf):
                pass
            return
        fd, pos, size = f.fileno(), 0, os.fstat(f.fileno()).st_size
        while pos < size:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # no data past pos (ENXIO)
                return
            end = os.lseek(fd, pos, os.SEEK_HOLE)
            while pos < end:
                pos += os.preadv(fd, [memoryview(buf)[: min(len(buf), end - pos)]], pos) or end - pos


def missing(path: str) -> int:
    """Bytes of ``path`` not in the page cache.

    For a file too big to cache whole this compares the resident bytes with
    the allocated ones, which is only a rough test: zero pages of holes that a
    tool has read count as resident too, and can hide evicted data.
    """
    st = os.stat(path)
    want = st.st_size if _whole(path) else min(st.st_size, st.st_blocks * 512)
    fincore = shutil.which("fincore")
    if fincore is None:
        return want
    out = subprocess.run(
        [fincore, "--bytes", "--noheadings", "--output", "RES", path], capture_output=True, text=True, check=False
    ).stdout.split()
    return max(want - int(out[0]), 0) if len(out) == 1 and out[0].isdigit() else want


def ensure_cached(path: str) -> int:
    """Read ``path`` again if part of it was evicted; return how many bytes were missing."""
    gone = missing(path)
    if gone:
        warm(path)
    return gone


def compare(
    path: str,
    level: str,
    codec: str,
    runs: int,
    ours: list[str],
    baseline: list[str] | None,
    baseline_name: str = "makedumpfile",
) -> Result:
    """Run ``baseline`` and ``ours`` (commands without the input and output) alternately.

    ``runs`` unobserved runs each give the median wall time (and the fastest
    and slowest); one more run each, sampled, gives the peak PSS. Every run
    finds the input in the page cache (for a file too big to cache whole, see
    :func:`missing`). A None baseline runs vmcorepack alone.
    """
    warm(path)
    reread = 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-", dir=os.environ.get("BENCH_TMP")))
    tools = {"ours": ours} if baseline is None else {"base": baseline, "ours": ours}
    times: dict[str, list[float]] = {k: [] for k in tools}
    mem = dict.fromkeys(tools, 0)
    size = dict.fromkeys(tools, 0)
    try:
        for run in range(runs + 1):
            for who, prefix in tools.items():
                out = tmp / f"{who}.kdump"
                out.unlink(missing_ok=True)
                cmd = [*prefix, path, str(out)]
                reread += ensure_cached(path)
                if run < runs:
                    times[who].append(run_timed(cmd))
                else:
                    mem[who] = run_measured(cmd)[1]
                size[who] = out.stat().st_size if out.exists() else 0
                out.unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    nan = float("nan")
    return Result(
        Path(path).name,
        level,
        codec,
        baseline_name if baseline is not None else "-",
        statistics.median(times["base"]) if "base" in times else nan,
        statistics.median(times["ours"]),
        mem.get("base", 0),
        mem["ours"],
        size.get("base", 0),
        size["ours"],
        os.path.getsize(path),
        min(times.get("base", [nan])),
        max(times.get("base", [nan])),
        min(times["ours"]),
        max(times["ours"]),
        reread >> 20,
    )


HEADER = (
    f"{'input':<22} {'opts':<13} {'CPUs':>4} {'baseline':<13} {'base s':>7} {'ours s':>7} {'ratio':>6} "
    f"{'base MiB':>8} {'ours MiB':>8} {'base bytes':>12} {'ours bytes':>12} {'size':>6} "
    f"{'base range':>11} {'ours range':>11} {'re-read MiB':>11}"
)


def row(r: Result) -> str:
    """Format one result as a table line under :data:`HEADER`."""
    rel = r.ours_bytes / r.base_bytes if r.base_bytes else 0.0
    return (
        f"{r.input:<22} {'-d' + r.level + ' ' + r.codec:<13} {r.cpus:>4} {r.baseline:<13} "
        f"{r.base_s:7.2f} {r.ours_s:7.2f} {r.ratio:6.2f} {r.base_kib / 1024:8.1f} {r.ours_kib / 1024:8.1f} "
        f"{r.base_bytes:12d} {r.ours_bytes:12d} "
        f"{rel:6.3f} {r.base_min:5.2f}-{r.base_max:<5.2f} {r.ours_min:5.2f}-{r.ours_max:<5.2f} {r.reread_mib:11d}"
    )


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
    print(HEADER)
    for case in args.cases:
        parts = case.split(":")
        path, level, codec = parts[0], parts[1] if len(parts) > 1 else "1", parts[2] if len(parts) > 2 else "lzo"
        opts = [*CODEC_OPT[codec], "-d", level, "--message-level", "0", *(["--dry-run"] if args.dry_run else [])]
        ours = [args.vmcorepack, *opts, "--workers", str(args.workers), *args.extra.split()]
        base = None if args.ours_only else [args.makedumpfile, *opts]
        print(row(compare(path, level, codec, args.runs, ours, base)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
