"""Compressed flattened streams: read through gzip/bzip2/xz/zstd/lz4, write lz4/zstd (issue 5)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IN_CI, VECTORS, require_tool
from helpers import first_difference
from vmcorepack import info, streams, verify
from vmcorepack.errors import FormatError
from vmcorepack.reader import KdumpReader, reassemble_flat
from vmcorepack.sources import open_elf

TOOLS = {
    "lz4": ["lz4", "-q", "-c"],
    "gzip": ["gzip", "-1", "-c"],
    "xz": ["xz", "-0", "-T1", "-c"],
    "bzip2": ["bzip2", "-1", "-c"],
    "zstd": ["zstd", "-q", "-c"],
}


def lib(name: str) -> object:
    if IN_CI:
        return __import__(name)
    return pytest.importorskip(name)


def py_compress(name: str, data: bytes) -> bytes:
    if name == "gzip":
        return gzip.compress(data)
    if name == "bzip2":
        return bz2.compress(data)
    if name == "xz":
        return lzma.compress(data)
    if name == "zstd":
        return lib("zstandard").ZstdCompressor().compress(data)  # type: ignore[attr-defined]
    lib("lz4")
    import lz4.frame

    return lz4.frame.compress(data)


@pytest.mark.parametrize("name", list(TOOLS))
def test_detect_and_stream_vector(name: str, tmp_path: Path) -> None:
    flat = (VECTORS / "tiny_d1_raw.flat").read_bytes()
    packed = py_compress(name, flat)
    # Two concatenated frames/members are read through, as the tools do.
    assert streams.detect(packed) == name
    reader, comp = streams.open_decompressed(io.BytesIO(packed + py_compress(name, b"tail")))
    assert comp == name
    assert reader.read() == flat + b"tail"
    path = tmp_path / f"tiny.flat.{name}"
    path.write_bytes(packed)
    with KdumpReader(str(path)) as r:
        assert info.container_of(r) == f"{name}+flattened"
        want = (VECTORS / "tiny_d1_raw.kdump").read_bytes()
        assert r.file.read(0, len(want)) == want
    # -R of the compressed stream equals makedumpfile's -R of the plain one.
    out = tmp_path / "r.kdump"
    reassemble_flat(streams.open_decompressed(io.BytesIO(packed))[0], str(out))
    assert out.read_bytes() == (VECTORS / "tiny_d1_raw_from_flat.kdump").read_bytes()


def test_plain_input_passes_through() -> None:
    data = (VECTORS / "tiny_d1_raw.flat").read_bytes()
    reader, comp = streams.open_decompressed(io.BytesIO(data))
    assert comp is None
    assert reader.read() == data
    assert streams.detect(b"BZhx") is None


@pytest.mark.parametrize("name", ["gzip", "xz", "zstd", "lz4"])
def test_truncated_stream_is_a_format_error(name: str, tmp_path: Path) -> None:
    packed = py_compress(name, (VECTORS / "tiny_d1_raw.flat").read_bytes() * 4)
    path = tmp_path / f"cut.{name}"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(FormatError):
        KdumpReader(str(path))


@pytest.mark.parametrize("codec", streams.WRITE_CODECS)
def test_compressing_pipe_round_trip(codec: str, tmp_path: Path) -> None:
    lib("lz4" if codec == "lz4" else "zstandard")
    out = tmp_path / f"out.{codec}"
    data = os.urandom(3 << 20) + bytes(5 << 20)
    with open(out, "wb") as f:
        cp = streams.CompressingPipe(codec, f.fileno(), str(out))
        for a in range(0, len(data), 1 << 16):
            os.write(cp.write_fd, data[a : a + (1 << 16)])
        os.close(cp.write_fd)
        n = cp.finish(timeout=60)
    assert n == out.stat().st_size < len(data)
    with open(out, "rb") as f:
        reader, comp = streams.open_decompressed(f)
        assert comp == codec
        assert reader.read() == data


# -- the real fixture ------------------------------------------------------------


@pytest.fixture(scope="module")
def mdf_flat(real_vmcore: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """makedumpfile -F -l -d 31 of the real fixture, and makedumpfile -R of it."""
    require_tool("makedumpfile")
    base = tmp_path_factory.mktemp("streams")
    flat = base / "d31.flat"
    with open(flat, "wb") as f:
        subprocess.run(
            ["makedumpfile", "-F", "-l", "-d", "31", str(real_vmcore)], stdout=f, check=True, stderr=subprocess.DEVNULL
        )
    regular = base / "d31-R.kdump"
    with open(flat, "rb") as f:
        subprocess.run(["makedumpfile", "-R", str(regular)], stdin=f, check=True, capture_output=True)
    return flat, regular


@pytest.mark.interop
@pytest.mark.slow
@pytest.mark.parametrize("tool", list(TOOLS))
def test_makedumpfile_stream_through_tool(
    tool: str, mdf_flat: tuple[Path, Path], real_vmcore: Path, tmp_path: Path
) -> None:
    require_tool(tool)
    flat, regular = mdf_flat
    packed = tmp_path / f"d31.flat.{tool}"
    with open(flat, "rb") as fi, open(packed, "wb") as fo:
        subprocess.run(TOOLS[tool], stdin=fi, stdout=fo, check=True)
    d = info.dump_info([str(packed)])
    assert d.parts[0].container == f"{tool}+flattened"
    assert d.pages.dumpable == 33748
    assert d.parts[0].size == regular.stat().st_size
    with open_elf(str(real_vmcore)) as src:
        rep = verify.verify([str(packed)], src, workers=2)
    assert rep.ok and not rep.findings, [str(f) for f in rep.findings]
    out = tmp_path / "rebuilt.kdump"
    with open(packed, "rb") as fi:
        subprocess.run([sys.executable, "-m", "vmcorepack", "-R", str(out)], stdin=fi, check=True, capture_output=True)
    assert first_difference(out, regular) is None


@pytest.mark.interop
@pytest.mark.slow
@pytest.mark.parametrize("codec", streams.WRITE_CODECS)
def test_our_compressed_stream(codec: str, real_vmcore: Path, tmp_path: Path) -> None:
    tool = require_tool(codec)
    require_tool("makedumpfile")
    lib("lz4" if codec == "lz4" else "zstandard")
    packed = tmp_path / f"ours.flat.{codec}"
    args = ["-l", "-d", "31", "--workers", "2", "--message-level", "0"]
    with open(packed, "wb") as f:
        subprocess.run(
            [sys.executable, "-m", "vmcorepack", "-F", "--stream-codec", codec, *args, str(real_vmcore)],
            stdout=f,
            check=True,
        )
    regular = tmp_path / "ours.kdump"
    subprocess.run([sys.executable, "-m", "vmcorepack", *args, str(real_vmcore), str(regular)], check=True)
    # The command-line tool decompresses it and makedumpfile -R accepts the stream.
    plain = tmp_path / "ours.flat"
    with open(plain, "wb") as f:
        subprocess.run([tool, "-d", "-c", str(packed)], stdout=f, check=True)
    rebuilt = tmp_path / "mdf-R.kdump"
    with open(plain, "rb") as f:
        subprocess.run(["makedumpfile", "-R", str(rebuilt)], stdin=f, check=True, capture_output=True)
    assert first_difference(rebuilt, regular) is None
    assert packed.stat().st_size < plain.stat().st_size
