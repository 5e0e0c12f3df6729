"""What importing vmcorepack's own modules costs, module by module, after numpy is loaded.

Usage: python benchmarks/imports.py [--runs 12] [--against SRC]

Each run is a fresh interpreter that first imports numpy and the standard
modules the package uses (with the collector off, as the console entry runs),
then each vmcorepack module in import order, timing each one.  Prints the
median per module and of the total.  ``--against SRC`` alternates every run
with a second tree (another checkout's ``src``) put first on PYTHONPATH, and
prints both columns: the way to see what a change to module-level code costs.
The README's figure on records (frozen dataclasses against NamedTuples) comes
from this script.
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
    "vmcorepack.kernel.x86_64",
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
print(json.dumps(out))
"""


def one_run(src: str | None) -> dict[str, float]:
    """Time the imports in a fresh interpreter; ``src`` goes first on PYTHONPATH."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    r = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(MODULES)], capture_output=True, text=True, env=env, check=True
    )
    times: dict[str, float] = json.loads(r.stdout)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--against", default=None, help="another tree's src directory, alternated with this one")
    args = ap.parse_args()
    trees: dict[str, str | None] = {"this": None}
    if args.against:
        trees["against"] = os.path.abspath(args.against)
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    for _ in range(args.runs):
        for name, src in trees.items():
            runs[name].append(one_run(src))
    print(f"{'module (ms, median of ' + str(args.runs) + ')':<40}" + "".join(f"{k:>10}" for k in trees))
    for m in [*MODULES, "total"]:
        cells = []
        for name in trees:
            vals = [sum(r.values()) if m == "total" else r[m] for r in runs[name]]
            cells.append(f"{1000 * statistics.median(vals):10.2f}")
        print(f"{m:<40}" + "".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
