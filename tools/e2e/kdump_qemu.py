"""End-to-end: vmcorepack inside a real kdump capture kernel under QEMU, verified on the host.

One run: download (once) a Debian linux-image package and build a busybox initramfs; boot it
under QEMU (TCG) with ``crashkernel=`` reserved and the host's root shared read-only over
virtio-9p; in the guest load the same kernel as the capture kernel (``kexec -p``), build a
memory mix (page cache, anonymous memory of a live process, tmpfs, free memory) and panic
through sysrq; in the capture kernel run vmcorepack on /proc/vmcore (and Debian's makedumpfile)
into a writable 9p share, measuring wall time and peak memory, and copy /proc/vmcore as an ELF
file. Then verify on the host and print a report (also written as ``report.json``).

    tools/e2e/run.sh [--kernel 6.1|6.12] [--paging 4|5] [--crashkernel 256M] [--args "-l -d 31"]

``--arch arm64`` boots Debian's arm64 kernel under ``qemu-system-aarch64 -machine virt`` instead
(``--flavour arm64-16k`` for 16 KiB pages). Its guest cannot use the host's x86 root, so it gets a
root directory of Debian arm64 packages (tools/e2e/mkroot.py: busybox-static, kexec-tools, python3,
python3-numpy, makedumpfile) over 9p, and the repository as a second share at the same path;
vmcorepack runs there from a copy of the sources with the guest's python3 and its C extension
cross-built for it (``--no-arm64-native``: Python loops). Debian's 52-bit-VA kernels (6.12
arm64-16k, 7.x arm64) run with LPA2 under the default ``-cpu max``; ``--cpu
max,lpa2=off,pauth-impdef=on`` makes them fall back to 47/48 bits, which makedumpfile's git head
can read (tests/data/arm64/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("VMCOREPACK_E2E_CACHE", REPO / ".cache" / "e2e"))
VENV_BIN = REPO / ".venv" / "bin"
READ_RUN = 256  # pages per read when comparing


class E2EError(Exception):
    """A setup step failed (missing package, no such kernel, QEMU missing)."""


# ---------------------------------------------------------------- kernel packages


def _apt_versions(pkg: str) -> list[str]:
    r = subprocess.run(["apt-cache", "madison", pkg], capture_output=True, text=True, check=False)
    return [line.split("|")[1].strip() for line in r.stdout.splitlines() if line.count("|") >= 2]


def _version_key(v: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", v)]


def resolve_kernel_package(spec: str, meta: str = "linux-image-amd64") -> str:
    """``6.1`` / ``6.12`` / ``7.x`` (newest ``meta`` package of that series) or a package name.

    ``meta`` may carry an architecture (``linux-image-arm64:arm64``); the name returned then does too.
    """
    if spec.startswith("linux-image-"):
        return spec
    spec = spec.removesuffix(".x")
    versions = [v for v in _apt_versions(meta) if v.startswith(spec + ".")]
    if not versions:
        hint = ""
        if ":" in meta:
            hint = " (add bookworm-backports, trixie, trixie-backports or sid for arm64 to the apt sources)"
        elif spec == "6.12":
            hint = (
                " (6.12 is in bookworm-backports: add 'deb http://deb.debian.org/debian bookworm-backports main'"
                " to /etc/apt/sources.list.d/ and run apt-get update)"
            )
        elif spec.startswith("7"):
            hint = f" ({KERNEL7_SOURCES})"
        raise E2EError(f"no {meta} {spec}.x in the apt sources{hint}")
    best = max(versions, key=_version_key)
    r = subprocess.run(["apt-cache", "depends", f"{meta}={best}"], capture_output=True, text=True, check=True)
    deps = re.findall(r"Depends: (linux-image-\S+)", r.stdout)
    if not deps:
        raise E2EError(f"{meta}={best} names no kernel package")
    return str(deps[0])


def _kernel_parts(pkg: str) -> list[str]:
    """``pkg`` and, from 7.x on, the linux-binary-K, linux-modules-K and linux-base-K (modules.builtin) it needs."""
    r = subprocess.run(["apt-cache", "show", "--no-all-versions", pkg], capture_output=True, text=True, check=True)
    arch = pkg.partition(":")[2]
    parts = re.findall(r"\b(linux-(?:binary|modules|base)-[^\s,(]+)", r.stdout.partition("\nDescription")[0])
    return [pkg, *(f"{p}:{arch}" if arch else p for p in dict.fromkeys(parts))]


def fetch_kernel(pkg: str) -> tuple[str, Path, Path]:
    """Download and unpack ``pkg`` (cached); return (release, vmlinuz, modules dir)."""
    root = CACHE / "kernels" / pkg.replace(":", "_")
    if not (root / ".done").exists():
        debs = CACHE / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for part in _kernel_parts(pkg):
            name = part.partition(":")[0]
            if not list(debs.glob(f"{name}_*.deb")):
                print(f"e2e: apt-get download {part}", file=sys.stderr)
                subprocess.run(["apt-get", "download", "-q", part], cwd=debs, check=True, stdout=subprocess.DEVNULL)
            deb = max(debs.glob(f"{name}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        (root / ".done").touch()
    # Up to 6.x: /boot/vmlinuz-K and /lib/modules/K; 7.x: /usr/lib/modules/K/vmlinuz.
    boot = [p for p in (root / "boot").glob("vmlinuz-*") if not p.is_symlink()]
    if boot:
        vmlinuz = boot[0]
        release = vmlinuz.name.removeprefix("vmlinuz-")
    else:
        vmlinuz = next((root / "usr/lib/modules").glob("*/vmlinuz"))
        release = vmlinuz.parent.name
    moddir = next(d for d in (root / "usr/lib/modules" / release, root / "lib/modules" / release) if d.is_dir())
    return release, vmlinuz, moddir


def build_initramfs(release: str, moddir: Path, busybox: Path = Path("/bin/busybox")) -> Path:
    """Build (or reuse) the initramfs of ``release``; rebuilt when init or the builder change."""
    out = CACHE / "initramfs" / f"{release}.cpio.gz"
    inputs = [HERE / "init", HERE / "mkinitramfs.py", busybox]
    if out.exists() and all(p.stat().st_mtime < out.stat().st_mtime for p in inputs):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(HERE / "mkinitramfs.py"), "--busybox", str(busybox), str(moddir), str(out)]
    subprocess.run(cmd, check=True)
    return out


#: Where the capture stage finds the RAM copy (tools/e2e/init binds the initramfs' /ramroot there).
RAM_ROOT = "/tmp/ramroot"


def build_ram_initramfs(release: str, moddir: Path, args: str) -> Path:
    """The initramfs of ``release`` plus a RAM root with vmcorepack, as a kdump initramfs carries it.

    python3, the shared objects it maps, the modules that ``vmcorepack ARGS``, ``vmcorepack
    -v`` and tools/e2e/capture_phases.py import (traced on a generated vmcore, byte-compiled,
    no sources) and Debian's makedumpfile with its libraries go under ``/ramroot`` at their
    host paths (tools/e2e/pyfiles.py); the capture stage runs them chrooted there. Rebuilt
    when vmcorepack's sources, the tools or ``args`` change.
    """
    sys.path.insert(0, str(HERE))
    import mkinitramfs
    import pyfiles

    out = CACHE / "initramfs" / f"{release}-ram.cpio.gz"
    stamp = out.with_suffix(".args")
    src = REPO / "src" / "vmcorepack"
    inputs = [HERE / n for n in ("init", "mkinitramfs.py", "pyfiles.py", "capture_phases.py")]
    inputs += [p for p in src.rglob("*") if p.suffix in (".py", ".so")]
    if (out.exists() and stamp.exists() and stamp.read_text() == args
            and all(p.stat().st_mtime < out.stat().st_mtime for p in inputs)):  # fmt: skip
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fixture = CACHE / "trace" / "trace.elf"
    if not fixture.exists():
        fixture.parent.mkdir(parents=True, exist_ok=True)
        mk = [str(VENV_BIN / "vmcorepack-mkfixture"), "--size", "128M", "--seed", "1", str(fixture)]
        subprocess.run(mk, check=True, stdout=subprocess.DEVNULL)
    py = str(VENV_BIN / "python3")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "VMCOREPACK_MIN_MEMORY_MB": "0"}
    dump = fixture.with_name("trace.kdump")
    runs = [
        [str(VENV_BIN / "vmcorepack"), "-f", *shlex.split(args), str(fixture), str(dump)],
        [str(VENV_BIN / "vmcorepack"), "-v"],
        [str(HERE / "capture_phases.py"), str(fixture), str(fixture.with_name("phases.json"))],
    ]
    traces = [pyfiles.trace(py, argv, env) for argv in runs]
    mdf = shutil.which("makedumpfile")
    extra = [str(VENV_BIN / "vmcorepack"), py, str(HERE / "capture_phases.py"), "/lib64/ld-linux-x86-64.so.2"]
    extra += pyfiles.ldd_files(mdf) if mdf else []
    entries = pyfiles.plan(traces, tuple(extra))
    added = {"bytes": 0}

    def add(c: Any) -> None:
        c.dir("ramroot")
        for d in ("proc", "dev", "mnt", "tmp"):
            c.dir(f"ramroot/{d}")
        added["bytes"] = pyfiles.add_to_cpio(c, "ramroot", entries)

    mkinitramfs.build(moddir, HERE / "init", Path("/bin/busybox"), out, extra=add)
    stamp.write_text(args)
    (out.with_suffix(".files")).write_text("".join(f"{k} {p}\n" for p, k in entries))
    print(f"e2e: {out}: RAM root of {len(entries)} entries, {added['bytes'] >> 20} MiB", file=sys.stderr)
    return out


#: The arm64 guest's root (tools/e2e/mkroot.py): what guest.sh runs, from Debian's arm64 packages.
#: vmcorepack's optional codec modules come too, so that its pure-Python path has every codec.
ARM64_ROOT_PACKAGES = (
    "busybox-static", "kexec-tools", "python3", "python3-numpy", "makedumpfile",
    "python3-zstandard", "python3-lz4", "python3-snappy", "python3-lzo", "python3-tqdm",
)  # fmt: skip


def build_arm64_root(release: str) -> Path:
    """Build (or reuse) the arm64 guest root; rebuilt when the package list or the builder change."""
    root = CACHE / f"root-arm64-{release}"
    stamp = root / "packages.txt"
    want = " ".join(ARM64_ROOT_PACKAGES)
    tag = root / ".roots"
    if not (stamp.exists() and tag.exists() and tag.read_text() == want
            and (HERE / "mkroot.py").stat().st_mtime < stamp.stat().st_mtime):  # fmt: skip
        cmd = [sys.executable, str(HERE / "mkroot.py"), "--arch", "arm64", "--release", release, str(root)]
        subprocess.run([*cmd, *ARM64_ROOT_PACKAGES], check=True)
        tag.write_text(want)
    return root


def build_arm64_sources(root: Path, release: str) -> Path:
    """A copy of vmcorepack's sources with its C extension cross-built for the root's python3.

    The guest imports vmcorepack from there (the repository's own build is x86). Needs
    gcc-aarch64-linux-gnu and zlib1g-dev:arm64; the Python headers come from the root's suite
    (``libpython3.X-dev:arm64``, downloaded, not installed).
    """
    pyver = os.readlink(root / "usr/bin/python3")  # python3.13
    out = CACHE / "arm64-src"
    pkg = out / "vmcorepack"
    so = pkg / f"_native.cpython-{pyver.removeprefix('python').replace('.', '')}-aarch64-linux-gnu.so"
    src = REPO / "src" / "vmcorepack"
    newest = max(p.stat().st_mtime for p in src.rglob("*") if p.suffix in (".py", ".c", ".h"))
    if so.exists() and so.stat().st_mtime > newest:
        return out
    headers = CACHE / f"lib{pyver}-dev-arm64"
    if not (headers / "usr" / "include" / pyver / "Python.h").exists():
        debs = CACHE / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        empty = CACHE / "apt-no-preferences"
        empty.mkdir(parents=True, exist_ok=True)
        opts = ["-o", f"Dir::Etc::PreferencesParts={empty}", "-o", f"APT::Default-Release={release}"]
        subprocess.run(["apt-get", *opts, "download", "-q", f"lib{pyver}-dev:arm64"], cwd=debs, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        deb = max(debs.glob(f"lib{pyver}-dev_*_arm64.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(headers)], check=True)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    inc = headers / "usr" / "include"
    subprocess.run(
        ["aarch64-linux-gnu-gcc", "-shared", "-fPIC", "-O2", f"-I{inc}", f"-I{inc / pyver}",
         "-o", str(so), str(src / "_native.c"), "-lz"],
        check=True,
    )  # fmt: skip
    return out


# ---------------------------------------------------------------- 7.x: makedumpfile's git head as the reference

#: Where Debian's 7.x amd64 kernels come from (README.md, "End-to-end").
KERNEL7_SOURCES = (
    "7.x is in trixie-backports: add 'Types: deb, URIs: http://deb.debian.org/debian, Suites: trixie-backports,"
    " Components: main, Architectures: amd64' to /etc/apt/sources.list.d/, pin it to 1 in /etc/apt/preferences.d/"
    " (Pin: release n=trixie-backports) so nothing installs from it, and run apt-get update"
)
#: First kernel series only makedumpfile's git head reads: 7.1 renamed page.compound_head to
#: compound_info, which makedumpfile looks up since f50c015 (after 1.7.9); Debian's 1.7.2 and the
#: 1.7.9 release keep compound tail pages as data there.
HEAD_ONLY_FROM = (7, 1)


def reference_makedumpfile(release: str, given: Path | None) -> Path | None:
    """The makedumpfile the capture kernel runs as the reference, or None for Debian's (``makedumpfile``).

    ``given`` (``--makedumpfile``) wins; for kernels from 7.1 on, $VMCOREPACK_MAKEDUMPFILE_HEAD,
    a build of makedumpfile's git head (f50c015 or later), is required. The guest runs it from
    the host's root over 9p, like the venv. With a reference the dumps must be byte-identical.
    """
    head_only = tuple(_version_key(release)[:2]) >= HEAD_ONLY_FROM
    env = os.environ.get("VMCOREPACK_MAKEDUMPFILE_HEAD")
    path = given or (Path(env) if env and head_only else None)
    if path is None and head_only:
        raise E2EError(
            f"{release} needs makedumpfile's git head as the reference (1.7.9 predates page.compound_info):"
            " set VMCOREPACK_MAKEDUMPFILE_HEAD or pass --makedumpfile PATH"
        )
    if path is not None and not os.access(path, os.X_OK):
        raise E2EError(f"{path}: no executable makedumpfile there")
    return path.resolve() if path is not None else None


# ---------------------------------------------------------------- QEMU


def run_qemu(cmd: list[str], log_path: Path, timeout: float) -> dict[str, Any]:
    """Run QEMU, timestamp every serial line (seconds since start), kill it at ``timeout``."""
    t0 = time.monotonic()
    events: dict[str, float] = {}
    marks = {
        "first_kernel_up": "e2e-init: first stage",
        "crash": "e2e-first: crashing through sysrq",
        "panic": "Kernel panic",
        "capture_kernel_boot": "Linux version",
        "capture_up": "e2e-init: capture stage",
        "vmcorepack_done": "e2e-capture: vmcorepack: exit",
        "makedumpfile_done": "e2e-capture: makedumpfile: exit",
        "elfcopy_done": "e2e-capture: elfcopy: exit",
        "capture_done": "e2e-init: capture stage done",
        "first_failed": "e2e-init: FAILED",
    }
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    linux_version_seen = 0
    assert proc.stdout is not None
    with open(log_path, "w", errors="replace", buffering=1) as log:
        for raw in proc.stdout:
            t = time.monotonic() - t0
            line = raw.decode(errors="replace").rstrip("\r\n")
            log.write(f"[{t:8.2f}] {line}\n")
            for key, text in marks.items():
                if text in line:
                    if key == "capture_kernel_boot":
                        linux_version_seen += 1
                        if linux_version_seen == 1:
                            events.setdefault("first_kernel_boot", t)
                            continue
                    events.setdefault(key, t)
    rc = proc.wait()
    timer.cancel()
    wall = time.monotonic() - t0
    return {"rc": rc, "wall_s": round(wall, 2), "timed_out": wall >= timeout - 1, "events": events}


# ---------------------------------------------------------------- verification


def _read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            k, sep, v = line.partition("=")
            if sep:
                out[k] = v.strip('"')
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def why_no_capture(out: Path) -> str:
    """Where the loop stopped: the serial log's last ``e2e-init:`` line, and guest.sh's last line after it."""
    last_init = last_guest = ""
    log = out / "serial.log"
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        # Each line is "[seconds] text" (run_qemu); the marker may follow kernel output on the same line.
        at = line.find("e2e-")
        if at < 0:
            continue
        if line.startswith("e2e-init:", at):
            last_init, last_guest = line[at:], ""
        elif line.startswith(("e2e-first:", "e2e-capture:"), at):
            last_guest = line[at:]
    if not last_init:
        return f"no e2e-init line in {log}: the first kernel never reached the initramfs /init"
    return f"serial log's last e2e-init line: {last_init!r}" + (f", then {last_guest!r}" if last_guest else "")


def _check(name: str, ok: bool, detail: str, required: bool = True, **extra: Any) -> dict[str, Any]:
    mark = "PASS" if ok else "FAIL" if required else "DIFF"
    print(f"  [{mark}] {name}: {detail}", file=sys.stderr)
    return {"name": name, "ok": ok, "required": required, "detail": detail, **extra}


#: Newest kernel series whose page flags Debian bookworm's makedumpfile (1.7.2) knows.
MAKEDUMPFILE_KNOWS = (6, 1)


def _runs(pfns: Any) -> list[tuple[int, int]]:
    import numpy as np

    if len(pfns) == 0:
        return []
    breaks = np.flatnonzero(np.diff(pfns) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(pfns)]))
    return [(int(pfns[s]), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def _compare_pages(read: Any, dump: Path, elf: Path) -> tuple[int, list[str]]:
    """Read every kept page of ``dump`` through ``read(pfn, n)`` and compare with the ELF copy."""
    from vmcorepack.reader import KdumpReader
    from vmcorepack.sources import open_elf

    bad: list[str] = []
    checked = 0
    with KdumpReader(str(dump)) as r, open_elf(str(elf)) as src:
        for start, count in _runs(r.dumpable_pfns()):
            for a in range(start, start + count, READ_RUN):
                n = min(READ_RUN, start + count - a)
                want = src.read_pages_bytes(a, n)
                got = bytes(read(a, n))
                if got != want:
                    for i in range(n):
                        if got[i * 4096 : (i + 1) * 4096] != want[i * 4096 : (i + 1) * 4096] and len(bad) < 10:
                            bad.append(f"pfn {a + i:#x}")
                checked += n
    return checked, bad


def _bitmaps(path: Path) -> tuple[Any, Any, int]:
    from vmcorepack.reader import KdumpReader

    with KdumpReader(str(path)) as r:
        return r.bitmap1.copy(), r.bitmap2.copy(), int(r.header.max_mapnr)


def _bitmap_diff(ours: Path, other: Path) -> dict[str, Any]:
    import numpy as np

    a1, a2, an = _bitmaps(ours)
    b1, b2, bn = _bitmaps(other)
    out: dict[str, Any] = {"max_mapnr": [an, bn]}
    for name, a, b in (("bitmap1", a1, b1), ("bitmap2", a2, b2)):
        n = min(len(a), len(b))
        ua = np.unpackbits(a[:n], bitorder="little")
        ub = np.unpackbits(b[:n], bitorder="little")
        only_a = np.flatnonzero(ua & ~ub)
        only_b = np.flatnonzero(ub & ~ua)
        out[name] = {
            "equal": len(a) == len(b) and bool((a == b).all()),
            "set": [int(ua.sum()), int(ub.sum())],
            "only_first": len(only_a),
            "only_second": len(only_b),
            "sample_only_first": [hex(int(x)) for x in only_a[:8]],
            "sample_only_second": [hex(int(x)) for x in only_b[:8]],
        }
    return out


def _only_partial_pages(d: dict[str, Any], elf: Path, ours: Path, theirs: Path) -> bool:
    """Whether the 2nd bitmaps differ only by pages a PT_LOAD covers in part, kept by us alone."""
    import numpy as np

    from vmcorepack.sources import open_elf

    if not d["bitmap1"]["equal"] or d["bitmap2"]["only_second"]:
        return False
    _, o2, _ = _bitmaps(ours)
    _, m2, _ = _bitmaps(theirs)
    ua, ub = np.unpackbits(o2, bitorder="little"), np.unpackbits(m2, bitorder="little")
    n = min(len(ua), len(ub))
    extra = set(np.flatnonzero(ua[:n] & ~ub[:n]).tolist())
    with open_elf(str(elf)) as src:
        return bool(extra) and extra <= set(src.partial_pages())


def classify_pfns(elf: Path, pfns: Any, window: int = 1 << 16) -> dict[str, int]:
    """Count ``pfns`` by the dump-level bit for which vmcorepack's filter drops them."""
    import numpy as np

    from vmcorepack.filter import PageFilter
    from vmcorepack.sources import open_elf

    pfns = np.asarray(pfns, np.int64)
    counts: dict[str, int] = {}
    if len(pfns) == 0:
        return counts
    left = np.ones(len(pfns), bool)
    with open_elf(str(elf)) as src:
        for bit, kind in ((16, "free"), (1, "zero"), (2, "cache"), (4, "cache_private"), (8, "user")):
            flt = PageFilter(src, bit)
            dropped = np.zeros(len(pfns), bool)
            for s in range(0, int(pfns.max()) + 1, window):
                sel = (pfns >= s) & (pfns < s + window)
                if sel.any():
                    keep = flt.second_bitmap(s, s + window)
                    dropped[sel] = ~keep[pfns[sel] - s]
            hit = dropped & left
            if hit.any():
                counts[kind] = int(hit.sum())
            left &= ~dropped
    if left.any():
        counts["kept by every bit"] = int(left.sum())
    return counts


def verify(
    out: Path, release: str, args: list[str], has_mdf: bool, crash: bool = True, reference: bool = False
) -> list[dict[str, Any]]:
    """Check the capture run's dump against its ELF copy with every reader; one dict per check.

    ``crash=False`` skips crash, which Debian builds for the host's architecture only.
    ``reference``: the capture kernel ran a reference makedumpfile (``reference_makedumpfile``),
    not Debian's, so its bitmaps must be equal and its file byte-identical.
    """
    dump, elf = out / "dump.kdump", out / "vmcore.elf"
    checks: list[dict[str, Any]] = []
    if not dump.exists() or not elf.exists():
        what = ", ".join(p.name for p in (dump, elf) if not p.exists())
        return [_check("outputs", False, f"missing {what}")]
    # 1. vmcorepack --verify
    r = subprocess.run(
        [str(VENV_BIN / "vmcorepack"), "--verify", str(dump), str(elf)], capture_output=True, text=True, check=False
    )
    lines = (r.stdout + r.stderr).strip().splitlines()
    summary = [ln for ln in lines if ln.startswith(("error:", "verify "))] or lines[-1:] or [""]
    checks.append(_check("vmcorepack --verify", r.returncode == 0, "; ".join(summary)))
    # 2. libkdumpfile reads every kept page equal to the ELF copy
    try:
        import kdumpfile

        k = kdumpfile.kdumpfile(str(dump))
        n, bad = _compare_pages(lambda a, c: k.read(kdumpfile.KDUMP_MACHPHYSADDR, a * 4096, c * 4096), dump, elf)
        detail = f"{n} pages equal" if not bad else f"differ: {bad}"
        checks.append(_check("libkdumpfile pages", not bad, detail, pages=n))
    except Exception as e:
        checks.append(_check("libkdumpfile pages", False, f"{type(e).__name__}: {e}"))
    # 3. drgn opens it and reads every kept page too
    try:
        import drgn

        prog = drgn.Program()
        prog.set_core_dump(str(dump))
        n, bad = _compare_pages(lambda a, c: prog.read(a * 4096, c * 4096, True), dump, elf)
        checks.append(_check("drgn pages", not bad, f"{n} pages equal" if not bad else f"differ: {bad}", pages=n))
    except Exception as e:
        checks.append(_check("drgn pages", False, f"{type(e).__name__}: {e}"))
    # 4. crash accepts it
    crash_bin = shutil.which("crash") if crash else None
    if not crash:
        pass
    elif crash_bin:
        r = subprocess.run(
            [crash_bin, "-d", "1", "--osrelease", str(dump)], capture_output=True, text=True, timeout=300, check=False
        )
        last = (r.stdout.strip().splitlines() or [""])[-1]
        checks.append(_check("crash --osrelease", r.returncode == 0 and last == release, f"rc {r.returncode}: {last}"))
    else:
        checks.append(_check("crash --osrelease", False, "crash is not installed"))
    # 5. the capture kernel's bitmaps equal vmcorepack's on the host from the ELF copy
    host = out / "host.kdump"
    host.unlink(missing_ok=True)
    t0 = time.monotonic()
    r = subprocess.run(
        [str(VENV_BIN / "vmcorepack"), *args, str(elf), str(host)], capture_output=True, text=True, check=False
    )
    host_wall = time.monotonic() - t0
    if r.returncode != 0:
        checks.append(_check("host vmcorepack bitmaps", False, f"host run failed: {r.stderr.strip()}"))
    else:
        d = _bitmap_diff(dump, host)
        ok = d["bitmap1"]["equal"] and d["bitmap2"]["equal"]
        checks.append(
            _check(
                "bitmaps capture == host",
                ok,
                f"bitmap2 {d['bitmap2']['set'][0]} kept pages, equal={ok}; host run {host_wall:.1f} s",
                diff=d,
                host_wall_s=round(host_wall, 2),
                host_size=host.stat().st_size,
            )
        )
    # 6. makedumpfile's bitmaps from the same capture run
    mdf = out / "makedumpfile.kdump"
    if has_mdf:
        if not mdf.exists():
            checks.append(_check("bitmaps vmcorepack == makedumpfile", False, "makedumpfile wrote no dump"))
        else:
            d = _bitmap_diff(dump, mdf)
            ok = d["bitmap1"]["equal"] and d["bitmap2"]["equal"]
            b2 = d["bitmap2"]
            detail = (
                f"equal ({b2['set'][0]} kept pages)"
                if ok
                else f"bitmap2 ours {b2['set'][0]} vs makedumpfile {b2['set'][1]}: {b2['only_first']} only ours,"
                f" {b2['only_second']} only makedumpfile; bitmap1 equal={d['bitmap1']['equal']}"
            )
            if not ok:
                _, m2, _ = _bitmaps(mdf)
                _, o2, _ = _bitmaps(dump)
                import numpy as np

                ua, ub = np.unpackbits(o2, bitorder="little"), np.unpackbits(m2, bitorder="little")
                n = min(len(ua), len(ub))
                d["only_makedumpfile_kinds"] = classify_pfns(elf, np.flatnonzero(ub[:n] & ~ua[:n]))
                d["only_vmcorepack_kinds"] = classify_pfns(elf, np.flatnonzero(ua[:n] & ~ub[:n]))
                detail += (
                    f"; kept only by makedumpfile, by the level bit vmcorepack drops them for:"
                    f" {d['only_makedumpfile_kinds']}; kept only by vmcorepack: {d['only_vmcorepack_kinds']}"
                )
            known = reference or tuple(_version_key(release)[:2]) <= MAKEDUMPFILE_KNOWS
            if not known:
                detail += f" (expected: makedumpfile 1.7.2 predates {release})"
            elif not ok and _only_partial_pages(d, elf, dump, mdf):
                # makedumpfile before 1.7.6 (f2c5f76) drops a PT_LOAD's partial last page that its
                # bitmap-file variant counts in the 1st bitmap; 1.7.9, the reference, keeps it.
                ok = True
                detail += " (only the partial last page of a PT_LOAD, which makedumpfile < 1.7.6 drops)"
            checks.append(_check("bitmaps vmcorepack == makedumpfile", ok, detail, required=known, diff=d))
            same = subprocess.run(["cmp", "-s", str(dump), str(mdf)], check=False).returncode == 0
            info = "byte-identical" if same else f"differ ({dump.stat().st_size} vs {mdf.stat().st_size} bytes)"
            if reference:
                checks.append(_check("files vmcorepack == reference makedumpfile", same, info))
            else:
                print(f"  [INFO] dump files vs makedumpfile's: {info}", file=sys.stderr)
                checks.append({"name": "files vs makedumpfile", "ok": same, "required": False, "detail": info})
    return checks


# ---------------------------------------------------------------- main


def capture_commands(vmcorepack_cmd: str, makedumpfile: str, ram: bool, phases: bool, arm: bool) -> dict[str, str]:
    """guest.sh's command variables: vmcorepack, makedumpfile and python3, chrooted into the RAM root if ``ram``."""
    pre = f"chroot {RAM_ROOT} " if ram else ""
    py = "/usr/bin/python3" if arm else str(VENV_BIN / "python3")
    return {
        "E2E_VMCOREPACK": pre + vmcorepack_cmd,
        "E2E_MAKEDUMPFILE_CMD": pre + makedumpfile,
        "E2E_PYTHON": pre + py,
        "E2E_PHASES": "1" if phases and not arm else "0",
        "E2E_RAM_ROOT": RAM_ROOT if ram else "",
    }


def parse_size(s: str) -> int:
    """``256M`` -> bytes."""
    m = re.fullmatch(r"(\d+)([KMG]?)", s.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {s!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def main(argv: list[str] | None = None) -> int:
    """Run one capture loop and its verification; 0 when every check passed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64", help="guest architecture")
    p.add_argument("--flavour", default="arm64", help="arm64 kernel flavour: arm64 (4 KiB pages) or arm64-16k")
    p.add_argument("--kernel", default="6.1", help="6.1, 6.12, 7.x (newest 7), 7.3 or a linux-image-* package")
    p.add_argument("--paging", type=int, choices=(4, 5), default=4, help="page-table levels (default 4)")
    p.add_argument("--crashkernel", default="256M", help="crashkernel= reservation (default 256M)")
    p.add_argument("--args", default="-l -d 31", help='vmcorepack options in the capture kernel ("-l -d 31")')
    p.add_argument("--makedumpfile-args", default="-l -d 31", help="Debian makedumpfile's options")
    p.add_argument("--no-makedumpfile", action="store_true", help="skip Debian's makedumpfile in the capture run")
    p.add_argument(
        "--makedumpfile",
        type=Path,
        metavar="PATH",
        help="x86: run this makedumpfile (a host build) in the capture kernel instead of Debian's and require a"
        " byte-identical dump; kernels from 7.1 on default to $VMCOREPACK_MAKEDUMPFILE_HEAD (git head)",
    )
    p.add_argument("--kexec-args", help="extra kexec -p options (e.g. -d: its log is kexec.log)")
    p.add_argument("--root-release", default="trixie", help="Debian suite of the arm64 guest root (default trixie)")
    p.add_argument(
        "--no-arm64-native",
        dest="arm64_native",
        action="store_false",
        help="arm64: run vmcorepack's Python loops (VMCOREPACK_NATIVE=0), no cross-built C extension",
    )
    p.add_argument("--append", default="", help="extra kernel options of the first kernel")
    p.add_argument("--mem", help="first kernel's RAM (QEMU -m, default 1G, arm64 512M)")
    p.add_argument("--cpu", help="QEMU -cpu (default max,la57=off / max; arm64 max,pauth-impdef=on)")
    p.add_argument("--smp", type=int, default=1, help="first kernel's CPUs (capture kernel: nr_cpus=1)")
    p.add_argument("--pagecache-mb", type=int, help="default 192, arm64 64")
    p.add_argument("--anon-mb", type=int, help="default 160, arm64 64")
    p.add_argument("--tmpfs-mb", type=int, help="default 96, arm64 32")
    p.add_argument("--timeout", type=float, default=1800, help="QEMU wall-clock limit, seconds")
    p.add_argument("--step-timeout", type=int, default=900, help="limit per capture-kernel command, seconds")
    p.add_argument("--out", type=Path, help="run directory (default .cache/e2e/runs/KERNEL-pPAGING-CK)")
    p.add_argument("--keep-fixture", type=Path, metavar="DIR", help="keep the ELF vmcore as DIR/*.elf.zst")
    p.add_argument(
        "--load-from",
        choices=("9p", "ram"),
        default="9p",
        help="x86_64: run vmcorepack (and makedumpfile) from the host root over 9p, or from a RAM copy"
        " in the initramfs as a kdump initramfs carries them (build_ram_initramfs)",
    )
    p.add_argument("--phases", action="store_true", help="also run tools/e2e/capture_phases.py in the capture kernel")
    p.add_argument("--no-verify", action="store_true", help="capture only")
    p.add_argument("--reverify", action="store_true", help="no QEMU: verify the outputs of the last run again")
    a = p.parse_args(argv)
    arm = a.arch == "arm64"
    if a.kexec_args is None:
        # kexec_load, as kdump-tools does: Debian's 6.1 arm64 kernel has no CONFIG_KEXEC_FILE.
        a.kexec_args = ""
    small = {"mem": "512M", "pagecache_mb": 64, "anon_mb": 64, "tmpfs_mb": 32}
    big = {"mem": "1G", "pagecache_mb": 192, "anon_mb": 160, "tmpfs_mb": 96}
    for k, v in (small if arm else big).items():
        if getattr(a, k) is None:
            setattr(a, k, v)

    qemu = "qemu-system-aarch64" if arm else "qemu-system-x86_64"
    for tool in (qemu, "apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise E2EError(f"{tool} is missing (apt-get install qemu-system-x86 qemu-system-arm busybox-static)")
    if not arm:
        for f in ("/bin/busybox", "/sbin/kexec"):
            if not Path(f).exists():
                raise E2EError(f"{f} is missing (apt-get install busybox-static kexec-tools)")
    if not (VENV_BIN / "vmcorepack").exists():
        raise E2EError(f"{VENV_BIN / 'vmcorepack'} is missing (make venv)")

    pkg = resolve_kernel_package(a.kernel, f"linux-image-{a.flavour}:arm64" if arm else "linux-image-amd64")
    release, vmlinuz, moddir = fetch_kernel(pkg)
    reference = None if arm else reference_makedumpfile(release, a.makedumpfile)
    guest_root = build_arm64_root(a.root_release) if arm else Path("/")
    ram = a.load_from == "ram" and not arm
    if ram and reference is not None:
        # The RAM root holds Debian's makedumpfile and its libraries (pyfiles.py), not a reference build.
        raise E2EError("--load-from ram runs Debian's makedumpfile: it cannot take a reference makedumpfile")
    if ram:
        initrd = build_ram_initramfs(release, moddir, a.args)
    else:
        initrd = build_initramfs(release, moddir, guest_root / "usr/bin/busybox" if arm else Path("/bin/busybox"))
    tag = f"{release}-ck{a.crashkernel}" if arm else f"{release}-p{a.paging}-ck{a.crashkernel}"
    out: Path = (a.out or CACHE / "runs" / tag).resolve()
    if not a.reverify:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        os.chmod(out, 0o777)

    paging = [] if a.paging == 5 or arm else ["no5lvl"]
    console = "console=ttyAMA0" if arm else "console=ttyS0"
    capture_append = " ".join(
        [console, "reset_devices", "nr_cpus=1", "irqpoll", "nousb", "panic=5", "e2e=capture", *paging]
    )
    if arm:
        has_mdf = not a.no_makedumpfile and (guest_root / "usr/bin/makedumpfile").exists()
        # The repository's venv is x86: run vmcorepack from its sources with the guest's python3,
        # with the C extension cross-built for it, or without (VMCOREPACK_NATIVE=0, Python loops).
        if a.arm64_native and shutil.which("aarch64-linux-gnu-gcc"):
            srcdir = build_arm64_sources(guest_root, a.root_release)
            vmcorepack_cmd = f"env PYTHONPATH={srcdir} /usr/bin/python3 -m vmcorepack"
        else:
            vmcorepack_cmd = f"env PYTHONPATH={REPO / 'src'} VMCOREPACK_NATIVE=0 /usr/bin/python3 -m vmcorepack"
        (guest_root / str(REPO).lstrip("/")).mkdir(parents=True, exist_ok=True)  # the repo share's mount point
    else:
        has_mdf = not a.no_makedumpfile and (reference is not None or shutil.which("makedumpfile") is not None)
        vmcorepack_cmd = str(VENV_BIN / "vmcorepack")
    config = {
        **capture_commands(vmcorepack_cmd, str(reference or "makedumpfile"), ram, a.phases, arm),
        "E2E_REPO": str(REPO),
        "E2E_KERNEL": str(vmlinuz),
        "E2E_INITRD": str(initrd),
        "E2E_CAPTURE_APPEND": capture_append,
        "E2E_KEXEC_ARGS": a.kexec_args,
        "E2E_ARGS": a.args,
        "E2E_REPO_SHARE": "1" if arm else "0",
        "E2E_MAKEDUMPFILE": "1" if has_mdf else "0",
        "E2E_MAKEDUMPFILE_ARGS": a.makedumpfile_args,
        "E2E_ELF_COPY": "1",
        "E2E_PAGECACHE_MB": str(a.pagecache_mb),
        "E2E_ANON_MB": str(a.anon_mb),
        "E2E_TMPFS_MB": str(a.tmpfs_mb),
        "E2E_STEP_TIMEOUT": str(a.step_timeout),
    }
    if not a.reverify:
        (out / "config.sh").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in config.items()))
    first_append = " ".join([console, f"crashkernel={a.crashkernel}", "panic=5", "e2e=first", *paging, a.append])
    # arm64: pauth-impdef=on, because TCG's architected QARMA5 pointer authentication is slow and
    # Debian's arm64 kernels sign every return address in the kernel.
    cpu = a.cpu or ("max,pauth-impdef=on" if arm else "max" if a.paging == 5 else "max,la57=off")
    cmd = [
        qemu,
        *(["-machine", "virt"] if arm else []),
        "-accel", "tcg",
        "-cpu", cpu,
        "-smp", str(a.smp),
        "-m", a.mem,
        "-nographic", "-monitor", "none",
        "-no-reboot",
        "-kernel", str(vmlinuz),
        "-initrd", str(initrd),
        "-append", first_append,
        "-virtfs", f"local,path={guest_root},mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={out},mount_tag=e2eout,security_model=none,multidevs=remap",
    ]  # fmt: skip
    if arm:
        cmd += ["-virtfs", f"local,path={REPO},mount_tag=e2erepo,security_model=none,readonly=on,multidevs=remap"]
    (out / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
    print(f"e2e: {release}, {a.paging}-level paging, crashkernel={a.crashkernel}, vmcorepack {a.args}", file=sys.stderr)
    print(f"e2e: booting QEMU (log {out / 'serial.log'}, limit {a.timeout:.0f} s)", file=sys.stderr)
    q: dict[str, Any]
    if a.reverify:
        no_run: dict[str, Any] = {"rc": None, "wall_s": 0, "timed_out": False, "events": {}}
        q = (_read_json(out / "report.json") or {}).get("qemu") or no_run
    else:
        q = run_qemu(cmd, out / "serial.log", a.timeout)
    first, cap = _read_env(out / "first.env"), _read_env(out / "capture.env")
    ev = q["events"]
    report: dict[str, Any] = {
        "kernel": release,
        "arch": a.arch,
        "cpu": cpu,
        "package": pkg,
        "paging": a.paging,
        "crashkernel": a.crashkernel,
        "args": a.args,
        "mem": a.mem,
        "host_loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "qemu": q,
        "first": first,
        "capture": cap,
        "timings": {
            "first_boot_to_init_s": ev.get("first_kernel_up"),
            "crash_at_s": ev.get("crash"),
            "capture_boot_s": (
                round(ev["capture_up"] - ev["crash"], 2) if "capture_up" in ev and "crash" in ev else None
            ),
            "capture_total_s": (
                round(ev["capture_done"] - ev["crash"], 2) if "capture_done" in ev and "crash" in ev else None
            ),
        },
        "vmcorepack": _read_json(out / "vmcorepack.json"),
        "vmcorepack_version": (
            (out / "vmcorepack-version.txt").read_text(errors="replace").splitlines()
            if (out / "vmcorepack-version.txt").exists()
            else None
        ),
        "makedumpfile": _read_json(out / "makedumpfile.json"),
        "load_from": a.load_from,
        "phases": _read_json(out / "phases.out.json"),
        "makedumpfile_reference": str(reference) if reference else None,
        "elfcopy": _read_json(out / "elfcopy.json"),
        "sizes": {p.name: p.stat().st_size for p in sorted(out.glob("*.kdump")) if p.is_file()},
    }
    if (out / "vmcore.elf").exists():
        report["sizes"]["vmcore.elf"] = (out / "vmcore.elf").stat().st_size
    print(f"e2e: QEMU exit {q['rc']} after {q['wall_s']} s{' (TIMED OUT)' if q['timed_out'] else ''}", file=sys.stderr)
    vp = report["vmcorepack"]
    if vp:
        print(
            f"e2e: vmcorepack in the capture kernel: rc {vp['rc']}, {vp['wall_s']} s,"
            f" maxrss {vp['maxrss_kib']} KiB, tree peak {vp['tree_rss_peak_kib']} KiB,"
            f" MemAvailable {vp['mem_available_start_kib']} -> min {vp['mem_available_min_kib']} KiB",
            file=sys.stderr,
        )
    dmesg = (out / "capture.dmesg").read_text(errors="replace") if (out / "capture.dmesg").exists() else ""
    report["capture_oom_kills"] = [ln.strip() for ln in dmesg.splitlines() if "Killed process" in ln]
    for ln in report["capture_oom_kills"]:
        print(f"e2e: capture kernel OOM: {ln}", file=sys.stderr)
    if vp and vp.get("timed_out"):
        print(f"e2e: vmcorepack killed after --step-timeout {a.step_timeout} s", file=sys.stderr)
    checks: list[dict[str, Any]] = []
    checks.append(
        _check("capture ran", bool(cap), "capture.env present" if cap else f"no capture.env: {why_no_capture(out)}")
    )
    if arm:
        want = "16384" if a.flavour.endswith("16k") else "4096"
        ps = first.get("page_size")
        checks.append(_check("page size", ps == want, f"guest page size {ps}, flavour {a.flavour}"))
        elf_size = report["sizes"].get("vmcore.elf")
        ok = elf_size is not None and str(elf_size) == cap.get("vmcore_bytes")
        checks.append(_check("ELF copy", ok, f"{elf_size} bytes of /proc/vmcore's {cap.get('vmcore_bytes')}"))
        if has_mdf:
            mrc = (report["makedumpfile"] or {}).get("rc")
            checks.append(_check("Debian makedumpfile exit", mrc == 0, f"rc {mrc}", required=False))
    else:
        la57 = first.get("cpu_la57")
        checks.append(_check("paging mode", la57 == ("1" if a.paging == 5 else "0"), f"la57 in guest cpuinfo: {la57}"))
    if vp is not None:
        checks.append(_check("vmcorepack exit", vp["rc"] == 0, f"rc {vp['rc']}"))
    if cap and not a.no_verify:
        print("e2e: verifying on the host", file=sys.stderr)
        checks.extend(
            verify(out, release, shlex.split(a.args), has_mdf, crash=not arm, reference=reference is not None)
        )
    report["checks"] = checks
    report["ok"] = bool(checks) and all(c["ok"] for c in checks if c.get("required", True))
    if a.keep_fixture and (out / "vmcore.elf").exists():
        a.keep_fixture.mkdir(parents=True, exist_ok=True)
        stem = f"vmcore-{release}" if arm else f"vmcore-{release}-p{a.paging}"
        dst = a.keep_fixture / f"{stem}.elf.zst"
        subprocess.run(["zstd", "-q", "-f", "-T0", "-6", str(out / "vmcore.elf"), "-o", str(dst)], check=True)
        (a.keep_fixture / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
        report["fixture"] = str(dst)
        print(f"e2e: fixture {dst} ({dst.stat().st_size} bytes)", file=sys.stderr)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"e2e: {'PASS' if report['ok'] else 'FAIL'} ({out / 'report.json'})", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except E2EError as e:
        print(f"e2e: {e}", file=sys.stderr)
        sys.exit(2)
