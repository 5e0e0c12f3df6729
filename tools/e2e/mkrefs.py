r"""Make a compressed real-vmcore fixture and makedumpfile's reference outputs for it.

For one ELF vmcore (``vmcore.elf`` of a tools/e2e run), with a makedumpfile binary of any
architecture (an arm64 build runs under ``qemu-aarch64-static``, its libraries found through
``QEMU_LD_PREFIX``):

1. run ``makedumpfile {-l,-c} -d N --show-stats`` for N in 0, 1, 2, 4, 8, 16, 31 and keep, per run,
   the first blocks of its output up to the page_desc table (main header, sub header, both
   bitmaps) as ``dN[-c].head.zst`` and its messages as ``dN[-c].stats``;
2. reduce the ELF: every page that the -d 31 bitmap excludes and that is not all zero gets a
   fixed non-zero pattern instead of its content (dump level 31 decides from struct page, not
   from the content, except for zero pages, which stay zero), so that zstd packs it small;
3. run every level again on the reduced ELF and require the same bitmaps (byte for byte) and
   the same page-count tables; only then write ``vmcore.elf.zst``.

    .venv/bin/python tools/e2e/mkrefs.py --makedumpfile BUILD/makedumpfile --name makedumpfile-1.7.9 \\
        --run RUN tests/data/arm64/NAME
"""

from __future__ import annotations

import argparse
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import zstandard

from vmcorepack.formats.kdump import KdumpLayout

LEVELS = (0, 1, 2, 4, 8, 16, 31)
CODECS = {"-l": "", "-c": "-c"}  # option -> file-name suffix
PATTERN_TEXT = b"vmcorepack fixture: content of a page excluded at dump level 31 "


def _header_geometry(head: bytes) -> tuple[int, int, int]:
    """(block_size, sub_hdr_size, bitmap_blocks) of a kdump main header, little-endian 64-bit (arm64, x86_64)."""
    h = np.frombuffer(head, KdumpLayout.for_target("<", 8).disk_dump_header, 1)[0]
    return int(h["block_size"]), int(h["sub_hdr_size"]), int(h["bitmap_blocks"])


def _head(dump: Path) -> bytes:
    """The blocks of ``dump`` before its page_desc table."""
    with open(dump, "rb") as f:
        first = f.read(4096)
        bs, sub, bb = _header_geometry(first)
        f.seek(0)
        return f.read((1 + sub + bb) * bs)


def _bitmaps(head: bytes) -> bytes:
    bs, sub, _ = _header_geometry(head)
    return head[(1 + sub) * bs :]


def _table(stats: str) -> list[str]:
    """The page-count lines of --show-stats output (not the timings, nor Write bytes)."""
    keep = re.compile(r"^\s*(Original pages|Excluded pages|Pages filled|Non-private|Private cache|User process|"
                      r"Free pages|Hwpoison|Offline|Extension|Remaining pages|Memory Hole|Total pages)")  # fmt: skip
    return [ln.strip() for ln in stats.splitlines() if keep.match(ln)]


def run_levels(mdf: list[str], elf: Path, work: Path) -> dict[str, tuple[bytes, str]]:
    """Run makedumpfile at every level and codec: {"dN[-c]": (head, stats text)}."""
    out: dict[str, tuple[bytes, str]] = {}
    for opt, suffix in CODECS.items():
        for level in LEVELS:
            dst = work / "out.kdump"
            dst.unlink(missing_ok=True)
            r = subprocess.run(
                [*mdf, opt, "-d", str(level), "--show-stats", str(elf), str(dst)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            text = r.stdout + r.stderr
            if r.returncode != 0:
                raise SystemExit(f"mkrefs: makedumpfile {opt} -d {level} failed:\n{text}")
            out[f"d{level}{suffix}"] = (_head(dst), text)
            dst.unlink()
    return out


def _pt_loads(mm: mmap.mmap) -> list[tuple[int, int, int]]:
    """(file offset, physical address, size in file) of each PT_LOAD of a little-endian ELF64."""
    if mm[:4] != b"\x7fELF" or mm[4] != 2:
        raise SystemExit("mkrefs: not an ELF64 file")
    (phoff,) = struct.unpack_from("<Q", mm, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", mm, 0x36)
    loads = []
    for i in range(phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz = struct.unpack_from("<IIQQQQ", mm, phoff + i * phentsize)
        if p_type == 1:
            loads.append((p_offset, p_paddr, p_filesz))
    return loads


def reduce_elf(src: Path, dst: Path, bitmap2: bytes, page: int) -> tuple[int, int]:
    """Copy ``src`` to ``dst`` with the non-zero pages excluded by ``bitmap2`` patterned.

    Returns:
        (pages patterned, excluded pages left as they were because they are all zero).
    """
    shutil.copyfile(src, dst)
    pattern = (PATTERN_TEXT * (page // len(PATTERN_TEXT) + 1))[:page]
    zero = bytes(page)
    bits = bytes(bitmap2)
    patterned = zeros = 0
    with open(dst, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        for off, paddr, size in _pt_loads(mm):
            first = paddr // page
            for i in range(size // page):
                pfn = first + i
                if pfn // 8 < len(bits) and bits[pfn // 8] >> (pfn % 8) & 1:
                    continue  # kept at -d 31
                at = off + i * page
                if mm[at : at + page] == zero:
                    zeros += 1
                else:
                    mm[at : at + page] = pattern
                    patterned += 1
    return patterned, zeros


def vmcoreinfo(elf: Path) -> bytes:
    """The VMCOREINFO note's text, from the PT_NOTE segments of a little-endian ELF64."""
    with open(elf, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        (phoff,) = struct.unpack_from("<Q", mm, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", mm, 0x36)
        for i in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", mm, phoff + i * phentsize)
            at, end = p_offset, p_offset + p_filesz
            while p_type == 4 and at + 12 <= end:
                namesz, descsz, _ = struct.unpack_from("<III", mm, at)
                desc = at + 12 + (namesz + 3) // 4 * 4
                if mm[at + 12 : at + 12 + namesz].rstrip(b"\0") == b"VMCOREINFO":
                    return bytes(mm[desc : desc + descsz]).rstrip(b"\0")
                at = desc + (descsz + 3) // 4 * 4
    raise SystemExit(f"mkrefs: {elf}: no VMCOREINFO note")


def copy_run(run: Path, outdir: Path, mdf: list[str]) -> None:
    """Keep what a tools/e2e run measured, its serial log, the guest makedumpfile's log, dmesg."""
    outdir.mkdir(parents=True, exist_ok=True)
    for name in ("first.env", "capture.env"):
        shutil.copyfile(run / name, outdir / name)
    shutil.copyfile(run / "makedumpfile.log", outdir / "guest-makedumpfile.log")
    (outdir / "serial.log.zst").write_bytes(
        zstandard.ZstdCompressor(level=19).compress((run / "serial.log").read_bytes())
    )
    (outdir / "vmcoreinfo.txt").write_bytes(vmcoreinfo(run / "vmcore.elf") + b"\n")
    dmesg = outdir / "dmesg.txt"
    dmesg.unlink(missing_ok=True)
    subprocess.run([*mdf, "--dump-dmesg", str(run / "vmcore.elf"), str(dmesg)], capture_output=True, check=True)
    dmesg.chmod(0o644)


def main(argv: list[str] | None = None) -> int:
    """Command line: ELF OUTDIR."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--makedumpfile", required=True, type=Path, help="makedumpfile binary (any architecture)")
    p.add_argument("--name", default="makedumpfile-1.7.9", help="subdirectory of OUTDIR for its outputs")
    p.add_argument("--qemu-user", default="qemu-aarch64-static", help="runner of a foreign binary ('' for none)")
    p.add_argument("--ld-prefix", default="/", help="QEMU_LD_PREFIX: a root holding its libraries")
    p.add_argument("--no-reduce", action="store_true", help="only the reference outputs; keep no ELF")
    p.add_argument("--keep-reduced", type=Path, help="path where the reduced ELF is kept, uncompressed")
    p.add_argument("--run", type=Path, help="also keep this tools/e2e run's logs (its vmcore.elf is ELF's default)")
    p.add_argument("elf", type=Path, nargs="?")
    p.add_argument("outdir", type=Path)
    a = p.parse_args(argv)
    os.environ["QEMU_LD_PREFIX"] = a.ld_prefix
    mdf = [a.qemu_user, str(a.makedumpfile)] if a.qemu_user else [str(a.makedumpfile)]
    if a.elf is None:
        if a.run is None:
            p.error("give ELF or --run")
        a.elf = a.run / "vmcore.elf"
    if a.run is not None:
        copy_run(a.run, a.outdir, mdf)
    refdir = a.outdir / a.name
    refdir.mkdir(parents=True, exist_ok=True)
    cctx = zstandard.ZstdCompressor(level=19)
    with tempfile.TemporaryDirectory(dir=a.elf.parent) as tmp:
        work = Path(tmp)
        refs = run_levels(mdf, a.elf, work)
        for key, (head, stats) in refs.items():
            (refdir / f"{key}.head.zst").write_bytes(cctx.compress(head))
            (refdir / f"{key}.stats").write_text(stats)
        print(f"mkrefs: {len(refs)} reference runs in {refdir}", file=sys.stderr)
        if a.no_reduce:
            return 0
        head31 = refs["d31"][0]
        page, _, bb = _header_geometry(head31)
        bitmap2 = _bitmaps(head31)[bb // 2 * page :]
        reduced = a.keep_reduced or work / "reduced.elf"
        patterned, zeros = reduce_elf(a.elf, reduced, bitmap2, page)
        print(f"mkrefs: {patterned} excluded pages patterned, {zeros} all-zero excluded pages kept", file=sys.stderr)
        again = run_levels(mdf, reduced, work)
        bad = [k for k in refs if _bitmaps(refs[k][0]) != _bitmaps(again[k][0])]
        bad += [f"{k} stats" for k in refs if _table(refs[k][1]) != _table(again[k][1])]
        if bad:
            raise SystemExit(f"mkrefs: the reduced ELF changes makedumpfile's results: {bad}")
        print(f"mkrefs: every bitmap and page-count table equal on the reduced ELF ({len(refs)} runs)", file=sys.stderr)
        dst = a.outdir / "vmcore.elf.zst"
        subprocess.run(["zstd", "-q", "-f", "-T0", "-19", "--long=27", str(reduced), "-o", str(dst)], check=True)
        print(f"mkrefs: {dst}: {dst.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
