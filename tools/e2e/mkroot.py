"""Build a foreign-architecture root directory from Debian packages, with no chroot and no script.

The arm64 e2e guest cannot use the host's root over 9p (its binaries are x86), so it gets a
directory of its own, shared read-only the same way: the closure of a few Debian arm64 packages
(busybox-static, kexec-tools, python3, python3-numpy, makedumpfile, vmcorepack's optional
codec modules), each ``apt-get download``-ed and unpacked with ``dpkg-deb --fsys-tarfile | tar``.
No maintainer script runs, so the few things they would do that the guest needs are done here:
the merged-/usr links (bookworm's packages still ship files under /lib and /bin) and the
libblas.so.3 / liblapack.so.3 links that update-alternatives would make for numpy.

    python3 tools/e2e/mkroot.py --arch arm64 ROOT PACKAGE...
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: Never unpacked: what only maintainer scripts, dpkg itself or optional Perl helpers need
#: (makedumpfile depends on perl for makedumpfile-R.pl, which the e2e run does not use).
SKIP = re.compile(
    r"^(perl|perl-base|perl-modules-.*|libperl.*|debconf|cdebconf|dpkg|install-info|debianutils|"
    r"base-files|usrmerge|init-system-helpers|libdebconfclient0|readline-common|media-types|mime-support|"
    r"tzdata)$"
)

#: busybox applets linked into /usr/local/bin: what tools/e2e/guest.sh and its commands call.
APPLETS = (
    "sh",
    "awk",
    "cat",
    "cp",
    "cut",
    "date",
    "dd",
    "dmesg",
    "env",
    "grep",
    "head",
    "ls",
    "mkdir",
    "mount",
    "rm",
    "sed",
    "sleep",
    "stat",
    "sync",
    "tail",
    "tar",
    "timeout",
    "touch",
    "tr",
    "umount",
    "uname",
    "wc",
    "free",
    "ps",
    "sha256sum",
    "gzip",
    "zcat",
)


#: Options of every apt call: ``--release`` makes that suite's versions the candidates, whatever
#: pins the machine's preferences set.
APT_OPTS: list[str] = []


def _depends_blocks(pkgs: list[str]) -> dict[str, list[list[str]]]:
    """``apt-cache depends`` of ``pkgs``: per package, its Depends/PreDepends as OR-groups.

    A virtual name (``<x>``) stands for its providers, the indented lines after it.
    """
    r = subprocess.run(
        ["apt-cache", *APT_OPTS, "depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
         "--no-replaces", "--no-enhances", *pkgs],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out: dict[str, list[list[str]]] = {}
    cur: list[list[str]] | None = None
    group: list[str] = []
    vgroup: list[str] | None = None  # the OR-group whose last name is virtual
    for line in r.stdout.splitlines():
        if not line.startswith(" "):
            cur = out.setdefault(line.strip(), [])
            group, vgroup = [], None
            continue
        m = re.match(r"^ ( |\|)(Pre)?Depends: (.*)$", line)
        if m and cur is not None:
            name = m.group(3).strip()
            group.append(name)
            vgroup = group if name.startswith("<") else None
            if m.group(1) != "|":
                cur.append(group)
                group = []
        elif line.startswith("    ") and vgroup is not None:
            vgroup.append(line.strip())  # a provider of the virtual name
        else:
            vgroup = None
    return out


def _pick(group: list[str], arch: str, have: set[str]) -> str | None:
    """The first real package of an OR-group (a provider for a virtual name), arch-qualified."""
    real = [n for n in group if not n.startswith("<")]
    for n in real:
        if n in have:
            return n
    for n in real:
        if n.endswith(f":{arch}") or ":" not in n:
            return n
    return None if group[0].startswith("<") else group[0]


def closure(roots: list[str], arch: str) -> list[str]:
    """Every package ``roots`` need (first alternative of each Depends), without :data:`SKIP`."""
    have: set[str] = set()
    todo = list(roots)
    while todo:
        # A bare name is looked up as NAME:ARCH first, then, if that is no real package (an
        # Architecture: all one such as python3-tqdm), as NAME.
        batch = [q for q in dict.fromkeys(n if ":" in n else f"{n}:{arch}" for n in todo) if q not in have]
        todo = []
        if not batch:
            break
        blocks = _depends_blocks(batch)
        arch_all = [q.split(":")[0] for q in batch if q not in blocks]
        if arch_all:
            blocks.update(_depends_blocks(arch_all))
        for name, groups in blocks.items():
            if name.startswith("<"):
                continue  # NAME:ARCH is virtual: NAME was looked up above
            have.add(name)
            for g in groups:
                n = _pick(g, arch, have)
                if n is None or SKIP.match(n.split(":")[0]):
                    continue
                n = n.removesuffix(":any")
                if n not in have and f"{n}:{arch}" not in have:
                    todo.append(n)
    return sorted(have)


def build(root: Path, packages: list[str], arch: str, debs: Path) -> list[str]:
    """Download and unpack the closure of ``packages`` into ``root`` (replaced if it exists)."""
    names = closure(packages, arch)
    debs.mkdir(parents=True, exist_ok=True)
    missing = [
        n for n in names if not list(debs.glob(f"{n.split(':')[0]}_*_{arch if n.endswith(':' + arch) else '*'}.deb"))
    ]
    if missing:
        print(f"mkroot: apt-get download {len(missing)} packages", file=sys.stderr)
        subprocess.run(
            ["apt-get", *APT_OPTS, "download", "-q", *missing], cwd=debs, check=True, stdout=subprocess.DEVNULL
        )
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for d in ("usr/bin", "usr/sbin", "usr/lib"):
        (tmp / d).mkdir(parents=True)
    for link in ("bin", "sbin", "lib"):
        os.symlink(f"usr/{link}", tmp / link)
    for n in names:
        base = n.split(":")[0]
        cands = sorted(debs.glob(f"{base}_*_{arch}.deb")) + sorted(debs.glob(f"{base}_*_all.deb"))
        if not cands:
            raise SystemExit(f"mkroot: no .deb for {n} in {debs}")
        deb = cands[-1]
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(tmp)], stdin=tar.stdout, check=True)
        if tar.wait() != 0:
            raise SystemExit(f"mkroot: dpkg-deb failed on {deb}")
    triplet = {"arm64": "aarch64-linux-gnu", "amd64": "x86_64-linux-gnu"}[arch]
    libdir = tmp / "usr" / "lib" / triplet
    for lib, sub in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):
        if not (libdir / lib).exists() and (libdir / sub / lib).exists():
            os.symlink(f"{sub}/{lib}", libdir / lib)
    if (tmp / "usr" / "bin" / "busybox").exists():
        # busybox-static ships no applet links; guest.sh and init need a shell and these tools
        (tmp / "usr" / "local" / "bin").mkdir(parents=True, exist_ok=True)
        for applet in APPLETS:
            if not (tmp / "usr" / "bin" / applet).exists():
                os.symlink("/usr/bin/busybox", tmp / "usr" / "local" / "bin" / applet)
        if not (tmp / "usr" / "bin" / "sh").exists():
            os.symlink("busybox", tmp / "usr" / "bin" / "sh")
    for d in ("proc", "sys", "dev", "tmp", "run", "mnt", "root"):
        (tmp / d).mkdir(exist_ok=True)
    (tmp / "etc").mkdir(exist_ok=True)
    (tmp / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp / "etc" / "group").write_text("root:x:0:\n")
    (tmp / "packages.txt").write_text("".join(f"{n}\n" for n in names))
    shutil.rmtree(root, ignore_errors=True)
    tmp.replace(root)
    return names


def main(argv: list[str] | None = None) -> int:
    """Command line: ROOT PACKAGE..."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="arm64")
    p.add_argument("--release", help="take the packages from this suite (e.g. trixie), not the default one")
    p.add_argument("--debs", type=Path, help="download directory (default ROOT/../debs-ARCH)")
    p.add_argument("root", type=Path)
    p.add_argument("packages", nargs="+")
    a = p.parse_args(argv)
    if a.release:
        empty = a.root.parent / "apt-no-preferences"
        empty.mkdir(parents=True, exist_ok=True)
        APT_OPTS[:] = ["-o", f"Dir::Etc::PreferencesParts={empty.resolve()}", "-o", f"APT::Default-Release={a.release}"]
    names = build(a.root, a.packages, a.arch, a.debs or a.root.parent / f"debs-{a.arch}-{a.release or 'default'}")
    print(f"mkroot: {a.root}: {len(names)} packages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
