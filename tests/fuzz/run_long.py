#!/usr/bin/env python3
"""Long fuzzing run over every parser target (issue 6).

Usage (from the repository root)::

    nice -n 10 .venv/bin/python tests/fuzz/run_long.py --seconds 900            # seeded random mutations
    nice -n 10 .venv/bin/python tests/fuzz/run_long.py --engine atheris --seconds 900  # coverage-guided

The targets and mutations are those of the hypothesis tests (fuzzlib.py).  The
time is split evenly over the targets (``--targets`` picks some).  Each new
kind of finding (exception type and innermost vmcorepack line, an allocation
over 256 MiB, an input slower than ``--timeout`` seconds, a bad exit of the
command) is printed and its input saved under ``--save``
(default tests/fuzz/corpus/<target>/), gzipped, where test_fuzz_corpus.py replays it.
The figures (executions, time, findings per target) are printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import os
import random
import re
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGETS = ("elf", "notes", "vmcoreinfo", "kdump", "split", "flat", "cli", "cli_vmcoreinfo", "cli_sparse")


class Timeout(Exception):
    """The input ran longer than --timeout."""


def _on_alarm(signum: int, frame: object) -> None:
    raise Timeout


def make_input(fz: object, target: str, ch: object) -> tuple[bytes, Callable[[bytes, Path], None]]:
    """Draw one input for ``target`` and the function that runs it."""
    f = fz  # the fuzzlib module
    if target in ("vmcoreinfo", "cli_vmcoreinfo", "cli_sparse"):
        base = "sparse" if target == "cli_sparse" or ch.integer(0, 1) else "filt"  # type: ignore[attr-defined]
        data = f.mutate_vmcoreinfo(ch, base=base)  # type: ignore[attr-defined]
    else:
        kind = {"cli": "elf", "split": "split"}.get(target, target)
        data = f.mutate(ch, kind, ch.pick(f.SEEDS[kind]))  # type: ignore[attr-defined]
    fn = {
        "elf": f.target_elf,  # type: ignore[attr-defined]
        "notes": f.target_notes,  # type: ignore[attr-defined]
        "vmcoreinfo": f.target_vmcoreinfo,  # type: ignore[attr-defined]
        "kdump": f.target_kdump,  # type: ignore[attr-defined]
        "split": f.target_kdump,  # type: ignore[attr-defined]
        "flat": f.target_flat,  # type: ignore[attr-defined]
    }.get(target)
    if fn is None:
        fn = f.corpus_target(target)[ch.integer(0, len(f.CLI_OPTIONS) - 1)]  # type: ignore[attr-defined]

    return data, fn


class Stats:
    """Executions, time and findings per target."""

    def __init__(self, targets: list[str], save: Path, timeout: float) -> None:
        self.targets = targets
        self.save = save
        self.timeout = timeout
        self.execs = dict.fromkeys(targets, 0)
        self.seconds = dict.fromkeys(targets, 0.0)
        self.findings: dict[str, tuple[str, str]] = {}  # signature -> (target, saved file)
        self.slowest = dict.fromkeys(targets, 0.0)

    def one(self, fz: object, target: str, ch: object, work: Path) -> None:
        data, fn = make_input(fz, target, ch)
        t0 = time.perf_counter()
        sig = None
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            fz.run_target(fn, data, work)  # type: ignore[attr-defined]
        except fz.Finding as e:  # type: ignore[attr-defined]
            sig = f"{e}"
        except Timeout:
            sig = f"timeout over {self.timeout:g} s"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        dt = time.perf_counter() - t0
        self.execs[target] += 1
        self.seconds[target] += dt
        self.slowest[target] = max(self.slowest[target], dt)
        if sig is not None:
            key = f"{target}: {re.sub(r'[0-9]+ MiB', 'N MiB', sig)}"
            if key not in self.findings:
                path = self._save(target, sig, data)
                self.findings[key] = (target, str(path))
                print(f"NEW {key}  -> {path}", flush=True)

    def _save(self, target: str, sig: str, data: bytes) -> Path:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", sig).strip("-")[:60]
        d = self.save / target
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{slug}-{hashlib.sha256(data).hexdigest()[:10]}.bin.gz"
        p.write_bytes(gzip.compress(data, 9, mtime=0))
        return p

    def report(self, wall: float) -> str:
        lines = [f"{'target':16} {'execs':>9} {'seconds':>9} {'exec/s':>8} {'slowest':>8}"]
        for t in self.targets:
            rate = self.execs[t] / self.seconds[t] if self.seconds[t] else 0.0
            lines.append(f"{t:16} {self.execs[t]:9d} {self.seconds[t]:9.1f} {rate:8.0f} {self.slowest[t]:7.2f}s")
        lines.append(f"{'total':16} {sum(self.execs.values()):9d} {wall:9.1f}")
        lines.append(f"findings: {len(self.findings)}")
        lines += [f"  {k}  ({v[1]})" for k, v in sorted(self.findings.items())]
        return "\n".join(lines)


def run_random(args: argparse.Namespace, stats: Stats) -> None:
    """Round-robin over the targets with seeded random mutations."""
    import fuzzlib

    rng = random.Random(args.seed)
    ch = fuzzlib.RandomChooser(rng)
    deadline = time.monotonic() + args.seconds
    per = args.seconds / len(stats.targets)
    with fuzzlib.scratch() as tmp, fuzzlib.memory_cap(args.memory << 20):
        work = Path(tmp)
        for i, target in enumerate(stats.targets):
            end = min(deadline, time.monotonic() + per) if i + 1 < len(stats.targets) else deadline
            while time.monotonic() < end:
                stats.one(fuzzlib, target, ch, work)


def run_atheris(args: argparse.Namespace, stats: Stats) -> None:
    """Coverage-guided: libFuzzer drives the choices of the same mutation generator."""
    import atheris

    with atheris.instrument_imports(include=["vmcorepack"]):
        import vmcorepack.cli  # noqa: F401
    import fuzzlib

    tmp = fuzzlib.scratch()
    work = Path(tmp.name)
    targets = stats.targets
    t0 = time.monotonic()
    end = t0 + args.seconds

    def one(buf: bytes) -> None:
        if time.monotonic() >= end:
            # libFuzzer leaves with _exit (no atexit): report here.
            print(stats.report(time.monotonic() - t0), flush=True)
            tmp.cleanup()
            os._exit(0)
        fdp = atheris.FuzzedDataProvider(buf)
        ch = fuzzlib.AtherisChooser(fdp)
        stats.one(fuzzlib, targets[fdp.ConsumeIntInRange(0, len(targets) - 1)], ch, work)

    with fuzzlib.memory_cap(args.memory << 20):
        atheris.Setup(
            [sys.argv[0], f"-max_total_time={int(args.seconds) + 60}", f"-seed={args.seed}", "-print_final_stats=1"],
            one,
        )
        atheris.Fuzz()


def main() -> int:
    """Run the fuzzers for a time budget and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=("random", "atheris"), default="random")
    p.add_argument("--seconds", type=float, default=600.0, help="total time budget (default 600)")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds after which an input is a finding")
    p.add_argument("--memory", type=int, default=2048, help="MiB of address space allowed over the start")
    p.add_argument("--save", type=Path, default=Path(__file__).resolve().parent / "corpus")
    args = p.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    bad = set(targets) - set(TARGETS)
    if bad:
        p.error(f"unknown targets {sorted(bad)}")
    signal.signal(signal.SIGALRM, _on_alarm)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    stats = Stats(targets, args.save, args.timeout)
    t0 = time.monotonic()
    if args.engine == "atheris":
        run_atheris(args, stats)
        return 0
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_random(args, stats)
    finally:
        print(stats.report(time.monotonic() - t0), flush=True)
    return 1 if stats.findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
