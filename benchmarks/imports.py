"""What importing vmcorepack's own modules costs, module by module, after numpy is loaded.

Usage: python benchmarks/imports.py [--runs 12] [--against SRC]

Each run is a fresh interpreter that first imports numpy and the standard
modules the package uses (with the collector off, as the console entry runs),
then each vmcorepack module in import order, timing each one, and then the
collector's first young-generation pass (with and without ``gc.freeze()``,
alternate runs) and ``cli.build_parser()``.  Prints the medians.  ``--against SRC`` alternates every run
with a second tree (another checkout's ``src``) put first on PYTHONPATH, and
prints both columns: the way to see what a change to module-level code costs.
The README's figure on records (frozen dataclasses against NamedTuples) and
the start-up figures in launch.py and cli.py come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

#: Our modules in the order ``import vmcorepack.cli`` loads them.
MODULES = [
    "vmcorepack",
    "vmcorepack.errors",
    "vmcorepack.constants",
    "vmcorepack.formats",
    "vmcorepack.formats.elf",
    "vmcorepack.formats.kdump",
    "vmcorepack.formats.flat",
    "vmcorepack.native",
    "vmcorepack.vmcoreinfo",
    "vmcorepack.sources",
    "vmcorepack.bitmap",
    "vmcorepack.codecs",
    "vmcorepack.streams",
    "vmcorepack.procs",
    "vmcorepack.kernel",
    "vmcorepack.kernel.walk",
    "vmcorepack.kernel.arch.x86_64",
    "vmcorepack.kernel.arch",
    "vmcorepack.kernel.memmap",
    "vmcorepack.filter",
    "vmcorepack.writer",
    "vmcorepack.pipeline",
    "vmcorepack.cli",
]

CHILD = """
import gc, importlib, json, os, sys, time
gc.disable()
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy, argparse, dataclasses, enum, signal, mmap, select, marshal, resource, zlib, ctypes, errno, stat
out = {}
for m in json.loads(sys.argv[1]):
    t = time.perf_counter()
    importlib.import_module(m)
    out[m] = time.perf_counter() - t
extra = {}
# What launch.main meets after the imports: with the collector merely
# re-enabled, its first young-generation pass walks every object the imports
# made; gc.freeze() takes them out of that pass.
if sys.argv[2] == "freeze":
    gc.freeze()
t = time.perf_counter()
gc.collect(0)
extra["first gen-0 pass (" + sys.argv[2] + ")"] = time.perf_counter() - t
t = time.perf_counter()
sys.modules["vmcorepack.cli"].build_parser()
extra["cli.build_parser()"] = time.perf_counter() - t
extra["shutil imported"] = float("shutil" in sys.modules)
print(json.dumps([out, extra]))
"""


def one_run(src: str | None, freeze: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Time the imports in a fresh interpreter; ``src`` goes first on PYTHONPATH.

    Returns:
        (seconds per module, seconds of the steps after the imports).
    """
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    mode = "freeze" if freeze else "no-freeze"
    r = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(MODULES), mode], capture_output=True, text=True, env=env, check=True
    )
    times, extra = json.loads(r.stdout)
    return times, extra


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--against", default=None, help="another tree's src directory, alternated with this one")
    args = ap.parse_args()
    trees: dict[str, str | None] = {"this": None}
    if args.against:
        trees["against"] = os.path.abspath(args.against)
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    after: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    for i in range(args.runs):
        for name, src in trees.items():
            # Every other run freezes before its first collection, to show both.
            times, extra = one_run(src, freeze=i % 2 == 1)
            runs[name].append(times)
            after[name].append(extra)
    print(f"{'module (ms, median of ' + str(args.runs) + ')':<40}" + "".join(f"{k:>10}" for k in trees))
    for m in [*MODULES, "total"]:
        cells = []
        for name in trees:
            vals = [sum(r.values()) if m == "total" else r[m] for r in runs[name]]
            cells.append(f"{1000 * statistics.median(vals):10.2f}")
        print(f"{m:<40}" + "".join(cells))
    steps = sorted({k for rs in after.values() for r in rs for k in r})
    for step in steps:
        cells = []
        for name in trees:
            vals = [r[step] for r in after[name] if step in r]
            unit = 1.0 if step == "shutil imported" else 1000.0
            cells.append(f"{unit * statistics.median(vals):10.2f}" if vals else f"{'-':>10}")
        print(f"{step:<40}" + "".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
