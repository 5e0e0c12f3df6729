"""Build the tiny busybox initramfs both kernels boot (first kernel and kdump capture kernel).

The image holds busybox-static, the modules needed to mount the host's root over virtio-9p
(resolved through each module's ``depends=`` field, decompressed when Debian ships ``.ko.xz``)
and ``tools/e2e/init``. Everything else (python3, the venv, vmcorepack, makedumpfile, kexec)
is used from the host root through the 9p share, so the capture kernel's memory stays free;
except in the harness's RAM mode (``kdump_qemu.py --load-from ram``), which adds a ``ramroot``
holding python3, numpy, vmcorepack and makedumpfile (tools/e2e/pyfiles.py), as a kdump
initramfs would carry them.
"""

from __future__ import annotations

import argparse
import gzip
import io
import lzma
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

WANTED = ("virtio_pci", "9pnet_virtio", "9p")


def _modinfo_depends(blob: bytes) -> list[str]:
    """The ``depends=`` entry of a module's .modinfo strings ([] when absent or empty)."""
    for field in blob.split(b"\0"):
        if field.startswith(b"depends="):
            return [d for d in field[8:].decode().split(",") if d]
    return []


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _module_index(moddir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in moddir.rglob("*.ko*"):
        name = path.name.split(".ko")[0].replace("-", "_")
        index[name] = path
    return index


def resolve_modules(moddir: Path, wanted: tuple[str, ...] = WANTED) -> list[tuple[str, bytes]]:
    """Return (name, ELF bytes) in load order; a module built into the kernel is skipped."""
    builtin = set()
    builtin_list = moddir / "modules.builtin"
    if builtin_list.exists():
        for line in builtin_list.read_text().splitlines():
            builtin.add(Path(line).name.split(".ko")[0].replace("-", "_"))
    index = _module_index(moddir)
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            if name in builtin:
                return
            raise SystemExit(f"mkinitramfs: module {name} is neither in {moddir} nor built in")
        blob = _read_module(index[name])
        for dep in _modinfo_depends(blob):
            visit(dep)
        order.append((name, blob))

    for name in wanted:
        visit(name)
    return order


class Cpio:
    """A newc ("070701") archive writer."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        self.ino += 1
        head = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.buf.write(head + name.encode() + b"\0")
        self.buf.write(b"\0" * (-self.buf.tell() % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        """A directory."""
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """A regular file."""
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        """A symbolic link."""
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        """The archive with its trailer."""
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build(moddir: Path, init: Path, busybox: Path, out: Path, extra: Callable[[Cpio], None] | None = None) -> list[str]:
    """Write the gzip'd archive to ``out``; return the module names in load order.

    ``extra`` adds more entries (the harness's RAM mode adds a root of its own, ``ramroot``).
    """
    modules = resolve_modules(moddir)
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "host", "out", "tmp", "lib", "lib/modules"):
        c.dir(d)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    c.symlink("bin/sh", "busybox")
    c.file("init", init.read_bytes(), 0o755)
    for name, blob in modules:
        c.file(f"lib/modules/{name}.ko", blob)
    c.file("lib/modules/order", "".join(f"{n}\n" for n, _ in modules).encode())
    if extra is not None:
        extra(c)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(gzip.compress(c.finish(), compresslevel=6))
    tmp.replace(out)
    return [n for n, _ in modules]


def main(argv: list[str] | None = None) -> int:
    """Command line: MODDIR OUTPUT."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("moddir", type=Path, help="/lib/modules/VERSION of the kernel")
    p.add_argument("output", type=Path)
    p.add_argument("--init", type=Path, default=Path(__file__).with_name("init"))
    p.add_argument("--busybox", type=Path, default=Path("/bin/busybox"))
    a = p.parse_args(argv)
    names = build(a.moddir, a.init, a.busybox, a.output)
    print(f"{a.output}: modules {' '.join(names)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
