"""Byte compatibility with makedumpfile's own output for tests/data/vectors (issue 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VECTORS, codec_params, require_tool
from vmcorepack import codecs
from vmcorepack.cli import main
from vmcorepack.reader import KdumpReader

TINY = VECTORS / "tiny.vmcore"

BYTE_EXACT = [
    pytest.param(["-d", "0"], "tiny_d0_raw.kdump", id="d0-raw"),
    pytest.param(["-d", "1"], "tiny_d1_raw.kdump", id="d1-raw"),
    pytest.param(["-c", "-d", "1"], "tiny_d1_zlib.kdump", id="d1-zlib"),
    pytest.param(["-l", "-d", "1"], "tiny_d1_lzo.kdump", id="d1-lzo"),
]


@pytest.mark.parametrize(("opts", "ref"), BYTE_EXACT)
@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_byte_identical(tmp_path: Path, opts: list[str], ref: str, workers: int) -> None:
    out = tmp_path / "out.kdump"
    assert main([*opts, "--message-level", "0", "--workers", str(workers), str(TINY), str(out)]) == 0
    assert out.read_bytes() == (VECTORS / ref).read_bytes()


@pytest.mark.parametrize(("opt", "ref"), [("-p", "tiny_d1_snappy.kdump"), ("-z", "tiny_d1_zstd.kdump")])
def test_snappy_zstd_headers_and_pages(tmp_path: Path, opt: str, ref: str) -> None:
    name = "snappy" if opt == "-p" else "zstd"
    if not codecs.available(name):
        pytest.skip(f"{name} not installed")
    out = tmp_path / "out.kdump"
    assert main([opt, "-d", "1", "--message-level", "0", str(TINY), str(out)]) == 0
    ours, theirs = out.read_bytes(), (VECTORS / ref).read_bytes()
    assert ours[:16384] == theirs[:16384]  # headers, notes and bitmaps
    with KdumpReader(str(out)) as a, KdumpReader(str(VECTORS / ref)) as b:
        assert list(a.dumpable_pfns()) == list(b.dumpable_pfns())
        for pfn in a.dumpable_pfns():
            assert a.read_page(int(pfn)) == b.read_page(int(pfn))


def test_reassemble_makedumpfile_stream(tmp_path: Path) -> None:
    out = tmp_path / "out.kdump"
    with open(VECTORS / "tiny_d1_raw.flat", "rb") as f:
        r = subprocess.run([sys.executable, "-m", "vmcorepack", "-R", str(out)], stdin=f, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (VECTORS / "tiny_d1_raw_from_flat.kdump").read_bytes()


@pytest.mark.parametrize("workers", [0, 2])
def test_our_stream_rebuilds_identically(tmp_path: Path, workers: int) -> None:
    stream = tmp_path / "s.flat"
    with open(stream, "wb") as f:
        r = subprocess.run(
            [sys.executable, "-m", "vmcorepack", "-F", "-d", "1", "--workers", str(workers), str(TINY)],
            stdout=f,
            stderr=subprocess.PIPE,
        )
    assert r.returncode == 0, r.stderr
    ours = tmp_path / "ours.kdump"
    with open(stream, "rb") as f:
        assert subprocess.run([sys.executable, "-m", "vmcorepack", "-R", str(ours)], stdin=f).returncode == 0
    assert ours.read_bytes() == (VECTORS / "tiny_d1_raw.kdump").read_bytes()


@pytest.mark.interop
def test_makedumpfile_rebuilds_our_stream(tmp_path: Path) -> None:
    mdf = require_tool("makedumpfile")
    stream = tmp_path / "s.flat"
    with open(stream, "wb") as f:
        assert (
            subprocess.run([sys.executable, "-m", "vmcorepack", "-F", "-d", "1", str(TINY)], stdout=f).returncode == 0
        )
    out = tmp_path / "mdf.kdump"
    with open(stream, "rb") as f:
        r = subprocess.run([mdf, "-R", str(out)], stdin=f, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (VECTORS / "tiny_d1_raw.kdump").read_bytes()


@pytest.mark.parametrize("codec", codec_params())
def test_flat_reader_reads_pages(tmp_path: Path, codec: str) -> None:
    stream = tmp_path / "s.flat"
    opts = [] if codec == "none" else [codecs.CODECS[codec].option]
    with open(stream, "wb") as f:
        assert (
            subprocess.run([sys.executable, "-m", "vmcorepack", "-F", *opts, "-d", "1", str(TINY)], stdout=f).returncode
            == 0
        )
    with KdumpReader(str(stream)) as a, KdumpReader(str(VECTORS / "tiny_d1_raw.kdump")) as b:
        for pfn in b.dumpable_pfns():
            assert a.read_page(int(pfn)) == b.read_page(int(pfn))
