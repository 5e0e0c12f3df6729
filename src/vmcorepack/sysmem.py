"""How much memory a run may use, and how many workers fit in it (standard library only).

A capture kernel lives in its ``crashkernel=`` reservation, which also holds
the initramfs, and a service may run vmcorepack in a memory cgroup: either way
an oversized run is ended by the OOM killer, with no message and no file.  So
the console entry refuses a run that cannot fit (:mod:`vmcorepack.launch`)
and the CLI asks for no more workers than fit (:func:`workers_that_fit`).
This module imports nothing but the standard library: launch uses it before
numpy is loaded.
"""

from __future__ import annotations

import os

#: Peak resident memory of a one-process run, KiB.  Measured in the capture
#: kernel (tools/e2e/run.sh --crashkernel 112M, -l -d 31, 1 CPU): 28 MiB of
#: maxrss; the threshold adds 4 MiB of margin.
BASE_KIB = 32 << 10
#: What each forked worker adds to the process tree, KiB: peak summed PSS of
#: ``-c -d 1`` on the real fixture grew 23.0 MiB for the first worker and
#: 19.8 and 18.5 MiB a worker at 4 and 8 (benchmarks/bench.py --ours-only
#: --workers N); the largest step, rounded up.
WORKER_KIB = 24 << 10

_MEMINFO = "/proc/meminfo"
_CGROUP = "/proc/self/cgroup"
_CGROUP_ROOT = "/sys/fs/cgroup"
#: cgroup v1 writes "no limit" as a page-rounded LONG_MAX.
_UNLIMITED = 1 << 62


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def meminfo_kib(key: str, path: str = _MEMINFO) -> int | None:
    """Return one ``/proc/meminfo``-style value in KiB, or None when it cannot be read.

    Args:
        key: For example ``MemAvailable``.
        path: The file (``/proc/self/status`` has the same form).

    Returns:
        The value.
    """
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cgroup_room_kib(cgroup: str = _CGROUP, root: str = _CGROUP_ROOT) -> tuple[int, str] | None:
    """Return what this process's memory cgroup still allows, in KiB, or None without a limit.

    cgroup v2: ``memory.max - memory.current`` of the unified hierarchy;
    v1: ``memory.limit_in_bytes - memory.usage_in_bytes`` of the memory
    controller.  The tightest limit on the way to the root counts.

    Args:
        cgroup: ``/proc/self/cgroup``.
        root: Where the hierarchies are mounted.

    Returns:
        KiB left under the tightest limit, and that limit's file.
    """
    try:
        with open(cgroup, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    room: tuple[int, str] | None = None
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            # v2; a hybrid system mounts it at .../unified beside the v1 controllers.
            unified = os.path.join(root, "unified")
            base = unified if os.path.isdir(unified) else root
            limit_name, usage_name = "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base = os.path.join(root, "memory")
            limit_name, usage_name = "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            d = os.path.join(base, *parts[:depth])
            limit_file = os.path.join(d, limit_name)
            limit = _read_int(limit_file)
            if limit is None or limit >= _UNLIMITED:
                continue
            usage = _read_int(os.path.join(d, usage_name)) or 0
            left = max(0, limit - usage) >> 10
            if room is None or left < room[0]:
                room = (left, limit_file)
    return room


def available_kib() -> tuple[int, str, str] | None:
    """Return the memory this run may still take, KiB, and what said so.

    Returns:
        ``(kib, file, what)``: the smaller of MemAvailable and the memory
        cgroup's room, the file that told it and its name for a message
        (``/proc/meminfo``, ``MemAvailable``), or None when neither can be read.
    """
    avail = meminfo_kib("MemAvailable")
    room = cgroup_room_kib()
    if room is not None and (avail is None or room[0] < avail):
        return room[0], room[1], "cgroup limit less usage"
    if avail is not None:
        return avail, _MEMINFO, "MemAvailable"
    return None


def workers_that_fit(requested: int, available: int, already: int = 0) -> int:
    """Return how many of ``requested`` workers fit beside the main process.

    Args:
        requested: Workers asked for.
        available: KiB the run may still take.
        already: KiB this process already holds (part of :data:`BASE_KIB`).

    Returns:
        ``requested`` when they fit, else the most that do (0: in-process).
    """
    spare = available + already - BASE_KIB
    return max(0, min(requested, spare // WORKER_KIB))
