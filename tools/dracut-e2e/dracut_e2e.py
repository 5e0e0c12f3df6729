"""End-to-end: vmcorepack in a dracut-built capture initramfs (dracut/99vmcorepack), under QEMU.

Build (once) a root with Debian's dracut-core, python3, numpy, makedumpfile and vmcorepack (the
kdump-tools test's root, tools/kdump-tools, plus dracut-core), install the project's dracut module
into it (``make install-dracut DESTDIR=ROOT``) with the test-only module
tools/dracut-e2e/98vmcorepacke2e, and build with Debian's dracut, for the harness's 6.1 kernel:

* ``vmcorepack``: ``dracut -m "base vmcorepack vmcorepacke2e"``;
* ``makedumpfile``: ``dracut -m "base vmcorepacke2e"`` with Debian's makedumpfile instead;
* ``none``: ``dracut -m "base vmcorepacke2e"``, the baseline the other two are measured against.

The first kernel boots tools/e2e's busybox initramfs (the host's root over 9p) and loads the
kernel with the dracut image through ``kexec -p`` (tools/e2e/guest.sh, which also builds the memory
mix and panics). The capture kernel runs dracut's own /init; the test module's cmdline hook (dracut's first) mounts
the 9p output share, runs the collector the image holds on /proc/vmcore (``-l -d 31``), records
MemAvailable before and the lowest during the run, copies /proc/vmcore as ELF and powers off. The
host checks the dump with tools/e2e's checks (``--verify``, libkdumpfile and drgn page for page,
crash, bitmaps against Debian makedumpfile's run on the ELF copy).

    tools/dracut-e2e/run.sh [--collector vmcorepack|makedumpfile] [--crashkernel 256M] [--no-elf-copy]
    tools/dracut-e2e/run.sh --sizes          # the three images' sizes only, no QEMU
    tools/dracut-e2e/run.sh --bisect 96M:256M --collector makedumpfile   # smallest crashkernel=, 16M steps
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tools" / "e2e"))
sys.path.insert(0, str(REPO / "tools" / "kdump-tools"))

import kdump_qemu as e2e  # noqa: E402
import kdump_tools_e2e as kt  # noqa: E402

CACHE = kt.CACHE.parent / "dracut-e2e"
STEP = 16 << 20  # crashkernel= bisection step (issue #19)
MODULES = {
    "vmcorepack": "base vmcorepack vmcorepacke2e",
    "makedumpfile": "base vmcorepacke2e",
    "none": "base vmcorepacke2e",
}


def _mounted(root: Path) -> list[Path]:
    """Bind /proc, /sys and /dev into ``root`` (dracut and apt need them); return them for umount."""
    done = []
    for d in ("proc", "sys", "dev"):
        target = root / d
        subprocess.run(["mount", "--bind", f"/{d}", str(target)], check=True)
        done.append(target)
    return done


def _umount(paths: list[Path]) -> None:
    for p in reversed(paths):
        subprocess.run(["umount", "-l", str(p)], check=False)


def build_root(release: str) -> Path:
    """The kdump-tools root copied, plus dracut-core and the two dracut modules (rebuilt when they change)."""
    base = kt.build_root(release, rebuild=False)
    root = CACHE / "root"
    stamp = CACHE / "root.stamp"
    inputs = [*(REPO / "dracut" / "99vmcorepack").iterdir(), *(HERE / "98vmcorepacke2e").iterdir(), REPO / "Makefile"]
    fresh = stamp.exists() and stamp.stat().st_mtime > (kt.CACHE / "root.stamp").stat().st_mtime
    if not fresh:
        shutil.rmtree(root, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(base), str(root)], check=True)
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        mounts = _mounted(root)
        try:
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
            with open(CACHE / "apt.log", "w") as log:
                subprocess.run(
                    ["chroot", str(root), "apt-get", "update", "-q"], env=env, stdout=log, stderr=log, check=True
                )
                subprocess.run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends",
                                "dracut-core"], env=env, stdout=log, stderr=log, check=True)  # fmt: skip
        finally:
            _umount(mounts)
    if not fresh or any(p.stat().st_mtime > stamp.stat().st_mtime for p in inputs):
        # The project's module, installed the documented way; the test module by hand.
        subprocess.run(["make", "-s", "-C", str(REPO), "install-dracut", f"DESTDIR={root}"], check=True)
        dst = root / "usr" / "lib" / "dracut" / "modules.d" / "98vmcorepacke2e"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(HERE / "98vmcorepacke2e", dst)
        stamp.touch()
    return root


def build_images(root: Path, release: str) -> dict[str, Path]:
    """The three capture initramfs images (gzip), rebuilt when the root changed."""
    out = {}
    stamp = CACHE / "root.stamp"
    mounts: list[Path] = []
    try:
        for name, mods in MODULES.items():
            img = root / "boot" / f"dracut-{name}-{release}.img"
            out[name] = img
            if img.exists() and img.stat().st_mtime > stamp.stat().st_mtime:
                continue
            if not mounts:
                mounts = _mounted(root)
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "e2e_collector": name}
            cmd = ["dracut", "--force", "--no-hostonly", "--gzip", "--kver", release, "-m", mods,
                   f"/boot/{img.name}"]  # fmt: skip
            print(f"dracut-e2e: {shlex.join(cmd)}", file=sys.stderr)
            with open(CACHE / f"dracut-{name}.log", "w") as log:
                r = subprocess.run(["chroot", str(root), *cmd], env=env, stdout=log, stderr=subprocess.STDOUT)
            if r.returncode:
                raise e2e.E2EError(f"dracut failed (exit {r.returncode}): see {CACHE / f'dracut-{name}.log'}")
    finally:
        _umount(mounts)
    return out


def sizes(images: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Compressed and unpacked size of each image."""
    out = {}
    for name, img in images.items():
        unpacked = subprocess.run(f"gzip -dc {shlex.quote(str(img))} | wc -c", shell=True, capture_output=True,
                                  text=True, check=True).stdout  # fmt: skip
        out[name] = {"compressed": img.stat().st_size, "unpacked": int(unpacked)}
    return out


def capture(a: argparse.Namespace, release: str, vmlinuz: Path, moddir: Path, image: Path, crashkernel: str,
            elf_copy: bool, out: Path) -> dict[str, Any]:  # fmt: skip
    """One QEMU loop: the busybox first kernel kexec-loads ``image`` and panics; capture.env and QEMU's result."""
    first_initrd = e2e.build_initramfs(release, moddir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.chmod(out, 0o777)
    # no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can panic at boot.
    capture_append = "console=ttyS0 reset_devices nr_cpus=1 irqpoll nousb panic=5 no5lvl rd.shell=0 no_timer_check"
    config = {
        "E2E_REPO": str(REPO), "E2E_KERNEL": str(vmlinuz), "E2E_INITRD": str(image),
        "E2E_CAPTURE_APPEND": capture_append, "E2E_KEXEC_ARGS": "", "E2E_ARGS": a.args,
        "E2E_MAKEDUMPFILE_ARGS": a.args, "E2E_ELF_COPY": "1" if elf_copy else "0", "E2E_REPO_SHARE": "0",
        "E2E_PAGECACHE_MB": "192", "E2E_ANON_MB": "160", "E2E_TMPFS_MB": "96", "E2E_STEP_TIMEOUT": "900",
        "E2E_MAKEDUMPFILE": "0", "E2E_VMCOREPACK": "vmcorepack",
    }  # fmt: skip
    (out / "config.sh").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in config.items()))
    append = f"console=ttyS0 crashkernel={crashkernel} panic=5 e2e=first no5lvl no_timer_check"
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max,la57=off", "-smp", "1", "-m", "1G",
        "-nographic", "-monitor", "none", "-no-reboot",
        "-kernel", str(vmlinuz), "-initrd", str(first_initrd), "-append", append,
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={out},mount_tag=e2eout,security_model=none,multidevs=remap",
    ]  # fmt: skip
    (out / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
    print(f"dracut-e2e: {image.name}, crashkernel={crashkernel} (log {out / 'serial.log'})", file=sys.stderr)
    q = e2e.run_qemu(cmd, out / "serial.log", a.timeout)
    cap = e2e._read_env(out / "capture.env")
    print(f"dracut-e2e: QEMU exit {q['rc']} after {q['wall_s']} s; capture {cap}", file=sys.stderr)
    return {"qemu": q, "capture": cap}


def ok_run(res: dict[str, Any]) -> bool:
    """Whether the collector finished (exit 0) in the capture kernel."""
    return res["capture"].get("collector_rc") == "0"


def main(argv: list[str] | None = None) -> int:
    """Build the images, then one capture (checked), a size report, or a crashkernel= bisection."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernel", default="6.1")
    p.add_argument("--collector", choices=("vmcorepack", "makedumpfile"), default="vmcorepack")
    p.add_argument("--args", default="-l -d 31", help='collector options (default "-l -d 31")')
    p.add_argument("--crashkernel", default="256M")
    p.add_argument("--no-elf-copy", action="store_true", help="no ELF copy, no checks (sizes and memory only)")
    p.add_argument("--sizes", action="store_true", help="print the images' sizes and stop")
    p.add_argument("--bisect", metavar="LO:HI", help="smallest crashkernel= in LO..HI (16M steps) that works")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    release, vmlinuz, moddir = e2e.fetch_kernel(e2e.resolve_kernel_package(a.kernel))
    root = build_root(release)
    images = build_images(root, release)
    report: dict[str, Any] = {"kernel": release, "sizes": sizes(images)}
    for name, s in report["sizes"].items():
        print(f"dracut-e2e: {name}: {s['compressed']} bytes gzip, {s['unpacked']} unpacked", file=sys.stderr)
    tag = f"bisect-{a.collector}" if a.bisect else f"{a.collector}-ck{a.crashkernel}"
    out: Path = (a.out or CACHE / "runs" / tag).resolve()
    if a.sizes:
        print(json.dumps(report, indent=1))
        return 0
    if a.bisect:
        lo, hi = (e2e.parse_size(x) // STEP for x in a.bisect.split(":"))
        tries: dict[str, Any] = {}
        # Invariant: hi works (checked first), lo - 1 ... unknown below lo.
        res = capture(a, release, vmlinuz, moddir, images[a.collector], f"{hi * 16}M", False, out / f"{hi * 16}M")
        tries[f"{hi * 16}M"] = res
        if not ok_run(res):
            print(f"dracut-e2e: {a.collector} fails at the top, {hi * 16}M", file=sys.stderr)
            return 1
        while lo < hi:
            mid = (lo + hi) // 2
            ck = f"{mid * 16}M"
            res = capture(a, release, vmlinuz, moddir, images[a.collector], ck, False, out / ck)
            tries[ck] = res
            if ok_run(res):
                hi = mid
            else:
                lo = mid + 1
        report["bisect"] = {"collector": a.collector, "smallest": f"{hi * 16}M", "tries": tries}
        print(f"dracut-e2e: {a.collector}: smallest working crashkernel={hi * 16}M", file=sys.stderr)
        (CACHE / f"bisect-{a.collector}.json").write_text(json.dumps(report, indent=1) + "\n")
        return 0
    res = capture(a, release, vmlinuz, moddir, images[a.collector], a.crashkernel, not a.no_elf_copy, out)
    report.update(res)
    checks = [e2e._check("collector exit", ok_run(res), f"capture.env: {res['capture']}")]
    if a.collector == "vmcorepack" and not a.no_elf_copy and (out / "vmcore.elf").exists():
        mdf = out / "makedumpfile.kdump"
        r = subprocess.run(["makedumpfile", *a.args.split(), str(out / "vmcore.elf"), str(mdf)],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode:
            checks.append(e2e._check("host makedumpfile", False, r.stderr.strip()[-300:]))
        checks.extend(e2e.verify(out, release, a.args.split(), has_mdf=True))
    report["checks"] = checks
    report["ok"] = all(c["ok"] for c in checks if c.get("required", True))
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"dracut-e2e: {'PASS' if report['ok'] else 'FAIL'} ({out / 'report.json'})", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except e2e.E2EError as e:
        print(f"dracut-e2e: {e}", file=sys.stderr)
        sys.exit(2)
