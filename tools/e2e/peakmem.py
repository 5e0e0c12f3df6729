"""Run a command and record its wall time and peak memory (process tree) as JSON.

Used inside the capture kernel, where memory is scarce: ``ru_maxrss`` (what ``time -v``
reports: the largest single process of the tree), a sampled peak of the tree's summed VmRSS,
the sum of every tree process's VmHWM (an upper bound) and the lowest MemAvailable seen.
Only the standard library: it runs with the guest's python3 next to the measured command.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "PPid"):
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _tree(root: int) -> dict[int, dict[str, int]]:
    """Status of ``root`` and all its descendants."""
    procs: dict[int, dict[str, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _status(int(name))
            if st:
                procs[int(name)] = st
    tree: dict[int, dict[str, int]] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        if pid in procs and pid not in tree:
            tree[pid] = procs[pid]
            frontier.extend(p for p, st in procs.items() if st.get("PPid") == pid)
    return tree


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def main(argv: list[str]) -> int:
    """peakmem.py OUT.json -- COMMAND...; exit 0 when COMMAND succeeded."""
    if len(argv) < 4 or argv[2] != "--":
        print("usage: peakmem.py OUT.json -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    out_path, cmd = argv[1], argv[3:]
    interval = float(os.environ.get("PEAKMEM_INTERVAL", "0.25"))
    limit = float(os.environ.get("PEAKMEM_TIMEOUT", "0")) or None
    avail0 = _mem_available()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    rss_peak = 0
    hwm: dict[int, int] = {}
    avail_min = avail0
    samples = 0
    status = 0
    timed_out = False
    while True:
        done, status, _ = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if limit is not None and not timed_out and time.monotonic() - t0 > limit:
            # Too slow (e.g. thrashing in a too-small crashkernel): kill the whole tree.
            timed_out = True
            print(f"peakmem: {cmd[0]}: still running after {limit:.0f} s, killing it", file=sys.stderr)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        tree = _tree(pid)
        rss_peak = max(rss_peak, sum(st.get("VmRSS", 0) for st in tree.values()))
        for p, st in tree.items():
            hwm[p] = max(hwm.get(p, 0), st.get("VmHWM", 0))
        avail_min = min(avail_min, _mem_available())
        samples += 1
        time.sleep(interval)
    wall = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    rc = os.waitstatus_to_exitcode(status)
    result = {
        "command": cmd,
        "rc": rc,
        "timed_out": timed_out,
        "wall_s": round(wall, 3),
        "user_s": round(ru.ru_utime, 3),
        "sys_s": round(ru.ru_stime, 3),
        "maxrss_kib": ru.ru_maxrss,
        "tree_rss_peak_kib": rss_peak,
        "tree_hwm_sum_kib": sum(hwm.values()),
        "tree_processes": len(hwm),
        "mem_available_start_kib": avail0,
        "mem_available_min_kib": avail_min,
        "samples": samples,
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"peakmem: {' '.join(cmd[:2])}: rc {rc}, {wall:.1f} s, maxrss {ru.ru_maxrss} KiB", file=sys.stderr)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
