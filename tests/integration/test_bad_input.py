"""Bad input: one line naming the file (and offset), exit 1, no output left behind (issue 2)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VECTORS

TINY = (VECTORS / "tiny.vmcore").read_bytes()


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def _phdr_offset(i: int) -> int:
    phoff = struct.unpack_from("<Q", TINY, 32)[0]
    return phoff + 56 * i


CASES = {
    "not-elf": b"this is not an ELF file at all" * 10,
    "empty": b"",
    "truncated-header": TINY[:40],
    "elf32": _patch(TINY, 4, b"\x01"),
    "big-endian": _patch(TINY, 5, b"\x02"),
    "not-core": _patch(TINY, 16, b"\x02\x00"),
    "truncated-phdrs": TINY[:70],
    "load-past-eof": TINY[: len(TINY) - 5000],
    "huge-phnum": _patch(TINY, 56, b"\xfe\xff"),
    "bad-note": _patch(TINY, struct.unpack_from("<Q", TINY, _phdr_offset(0) + 8)[0], b"\xff\xff\x00\x00"),
    "filesz-over-memsz": _patch(TINY, _phdr_offset(1) + 32, struct.pack("<Q", 1 << 40)),
}


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmcorepack", *args], capture_output=True, text=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_elf_gives_one_line(tmp_path: Path, name: str) -> None:
    src = tmp_path / f"{name}.vmcore"
    src.write_bytes(CASES[name])
    out = tmp_path / "out.kdump"
    r = _run(["-d", "1", str(src), str(out)])
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"vmcorepack: {src}"), lines[0]
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_offset_is_named(tmp_path: Path) -> None:
    src = tmp_path / "x.vmcore"
    src.write_bytes(TINY[: len(TINY) - 5000])
    r = _run(["-d", "1", str(src), str(tmp_path / "o")])
    assert "(at offset 0x" in r.stderr


def test_garbage_vmcoreinfo_file(tmp_path: Path) -> None:
    vi = tmp_path / "vi.txt"
    vi.write_bytes(b"\x00\xff\xfe\xfd binary")
    out = tmp_path / "o.kdump"
    r = _run(["-i", str(vi), "-d", "1", str(VECTORS / "tiny.vmcore"), str(out)])
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and str(vi) in r.stderr
    assert not out.exists()


def test_existing_output_refused_without_f(tmp_path: Path) -> None:
    out = tmp_path / "o.kdump"
    out.write_bytes(b"keep me")
    r = _run(["-d", "1", str(VECTORS / "tiny.vmcore"), str(out)])
    assert r.returncode == 1 and "already exists" in r.stderr
    assert out.read_bytes() == b"keep me"
    assert _run(["-f", "-d", "1", str(VECTORS / "tiny.vmcore"), str(out)]).returncode == 0
    assert out.stat().st_size == 45272


def test_symlink_output_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"x")
    link = tmp_path / "link.kdump"
    link.symlink_to(target)
    r = _run(["-f", "-d", "1", str(VECTORS / "tiny.vmcore"), str(link)])
    assert r.returncode == 1 and "symbolic link" in r.stderr
    assert target.read_bytes() == b"x"


def test_output_mode_is_0600(tmp_path: Path) -> None:
    out = tmp_path / "o.kdump"
    assert _run(["-d", "1", str(VECTORS / "tiny.vmcore"), str(out)]).returncode == 0
    assert out.stat().st_mode & 0o777 == 0o600


def test_level_above_1_without_vmcoreinfo(tmp_path: Path) -> None:
    out = tmp_path / "o.kdump"
    r = _run(["-d", "31", str(VECTORS / "tiny.vmcore"), str(out)])
    assert r.returncode == 1 and "VMCOREINFO" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_truncated_stream_for_R(tmp_path: Path) -> None:
    data = (VECTORS / "tiny_d1_raw.flat").read_bytes()[:-16]
    out = tmp_path / "o.kdump"
    r = subprocess.run([sys.executable, "-m", "vmcorepack", "-R", str(out)], input=data, capture_output=True)
    assert r.returncode == 1 and b"end marker" in r.stderr
    assert not out.exists()


def test_raw_image(tmp_path: Path) -> None:
    raw = tmp_path / "mem.raw"
    pages = [bytes(4096), (b"A" * 4096), os.urandom(4096), bytes(4096)]
    raw.write_bytes(b"".join(pages))
    out = tmp_path / "o.kdump"
    r = _run(["--raw", "--phys-start", "0x100000", "--page-size", "4096", "-c", "-d", "1", str(raw), str(out)])
    assert r.returncode == 0, r.stderr
    from vmcorepack.reader import KdumpReader

    with KdumpReader(str(out)) as k:
        assert k.header.max_mapnr == 0x100 + 4
        assert [int(p) for p in k.dumpable_pfns()] == [0x100, 0x101, 0x102, 0x103]
        for i, page in enumerate(pages):
            assert k.read_page(0x100 + i) == page
    shutil.rmtree(tmp_path, ignore_errors=True)


# -- what is not a vmcore at all, and bad options (issue 16) --------------------


def _not_files(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {
        "directory": tmp_path,
        "char-device": Path("/dev/null"),
        "zero-device": Path("/dev/zero"),
        "empty": empty,
        "fifo": fifo,
    }


NOT_FILES = {
    "directory": "is a directory",
    "char-device": "is a character device",
    "zero-device": "is a character device",
    "empty": "is empty",
    "fifo": "is a pipe (FIFO)",
}

MODES = {
    "pack": lambda src, out: ["-d", "1", src, out],
    "raw": lambda src, out: ["--raw", "--page-size", "4096", src, out],
    "elf-output": lambda src, out: ["-E", src, out],
    "dmesg": lambda src, out: ["--dump-dmesg", src, out],
    "info": lambda src, out: ["--info", src],
    "verify-dump": lambda src, out: ["--verify", src, str(VECTORS / "tiny.vmcore")],
    "verify-source": lambda src, out: ["--verify", str(VECTORS / "tiny_d1_lzo.kdump"), src],
}


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", sorted(NOT_FILES))
def test_not_a_file_gives_one_line(tmp_path: Path, kind: str, mode: str) -> None:
    src = _not_files(tmp_path)[kind]
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "vmcorepack", *MODES[mode](str(src), str(out))],
        capture_output=True,
        text=True,
        timeout=60,  # a FIFO opened for reading would block forever
    )
    line = _one_line(r)
    assert line == f"vmcorepack: {src}: {NOT_FILES[kind]}" + (
        ", not a regular file" if kind != "empty" else " (0 bytes)"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("where", "expect"),
    [("dir", "is a directory"), ("/dev/null", "is not a regular file (use -F to write a stream to it)")],
)
def test_output_that_is_not_a_file_is_refused_first(tmp_path: Path, where: str, expect: str) -> None:
    out = str(tmp_path) if where == "dir" else where
    for force in ([], ["-f"]):
        r = _run([*force, "-d", "1", str(VECTORS / "tiny.vmcore"), out])
        # Refused before the input is read: no progress line comes first.
        assert _one_line(r) == f"vmcorepack: {out}: {expect}"


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["--foo"], "unrecognized arguments: --foo"),
        (["-L", "lots", "a", "b"], "argument -L: invalid size 'lots'"),
        (["--workers", "two", "a", "b"], "argument --workers: invalid int value: 'two'"),
        (["-c", "-l", "a", "b"], "argument -l: not allowed with argument -c"),
        (["--stream-codec", "gzip", "-F", "a"], "argument --stream-codec: invalid choice: 'gzip'"),
    ],
)
def test_bad_option_gives_one_line_and_exit_1(args: list[str], what: str) -> None:
    line = _one_line(_run(args))
    assert line.startswith(f"vmcorepack: {what}"), line
    assert line.endswith("(vmcorepack -h lists the options)")


def test_help_still_exits_0() -> None:
    r = _run(["-h"])
    assert r.returncode == 0 and r.stdout.startswith("usage: vmcorepack")
