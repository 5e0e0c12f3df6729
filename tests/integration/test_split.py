"""--split and --reassemble (issue 7): makedumpfile's vectors, the real fixture, readers on split sets."""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import IN_CI, VECTORS, require_tool
from helpers import elf_page_reader, first_difference
from vmcorepack.cli import main
from vmcorepack.reader import KdumpReader

TINY = VECTORS / "tiny.vmcore"


def test_split_equals_makedumpfile_parts(tmp_path: Path) -> None:
    a, b = tmp_path / "s1", tmp_path / "s2"
    assert (
        main(["--message-level", "0", "--split", "--splitblock-size", "16", "-d", "1", str(TINY), str(a), str(b)]) == 0
    )
    assert a.read_bytes() == (VECTORS / "tiny_split1.kdump").read_bytes()
    assert b.read_bytes() == (VECTORS / "tiny_split2.kdump").read_bytes()


def _part_pages(paths: list[Path]) -> list[int]:
    counts = []
    for p in paths:
        with KdumpReader(str(p)) as r:
            counts.append(len(r.dumpable_pfns()))
    return counts


def test_split_warns_of_empty_parts_and_names_a_block_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # tiny's 9 pages all fall in its first 1 GiB splitblock: makedumpfile's cut leaves parts 2 and 3 empty.
    parts = [tmp_path / f"s{i}" for i in range(1, 4)]
    assert main(["--message-level", "0", "--split", "-d", "0", str(TINY), *map(str, parts)]) == 0
    err = capsys.readouterr().err
    assert _part_pages(parts) == [9, 0, 0]
    m = re.fullmatch(
        rf"vmcorepack: warning: {parts[1]}, {parts[2]}: 2 of 3 parts hold no pages \(the 9 pages to dump fill too few "
        r"splitblocks of 1048576 KiB\); --splitblock-size (\d+) spreads them over all 3 parts\n",
        err,
    )
    assert m, err
    # The size named does spread them, and no larger power of two below 1 GiB would.
    size = int(m[1])
    for p in parts:
        p.unlink()
    assert (
        main(
            ["--message-level", "0", "--split", "--splitblock-size", str(size), "-d", "0", str(TINY), *map(str, parts)]
        )
        == 0
    )
    assert capsys.readouterr().err == ""
    got = _part_pages(parts)
    assert sum(got) == 9 and all(got), got
    for p in parts:
        p.unlink()
    assert (
        main(
            [
                "--message-level",
                "0",
                "--split",
                "--splitblock-size",
                str(2 * size),
                "-d",
                "0",
                str(TINY),
                *map(str, parts),
            ]
        )
        == 0
    )
    assert "hold no pages" in capsys.readouterr().err


def test_split_into_more_parts_than_pages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parts = [tmp_path / f"s{i}" for i in range(10)]
    assert main(["--message-level", "0", "--split", "-d", "0", str(TINY), *map(str, parts)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no --splitblock-size helps: there are fewer pages (9) than parts" in err, err


def test_reassemble_makedumpfile_parts(tmp_path: Path) -> None:
    out = tmp_path / "r"
    parts = [str(VECTORS / "tiny_split1.kdump"), str(VECTORS / "tiny_split2.kdump")]
    assert main(["--message-level", "0", "--reassemble", *parts, str(out)]) == 0
    assert out.read_bytes() == (VECTORS / "tiny_reassembled.kdump").read_bytes()


def test_reassemble_refuses_non_split(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert main(["--reassemble", str(VECTORS / "tiny_d1_raw.kdump"), str(VECTORS / "tiny_split2.kdump"), str(out)]) == 1
    assert not out.exists()


def _fileset_reader(paths: list[Path]):
    """libkdumpfile's C API on a split set (the 0.5.1 Python binding cannot open sets)."""
    try:
        lib = ctypes.CDLL("libkdumpfile.so.10")
    except OSError:
        if IN_CI:
            pytest.fail("libkdumpfile.so.10 missing (.ci/run installs python3-libkdumpfile)")
        pytest.skip("libkdumpfile not installed")
    lib.kdump_new.restype = ctypes.c_void_p
    ctx = ctypes.c_void_p(lib.kdump_new())
    fds = (ctypes.c_int * len(paths))(*[os.open(p, os.O_RDONLY) for p in paths])
    assert lib.kdump_open_fdset(ctx, len(paths), fds) == 0
    buf = ctypes.create_string_buffer(4096 * 256)

    def read(pfn: int, count: int) -> bytes:
        n = ctypes.c_size_t(4096 * count)
        rc = lib.kdump_read(ctx, 1, ctypes.c_uint64(pfn * 4096), buf, ctypes.byref(n))  # 1 = KDUMP_MACHPHYSADDR
        assert rc == 0 and n.value == 4096 * count, f"kdump_read pfn {pfn:#x}: status {rc}"
        return buf.raw[: n.value]

    return read


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.parametrize(("level", "nparts"), [(31, 2), (31, 3), (1, 3)])
def test_real_split_reassembles_to_direct(real_vmcore: Path, tmp_path: Path, level: int, nparts: int) -> None:
    direct = tmp_path / "direct"
    common = ["--message-level", "0", "-l", "-d", str(level)]
    assert main([*common, str(real_vmcore), str(direct)]) == 0
    parts = [tmp_path / f"part{i}" for i in range(nparts)]
    assert main([*common, "--split", "--splitblock-size", "65536", str(real_vmcore), *map(str, parts)]) == 0
    merged = tmp_path / "merged"
    assert main(["--message-level", "0", "--reassemble", *map(str, parts), str(merged)]) == 0
    assert first_difference(merged, direct) is None
    ranges = []
    for p in parts:
        with KdumpReader(str(p)) as k:
            ranges.append((k.header.start_pfn, k.header.end_pfn))
    if (level, nparts) == (31, 3):
        # makedumpfile 1.7.9's own boundaries for this run (docs/kdump-format.md §17.2.5).
        assert ranges == [(0, 131072), (131072, 147456), (147456, 262106)]
    # libkdumpfile reads the set; every kept page equals the source.
    read = _fileset_reader(parts)
    src = elf_page_reader(real_vmcore)
    with KdumpReader(str(direct)) as k:
        pfns = k.dumpable_pfns()
    sample = np.unique(np.concatenate([pfns[:: max(1, len(pfns) // 3000)], pfns[-500:]]))
    for pfn in sample.tolist():
        assert read(pfn, 1) == src(pfn), f"pfn {pfn:#x}"
    crash = require_tool("crash")
    r = subprocess.run([crash, "-d", "1", "--osrelease", *map(str, parts)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "6.1.0-56-amd64"
