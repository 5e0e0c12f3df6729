"""Console entry point: refuse early when memory cannot hold the run, then start the CLI.

In a capture kernel with too small a ``crashkernel=`` reservation, importing
numpy alone can exhaust memory: the interpreter then thrashes on its own code
pages until the OOM killer ends it, minutes later, with no message and no
file.  This module imports only the standard library, reads MemAvailable and
stops with one line when the run cannot fit, so that the kdump service
reports it and falls back at once.
"""

from __future__ import annotations

import gc
import os
import sys

from vmcorepack import sysmem


def memory_shortfall(needed_kib: int = sysmem.BASE_KIB) -> str | None:
    """Say why the run cannot fit in memory, or None when it can (or cannot be told).

    Args:
        needed_kib: Peak resident memory the run needs, KiB.

    Returns:
        A one-line explanation, or None.
    """
    override = os.environ.get("VMCOREPACK_MIN_MEMORY_MB")
    if override is not None:
        try:
            needed_kib = int(override) << 10
        except ValueError:
            return f"VMCOREPACK_MIN_MEMORY_MB={override!r} is not a number of MiB"
    if needed_kib <= 0:
        return None
    found = sysmem.available_kib()
    mine = sysmem.meminfo_kib("VmRSS", "/proc/self/status") or 0
    if found is None or found[0] + mine >= needed_kib:
        return None
    avail, where, what = found
    return (
        f"{where}: only {avail >> 10} MiB of memory available ({what}), vmcorepack needs about "
        f"{(needed_kib - mine) >> 10} MiB; reserve more for the capture kernel (crashkernel=) "
        "or set VMCOREPACK_MIN_MEMORY_MB=0 to try anyway"
    )


def main() -> int:
    """Run ``vmcorepack`` after the memory check.

    Returns:
        Exit status.
    """
    why = memory_shortfall()
    if why is not None:
        print(f"vmcorepack: {why}", file=sys.stderr)
        return 1
    # Importing numpy and the package allocates objects that all live to the
    # end, so the cyclic collector's passes meanwhile find nothing: 45 passes
    # taking 8-10 ms here (gc.callbacks around `import vmcorepack.cli`).
    # Disabling it alone only defers the work: every object allocated
    # meanwhile stays in the youngest generation, and the first pass after
    # re-enabling walked them all before the argument parser ran
    # (`benchmarks/imports.py`, "first gen-0 pass").  gc.freeze() moves them
    # out of the collector's sight for good (procs.Worker leaves it in place).
    gc.disable()
    try:
        from vmcorepack.cli import main as cli_main
    finally:
        gc.freeze()
        gc.enable()

    status = cli_main()
    # The dump file is closed and every message printed: skip the interpreter's
    # teardown (freeing numpy's and every module's objects one by one), which
    # took 50 ms of a 0.45 s run on the real fixture at -d 31 (strace -tt of
    # `vmcorepack -l -d 31`: "Completed." at 0.4768 s, exit_group at 0.5271 s).
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: the normal exit would fail the same way
        return status
    os._exit(status)
