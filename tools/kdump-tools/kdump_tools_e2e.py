"""End-to-end: Debian's kdump-tools saving a dump through vmcorepack, under QEMU, checked on the host.

One run: build (once, cached) a Debian bookworm root with mmdebstrap holding systemd, kdump-tools,
kexec-tools, makedumpfile, the harness's 6.1 kernel, python3 with Debian's numpy/zstandard/lz4/
snappy/tqdm and vmcorepack (a wheel built from this tree, in /opt/vmcorepack); switch kdump-tools
over to vmcorepack with the README's commands (read from README.md and run verbatim) and set
``USE_KDUMP=1`` in /etc/default/kdump-tools. Write it into an ext4 disk image (``mke2fs -d``), boot
it under QEMU (TCG, systemd, ``crashkernel=`` on the command line). kdump-tools.service loads the
capture kernel; e2e-crash.service panics through sysrq; in the capture kernel kdump-tools-dump.service
runs ``kdump-config`` which calls vmcorepack as ``makedumpfile --dump-dmesg`` and ``makedumpfile -F
-c -d 31 /proc/vmcore | compress > /var/crash/STAMP/dump-incomplete``, then reboots (QEMU exits).
e2e-elfcopy.service saves /proc/vmcore as an ELF file first. The host reads /var/crash and the ELF
copy out of the image with ``debugfs -R rdump`` (no mount), undoes kdump-tools' compression,
reassembles the flattened stream and checks it with tools/e2e's checks (``--verify``, libkdumpfile
and drgn page for page, crash, the bitmaps against Debian makedumpfile's on the ELF copy), and the
dmesg file against ``makedumpfile --dump-dmesg`` of the ELF copy.

    tools/kdump-tools/run.sh [--compression none|lz4] [--crashkernel 384M] [--rebuild-root]
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
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tools" / "e2e"))

import kdump_qemu as e2e  # noqa: E402  (tools/e2e: kernel download, QEMU runner, the checks)

CACHE = Path(os.environ.get("VMCOREPACK_KDUMP_TOOLS_CACHE", REPO / ".cache" / "kdump-tools"))
SUITE = "bookworm"

#: The guest root's packages, besides the minbase variant.
ROOT_PACKAGES = (
    "systemd-sysv", "udev", "kmod", "procps", "e2fsprogs", "initramfs-tools", "kdump-tools", "kexec-tools",
    "makedumpfile", "lz4", "python3", "python3-venv", "python3-numpy", "python3-zstandard", "python3-lz4",
    "python3-snappy", "python3-tqdm",
)  # fmt: skip

#: kdump-tools' KDUMP_COMPRESSION values this test covers, and the file name suffix kdump-config gives.
COMPRESSIONS = {"none": "", "lz4": ".lz4"}


def apt_sources() -> str:
    """The host's Debian apt sources (bookworm, -updates, -security: the 6.1 kernel is in -security).

    mmdebstrap pastes a file given as a mirror into the guest's sources.
    """
    for src in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if src.exists() and SUITE in src.read_text():
            return str(src)
    return f"deb http://deb.debian.org/debian {SUITE} main"


def readme_switchover() -> str:
    """The README's Debian/Ubuntu kdump-tools switch-over commands (section "Switching a kdump service over")."""
    text = (REPO / "README.md").read_text()
    section = text.partition("## Switching a kdump service over")[2].partition("\n## ")[0]
    block = section.partition("```sh\n")[2].partition("```")[0]
    lines = block.partition("# Debian/Ubuntu kdump-tools")[2].partition("\n# Fedora")[0].splitlines()[1:]
    cmds = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not cmds:
        raise e2e.E2EError("README.md: no Debian kdump-tools commands in 'Switching a kdump service over'")
    return "\n".join(cmds) + "\n"


def build_wheel() -> Path:
    """vmcorepack's wheel from this tree (C extension built for the host's python3, which is bookworm's)."""
    out = CACHE / "wheel"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(
        [str(e2e.VENV_BIN / "pip"), "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
    )
    return next(out.glob("vmcorepack-*.whl"))


def build_root(release: str, rebuild: bool) -> Path:
    """Build (or reuse) the guest root directory with mmdebstrap; rebuilt when its inputs change."""
    root = CACHE / "root"
    stamp = CACHE / "root.stamp"
    inputs = [HERE / n for n in ("customize.sh", "guest-crash.sh", "guest-elfcopy.sh", "e2e-crash.service",
                                 "e2e-elfcopy.service")]  # fmt: skip
    inputs += list((REPO / "src" / "vmcorepack").glob("*.[pc]*"))
    want = json.dumps({"packages": ROOT_PACKAGES, "release": release, "switchover": readme_switchover()})
    if (
        not rebuild
        and stamp.exists()
        and stamp.read_text() == want
        and all(p.stat().st_mtime < stamp.stat().st_mtime for p in inputs)
    ):
        return root
    if shutil.which("mmdebstrap") is None:
        raise e2e.E2EError("mmdebstrap is missing (apt-get install mmdebstrap e2fsprogs)")
    wheel = build_wheel()
    switch = CACHE / "switchover.sh"
    switch.write_text(readme_switchover())
    shutil.rmtree(root, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    hook = f'{shlex.quote(str(HERE / "customize.sh"))} "$1" {shlex.quote(str(wheel))} {shlex.quote(str(switch))}'
    cmd = [
        "mmdebstrap", "--mode=root", "--variant=minbase",
        f"--include={','.join([*ROOT_PACKAGES, f'linux-image-{release}'])}",
        # Before the kernel's postinst: kdump-tools' hook would switch MODULES=most to dep, which
        # cannot find the root device in a chroot (customize.sh lists the modules).
        "--essential-hook=mkdir -p \"$1/etc/initramfs-tools/conf.d\" &&"
        " echo MODULES=list > \"$1/etc/initramfs-tools/conf.d/e2e-modules\"",
        f"--customize-hook={hook} {shlex.quote(release)}",
        SUITE, str(root), apt_sources(),
    ]  # fmt: skip
    print(f"kdump-tools: {shlex.join(cmd)}", file=sys.stderr)
    with open(CACHE / "mmdebstrap.log", "w") as log:
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if r.returncode:
        raise e2e.E2EError(f"mmdebstrap failed (exit {r.returncode}): see {CACHE / 'mmdebstrap.log'}")
    stamp.write_text(want)
    return root


def configure(root: Path, compression: str) -> None:
    """Set KDUMP_COMPRESSION in /etc/default/kdump-tools (as its comment there documents)."""
    conf = root / "etc" / "default" / "kdump-tools"
    text = re.sub(r"(?m)^#?\s*KDUMP_COMPRESSION=.*\n", "", conf.read_text())
    if compression != "none":
        text += f"KDUMP_COMPRESSION={compression}\n"
    conf.write_text(text)
    for d in (root / "var" / "crash", root / "var" / "e2e"):
        shutil.rmtree(d, ignore_errors=True)
    (root / "var" / "crash").mkdir()


def make_image(root: Path, image: Path, size: str) -> None:
    """The root as an ext4 image (mke2fs -d: no loop mount)."""
    image.unlink(missing_ok=True)
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-d", str(root), str(image), size],
        check=True,
    )


def extract(image: Path, out: Path) -> None:
    """Copy /var/crash and /var/e2e out of the image (debugfs rdump: no mount)."""
    for d in ("/var/crash", "/var/e2e"):
        subprocess.run(["debugfs", "-R", f"rdump {d} {out}", str(image)], capture_output=True, check=True)


def unflatten(saved: Path, compression: str, dump: Path) -> None:
    """Undo kdump-tools' ``compress`` and reassemble makedumpfile's flattened stream into ``dump``."""
    with tempfile.TemporaryDirectory(dir=dump.parent) as tmp:
        flat = saved
        if compression == "lz4":
            flat = Path(tmp) / "flat"
            subprocess.run(["lz4", "-d", "-q", "-f", str(saved), str(flat)], check=True)
        # Debian makedumpfile -R reassembles the flattened stream, as kdump-tools' README tells
        # a user to (it refuses an existing output file).
        dump.unlink(missing_ok=True)
        with open(flat, "rb") as f:
            subprocess.run(["makedumpfile", "-R", str(dump)], stdin=f, check=True, capture_output=True)


#: makedumpfile 1.7.5 and later print a caller-id column ("[     T42] ") after the time stamp when the
#: kernel exports the caller id (vmcorepack/dmesg.py); Debian bookworm's 1.7.2 does not.
CALLER_COLUMN = re.compile(rb"(?m)^(\[ *\d+\.\d+\]) \[ *[TC]\d+\] ")


def check_dmesg(dmesg: Path, elf: Path, out: Path) -> list[dict[str, Any]]:
    """kdump-tools' dmesg file (vmcorepack's --dump-dmesg) against makedumpfile's on the ELF copy.

    Byte for byte against makedumpfile 1.7.9 (VMCOREPACK_MAKEDUMPFILE_179, the project's
    reference) when it is there; against Debian's 1.7.2 with the caller-id column taken out.
    """
    checks = []
    ours = dmesg.read_bytes()
    refs = [("Debian makedumpfile", "makedumpfile", True)]
    if os.environ.get("VMCOREPACK_MAKEDUMPFILE_179"):
        refs.append(("makedumpfile 1.7.9", os.environ["VMCOREPACK_MAKEDUMPFILE_179"], False))
    for label, binary, strip in refs:
        ref = out / f"{Path(binary).name}-{len(checks)}.dmesg"
        ref.unlink(missing_ok=True)
        r = subprocess.run([binary, "--dump-dmesg", str(elf), str(ref)], capture_output=True, text=True, check=False)
        name = f"dmesg == {label}'s" + (" but the caller ids" if strip else "")
        if r.returncode or not ref.exists():
            checks.append(e2e._check(name, False, f"{binary} --dump-dmesg failed: {r.stderr.strip()[-300:]}"))
            continue
        got = CALLER_COLUMN.sub(rb"\1 ", ours) if strip else ours
        theirs = ref.read_bytes()
        same = got == theirs and len(got) > 0
        detail = f"{len(ours)} bytes, " + ("identical" if same else f"differ ({len(got)} vs {len(theirs)} bytes)")
        checks.append(e2e._check(name, same, detail))
    return checks


def main(argv: list[str] | None = None) -> int:
    """Run one kdump-tools capture and verify it; 0 when every required check passed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernel", default="6.1", help="kernel series or linux-image-* package (default 6.1)")
    p.add_argument("--compression", choices=sorted(COMPRESSIONS), default="none",
                   help="kdump-tools' KDUMP_COMPRESSION (default none: its default, no compression)")  # fmt: skip
    p.add_argument("--crashkernel", default="384M", help="crashkernel= (default 384M)")
    p.add_argument("--mem", default="1G", help="guest RAM (default 1G)")
    p.add_argument("--image-size", default="4G", help="ext4 image size (default 4G, sparse)")
    p.add_argument("--timeout", type=float, default=3000, help="QEMU wall-clock limit, seconds")
    p.add_argument("--out", type=Path, help="run directory (default .cache/kdump-tools/runs/COMPRESSION)")
    p.add_argument("--rebuild-root", action="store_true", help="rebuild the guest root even if cached")
    p.add_argument("--reverify", action="store_true", help="no QEMU: verify the last run's image again")
    a = p.parse_args(argv)
    for tool in ("qemu-system-x86_64", "mke2fs", "debugfs", "makedumpfile", "lz4"):
        if shutil.which(tool) is None:
            raise e2e.E2EError(f"{tool} is missing (apt-get install qemu-system-x86 e2fsprogs makedumpfile lz4)")
    pkg = e2e.resolve_kernel_package(a.kernel)
    release, vmlinuz, _ = e2e.fetch_kernel(pkg)
    out: Path = (a.out or CACHE / "runs" / a.compression).resolve()
    image = out / "disk.img"
    CACHE.mkdir(parents=True, exist_ok=True)
    root = build_root(release, a.rebuild_root)
    initrd = root / "boot" / f"initrd.img-{release}"
    if not a.reverify:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        configure(root, a.compression)
        make_image(root, image, a.image_size)
    append = f"root=/dev/vda rw console=ttyS0 crashkernel={a.crashkernel} panic=5 no5lvl systemd.show_status=1"
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max,la57=off", "-smp", "1", "-m", a.mem,
        "-nographic", "-monitor", "none", "-no-reboot",
        "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", append,
        "-drive", f"file={image},format=raw,if=virtio,cache=unsafe",
    ]  # fmt: skip
    (out / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
    print(f"kdump-tools: {release}, crashkernel={a.crashkernel}, KDUMP_COMPRESSION={a.compression}", file=sys.stderr)
    if a.reverify:
        q = (e2e._read_json(out / "report.json") or {}).get("qemu") or {}
    else:
        print(f"kdump-tools: booting QEMU (log {out / 'serial.log'}, limit {a.timeout:.0f} s)", file=sys.stderr)
        q = e2e.run_qemu(cmd, out / "serial.log", a.timeout)
        print(f"kdump-tools: QEMU exit {q['rc']} after {q['wall_s']} s", file=sys.stderr)
    got = out / "guest"
    shutil.rmtree(got, ignore_errors=True)
    got.mkdir()
    extract(image, got)
    checks: list[dict[str, Any]] = []
    stamps = sorted(d for d in (got / "crash").glob("2*") if d.is_dir())
    suffix = COMPRESSIONS[a.compression]
    saved = [str(p.relative_to(got)) for p in sorted(got.rglob("*"))]
    report: dict[str, Any] = {"kernel": release, "compression": a.compression, "crashkernel": a.crashkernel,
                              "qemu": q, "saved": saved}  # fmt: skip
    mi = got / "e2e" / "capture-meminfo"  # /proc/meminfo at the start of the capture
    lines = mi.read_text().splitlines() if mi.exists() else []
    report["capture_meminfo"] = {k: v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    log = (out / "serial.log").read_text(errors="replace") if (out / "serial.log").exists() else ""
    report["kdump_config_lines"] = [ln for ln in log.splitlines() if "kdump-tools" in ln or "makedumpfile" in ln][-20:]
    checks.append(e2e._check("kdump-tools loaded the capture kernel", "kexec_crash_loaded=1" in log,
                             "e2e-first: kexec_crash_loaded=1 on the console" if "kexec_crash_loaded=1" in log
                             else "no kexec_crash_loaded=1 line in serial.log"))  # fmt: skip
    if len(stamps) != 1:
        checks.append(e2e._check("kdump-tools saved a dump", False, f"{len(stamps)} stamp directories in /var/crash"))
    else:
        stamp = stamps[0]
        dumps = list(stamp.glob(f"dump.*{suffix}")) if suffix else [
            d for d in stamp.glob("dump.*") if re.fullmatch(r"dump\.\d+", d.name)
        ]  # fmt: skip
        dmesgs = list(stamp.glob("dmesg.*"))
        names = sorted(x.name for x in stamp.iterdir())
        checks.append(e2e._check("kdump-tools saved a dump", len(dumps) == 1 and len(dmesgs) == 1,
                                 f"{stamp.name}: {names}"))  # fmt: skip
        elf = got / "e2e" / "vmcore.elf"
        if len(dumps) == 1 and elf.exists():
            run = out / "check"
            run.mkdir(exist_ok=True)
            (run / "vmcore.elf").unlink(missing_ok=True)
            os.link(elf, run / "vmcore.elf")
            unflatten(dumps[0], a.compression, run / "dump.kdump")
            report["dump_bytes"] = {
                "saved": dumps[0].stat().st_size,
                "reassembled": (run / "dump.kdump").stat().st_size,
            }
            # Debian makedumpfile with kdump-tools' own options on the same ELF copy, for the bitmaps.
            mdf = run / "makedumpfile.kdump"
            mdf.unlink(missing_ok=True)
            r = subprocess.run(["makedumpfile", "-c", "-d", "31", str(elf), str(mdf)], capture_output=True, text=True)
            if r.returncode:
                checks.append(e2e._check("host makedumpfile", False, r.stderr.strip()[-300:]))
            checks.extend(e2e.verify(run, release, ["-c", "-d", "31"], has_mdf=True))
            if dmesgs:
                checks.extend(check_dmesg(dmesgs[0], elf, run))
        elif not elf.exists():
            checks.append(e2e._check("ELF copy", False, "no /var/e2e/vmcore.elf in the image"))
    wrapped = "exec /opt/vmcorepack/bin/vmcorepack" in (root / "usr/bin/makedumpfile").read_text(errors="replace")
    checks.append(e2e._check("makedumpfile is the README's wrapper", wrapped, "/usr/bin/makedumpfile in the root"))
    report["checks"] = checks
    report["ok"] = all(c["ok"] for c in checks if c.get("required", True))
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"kdump-tools: {'PASS' if report['ok'] else 'FAIL'} ({out / 'report.json'})", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    t0 = time.monotonic()
    try:
        rc = main()
    except e2e.E2EError as e:
        print(f"kdump-tools: {e}", file=sys.stderr)
        rc = 2
    print(f"kdump-tools: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    sys.exit(rc)
