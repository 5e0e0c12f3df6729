"""The whole benchmark of issue 4: build the inputs, run every case, write the table and a plot.

Usage: python benchmarks/suite.py [--runs 3] [--sizes 1G,4G,8G] [--dir .cache/bench] [--quick]

Inputs: the real fixture ($VMCOREPACK_FIXTURES/vmcore-A.elf.zst, default ../shared/fixtures; decompressed
to .cache/vmcore-A.elf) and generator images of each size with a mix of
about 30% zero pages, 60% kernel- and file-like pages and 10% incompressible
content (built once with vmcorepack-mkfixture, kept in --dir).

Cases: every input at -d 1 and -d 31 with -l, -c, -z, -p and --fast-zlib -c
against makedumpfile 1.7.9 built with every codec (benchmarks/build_makedumpfile.sh;
Debian's 1.7.2 has no -z or -p), which runs single-threaded as kdump services
run it; --fast-zlib -c (vmcorepack's own) is compared with makedumpfile -c.
Each case runs twice: on one CPU (both tools under ``taskset -c 0``, vmcorepack
choosing its workers itself, as in a capture kernel booted with nr_cpus=1) and
with vmcorepack on two workers (``--cpus`` picks).

Writes benchmarks/results/results.md (the table, with each tool's fastest and
slowest run and how much of the input had to be read back into the page cache
before the runs; see bench.py), results.csv and throughput.png (memory covered
per second against input size, per codec).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench import CODEC_OPT, HEADER, Result, compare, row

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
#: Where the real fixture lives: the setting and default of tests/conftest.py (FIXTURES).
SHARED_FIXTURE = Path(os.environ.get("VMCOREPACK_FIXTURES") or REPO.parent / "shared" / "fixtures") / "vmcore-A.elf.zst"
CACHE = Path(os.environ.get("VMCOREPACK_CACHE", REPO / ".cache"))

#: Page kinds of the generated images: the rest (30%) is zero pages; 10% of
#: the non-zero pages get random content (the generator's default).
MIX = "kernel=0.08,pgtable=0.01,cache=0.2,cache_private=0.04,swapcache=0.02,anon=0.15,buddy=0.1,thp=0.04,slab=0.06"


def makedumpfile_179() -> str:
    """The makedumpfile 1.7.9 that build_makedumpfile.sh leaves in the cache, else the one on PATH."""
    built = CACHE / "makedumpfile-1.7.9" / "makedumpfile"
    return str(built) if built.exists() else shutil.which("makedumpfile") or "makedumpfile"


def real_fixture() -> Path:
    """Return the decompressed real vmcore, decompressing it on first use."""
    out = CACHE / "vmcore-A.elf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["zstd", "-q", "-d", "-f", str(SHARED_FIXTURE), "-o", str(out)], check=True)
    return out


def image(directory: Path, size: str) -> Path:
    """Return the generator image of ``size``, building it on first use."""
    path = directory / f"mix-{size}.vmcore"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        tool = Path(sys.executable).with_name("vmcorepack-mkfixture")
        part = path.with_suffix(".part")
        subprocess.run([str(tool), "-f", "--size", size, "--seed", "7", "--mix", MIX, str(part)], check=True)
        part.rename(path)
    return path


def plot(results: list[Result], png: Path, cpus: str) -> None:
    """Throughput (input bytes per second) against input size, one line per codec and tool, for one ``cpus``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, level in zip(axes, ("1", "31"), strict=True):
        for codec in CODEC_OPT:
            mine = [r for r in results if r.level == level and r.codec == codec and r.cpus == cpus]
            # Lines over the generator images; the real fixture (about the size
            # of the 1 GiB image) as separate stars.
            rs = sorted((r for r in mine if r.input.startswith("mix-")), key=lambda r: r.ram_bytes)
            real = [r for r in mine if not r.input.startswith("mix-")]
            if not rs:
                continue
            x = [r.ram_bytes / 2**30 for r in rs]
            (line,) = ax.plot(x, [r.ram_bytes / r.ours_s / 2**20 for r in rs], marker="o", label=f"vmcorepack {codec}")
            # fast-zlib's baseline is makedumpfile -c, drawn already as zlib's.
            base = [r for r in rs if r.baseline != "-" and codec != "fast-zlib"]
            if base:
                ax.plot(
                    [r.ram_bytes / 2**30 for r in base],
                    [r.ram_bytes / r.base_s / 2**20 for r in base],
                    marker="x",
                    linestyle="--",
                    color=line.get_color(),
                    label=f"{base[0].baseline} {codec}",
                )
            for r in real:
                ax.plot(
                    [r.ram_bytes / 2**30],
                    [r.ram_bytes / r.ours_s / 2**20],
                    marker="*",
                    markersize=11,
                    color=line.get_color(),
                    linestyle="none",
                )
        ax.set_title(f"-d {level} (stars: the real 6.1 fixture)")
        ax.set_xlabel("input size (GiB)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("MiB of input per second")
    axes[1].legend(fontsize=7)
    who = "both on one CPU" if cpus == "1" else "vmcorepack with 2 workers"
    fig.suptitle(f"vmcorepack against makedumpfile 1.7.9 (single-threaded), {who}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def _plots(results: list[Result]) -> None:
    """throughput.png (two workers) and throughput-1cpu.png (one CPU), for the cases run."""
    for cpus, name in (("2", "throughput.png"), ("1", "throughput-1cpu.png")):
        if any(r.cpus == cpus for r in results):
            plot(results, RESULTS / name, cpus)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="timed runs per tool and case (median)")
    ap.add_argument("--sizes", default="1G,4G,8G", help="generator image sizes")
    ap.add_argument("--dir", type=Path, default=REPO / ".cache" / "bench", help="where the images are kept")
    ap.add_argument("--quick", action="store_true", help="one run, real fixture and the smallest image only")
    ap.add_argument("--makedumpfile", default=makedumpfile_179(), help="1.7.9 with all codecs (default: the cache's)")
    ap.add_argument("--cpus", default="1,2", help="1: both tools on CPU 0; 2: vmcorepack with 2 workers")
    ap.add_argument("--codecs", default="lzo,zlib,fast-zlib,zstd,snappy", help="codecs to run")
    ap.add_argument("--note", default="", help="a line for results.md (how busy the machine was)")
    ap.add_argument("--plot-only", action="store_true", help="redraw throughput.png from results.csv")
    args = ap.parse_args()
    if args.plot_only:
        with open(RESULTS / "results.csv", newline="") as f:
            types = {fld.name: fld.type for fld in dataclasses.fields(Result)}
            conv = {"float": float, "int": int, "str": str}
            rows = [
                Result(**{k: conv[str(types[k])](v) for k, v in rec.items() if k in types}) for rec in csv.DictReader(f)
            ]
        _plots(rows)
        return 0
    runs = 1 if args.quick else args.runs
    sizes = args.sizes.split(",")[:1] if args.quick else args.sizes.split(",")
    inputs = [real_fixture(), *(image(args.dir, s) for s in sizes)]
    ours_tool = str(Path(sys.executable).with_name("vmcorepack"))
    results: list[Result] = []
    print(HEADER, flush=True)
    for path in inputs:
        for level in ("1", "31"):
            for codec in args.codecs.split(","):
                for cpus in args.cpus.split(","):
                    common = ["-d", level, "--message-level", "0"]
                    # makedumpfile has no --fast-zlib: its -c is what --fast-zlib is to beat.
                    base = [args.makedumpfile, *CODEC_OPT["zlib" if codec == "fast-zlib" else codec], *common]
                    ours = [ours_tool, *CODEC_OPT[codec], *common]
                    if cpus == "1":
                        pin = ["taskset", "-c", "0"]
                        base, ours = [*pin, *base], [*pin, *ours]
                    else:
                        ours += ["--workers", "2"]
                    r = dataclasses.replace(compare(str(path), level, codec, runs, ours, base), cpus=cpus)
                    results.append(r)
                    print(row(r), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([fld.name for fld in dataclasses.fields(Result)] + ["ratio"])
        for r in results:
            w.writerow([*dataclasses.astuple(r), f"{r.ratio:.3f}"])
    with open(RESULTS / "results.md", "w") as f:
        f.write(f"`python benchmarks/suite.py --runs {runs} --sizes {','.join(sizes)}`, median of {runs}\n\n")
        f.write(f"baseline: {args.makedumpfile}\n\n")
        if args.note:
            f.write(f"{args.note}\n\n")
        f.write(
            "| input | options | CPUs | baseline | baseline s | vmcorepack s | ratio | peak MiB (base / ours) | size "
            "| baseline range s | vmcorepack range s | input re-read MiB |\n"
        )
        f.write("| --- | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | --- | --- | ---: |\n")
        for r in results:
            rel = r.ours_bytes / r.base_bytes if r.base_bytes else 0.0
            f.write(
                f"| {r.input} | -d {r.level} {r.codec} | {r.cpus} | {r.baseline} | {r.base_s:.2f} | {r.ours_s:.2f} | "
                f"{r.ratio:.2f} | {r.base_kib / 1024:.1f} / {r.ours_kib / 1024:.1f} | {rel:.3f} | "
                f"{r.base_min:.2f}-{r.base_max:.2f} | {r.ours_min:.2f}-{r.ours_max:.2f} | {r.reread_mib} |\n"
            )
    _plots(results)
    print(f"wrote {RESULTS / 'results.md'}, results.csv and the throughput plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
