"""Issue 20: -p and -z from the C page loop are makedumpfile 1.7.9's bytes; --fast-zlib is read by every reader.

The reference is makedumpfile 1.7.9 built with every codec (Debian 12's 1.7.2 has
no snappy or zstd): $VMCOREPACK_MAKEDUMPFILE_179, else
$VMCOREPACK_CACHE/makedumpfile-1.7.9/makedumpfile, else built there by
benchmarks/build_makedumpfile.sh from $MAKEDUMPFILE_SRC (a makedumpfile git
repository or source tree).  Without any of them the real-fixture comparison
falls back to makedumpfile 1.7.9's recorded headers and bitmaps
(../shared/fixtures/makedumpfile-1.7.9) and the tiny vectors (whole files).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import CACHE, IN_CI, REPO, VECTORS, reference_head, require_drgn, require_kdumpfile, require_tool
from helpers import elf_page_reader, elf_ram_pfns, kdumpfile_reads_every_page, runs
from vmcorepack import codecs, native
from vmcorepack.cli import main
from vmcorepack.formats import kdump
from vmcorepack.reader import KdumpReader

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def _require_system_library(name: str) -> None:
    """The codec must come from the library makedumpfile links (not a Python package's encoder)."""
    label = codecs.status(name)[1]
    if codecs.CODECS[name].library not in label:
        msg = f"{name} is not from {codecs.CODECS[name].library}: {label}"
        pytest.fail(msg) if IN_CI else pytest.skip(msg)


def _is_179(path: Path) -> bool:
    r = subprocess.run([str(path), "-v"], capture_output=True, text=True)
    out = r.stdout + r.stderr
    return "version 1.7.9" in out and "snappy\tenabled" in out and "zstd\tenabled" in out


@pytest.fixture(scope="session")
def mdf179() -> Path | None:
    """makedumpfile 1.7.9 with every codec, built on first use when a source is given; else None."""
    given = os.environ.get("VMCOREPACK_MAKEDUMPFILE_179")
    path = Path(given) if given else CACHE / "makedumpfile-1.7.9" / "makedumpfile"
    if not path.exists() and os.environ.get("MAKEDUMPFILE_SRC"):
        script = REPO / "benchmarks" / "build_makedumpfile.sh"
        subprocess.run([str(script), os.environ["MAKEDUMPFILE_SRC"], str(path.parent)], check=True)
    if not path.exists():
        return None
    assert _is_179(path), f"{path} is not makedumpfile 1.7.9 with snappy and zstd"
    return path


def _pack(args: list[str], src: Path, out: Path, native_loop: bool, monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setattr(native, "ENABLED", native_loop)
    assert main([*args, "--message-level", "0", "-f", str(src), str(out)]) == 0
    return out.read_bytes()


@pytest.mark.parametrize("native_loop", [True, False], ids=["C-loop", "Python-loop"])
@pytest.mark.parametrize(("opt", "ref"), [("-p", "tiny_d1_snappy.kdump"), ("-z", "tiny_d1_zstd.kdump")])
def test_tiny_vectors_whole_file(
    tmp_path: Path, opt: str, ref: str, native_loop: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every byte, page data included, equals makedumpfile's vector, from either loop."""
    name = "snappy" if opt == "-p" else "zstd"
    _require_system_library(name)
    if native_loop and native.built():
        assert codecs.loop_library(name) is not None, f"the C loop did not load {codecs.CODECS[name].library}"
    out = _pack([opt, "-d", "1"], VECTORS / "tiny.vmcore", tmp_path / "out.kdump", native_loop, monkeypatch)
    assert out == (VECTORS / ref).read_bytes()


@pytest.mark.parametrize("native_loop", [True, False], ids=["C-loop", "Python-loop"])
@pytest.mark.parametrize("opt", ["-p", "-z", "-c"])
def test_real_fixture_d31_equals_makedumpfile_179(
    real_vmcore: Path,
    mdf179: Path | None,
    tmp_path: Path,
    opt: str,
    native_loop: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if opt != "-c":
        _require_system_library("snappy" if opt == "-p" else "zstd")
    ours = _pack([opt, "-d", "31"], real_vmcore, tmp_path / "ours.kdump", native_loop, monkeypatch)
    if mdf179 is None:
        # Recorded reference: 1.7.9's headers and bitmaps with -l; only the codec bit of status differs.
        head = bytearray(reference_head(31))
        at = kdump.X86_64.disk_dump_header.fields["status"][1]
        mine = bytearray(ours[: len(head)])
        assert mine[at : at + 4] != head[at : at + 4]
        mine[at : at + 4] = head[at : at + 4]
        assert mine == head
        return
    theirs = tmp_path / "theirs.kdump"
    r = subprocess.run([str(mdf179), opt, "-d", "31", str(real_vmcore), str(theirs)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ours == theirs.read_bytes()


@pytest.fixture(scope="module")
def fast_dump(real_vmcore: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real fixture with --fast-zlib -c -d 1 (all memory but zero pages), from the C loop."""
    if not codecs.available("fast-zlib"):
        msg = f"--fast-zlib unavailable: {codecs.FAST_ZLIB.hint}"
        pytest.fail(msg) if IN_CI else pytest.skip(msg)
    out = tmp_path_factory.mktemp("fast") / "fast.kdump"
    assert main(["--fast-zlib", "-c", "-d", "1", "--message-level", "0", str(real_vmcore), str(out)]) == 0
    return out


def test_fast_zlib_is_not_zlibs_bytes(fast_dump: Path) -> None:
    """Zlib pages, most of them other bytes than compress2() level 1 writes (else this tests nothing new)."""
    zlib_codec = codecs.get_codec("zlib")
    differ = compressed = 0
    with KdumpReader(str(fast_dump)) as r:
        assert r.header.status & zlib_codec.flag
        for pfn in list(r.dumpable_pfns())[::40]:  # spread over the file
            d = r.descriptor(int(pfn))
            if int(d["flags"]) & zlib_codec.flag:
                compressed += 1
                stored = r.file.read(int(d["offset"]), int(d["size"]))
                differ += stored != zlib_codec.compress(r.read_page(int(pfn)))
    assert compressed > 1000 and differ > compressed // 2, (compressed, differ)


def test_fast_zlib_libkdumpfile_reads_every_page(real_vmcore: Path, fast_dump: Path) -> None:
    require_kdumpfile()
    assert kdumpfile_reads_every_page(fast_dump, real_vmcore) == 212_856


def test_fast_zlib_drgn_reads_every_page(real_vmcore: Path, fast_dump: Path) -> None:
    drgn = require_drgn()
    prog = drgn.Program()
    prog.set_core_dump(str(fast_dump))
    src = elf_page_reader(real_vmcore)
    checked = 0
    for start, count in runs(elf_ram_pfns(real_vmcore)):
        for a in range(start, start + count, 256):
            n = min(256, start + count - a)
            assert prog.read(a * 4096, n * 4096, True) == src(a, n), f"pfn {a:#x}+{n}"
            checked += n
    assert checked == 212_856


def test_fast_zlib_crash_opens_it(fast_dump: Path) -> None:
    """crash accepts the file; without a vmlinux it reads only the headers (its page reader is zlib's
    uncompress(), as makedumpfile's is: the next test has makedumpfile decode every page)."""
    crash = require_tool("crash")
    r = subprocess.run([crash, "-d", "1", "--osrelease", str(fast_dump)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "6.1.0-56-amd64"
    assert "status: 1 (DUMP_DH_COMPRESSED_ZLIB)" in r.stdout
    assert "total_valid_pages: 212856" in r.stdout


def test_fast_zlib_makedumpfile_rewrites_it_as_from_the_vmcore(
    real_vmcore: Path, fast_dump: Path, tmp_path: Path
) -> None:
    """makedumpfile reads every page of the --fast-zlib dump (uncompress()) and writes -c: its own bytes.

    Debian's makedumpfile 1.7.2 does: -c is in every build.
    """
    mdf = require_tool("makedumpfile")
    outs = []
    for name, src in (("re", fast_dump), ("ref", real_vmcore)):
        out = tmp_path / f"{name}.kdump"
        r = subprocess.run([mdf, "-c", "-d", "1", str(src), str(out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0][:8] == b"KDUMP   "
    assert outs[0] == outs[1]
