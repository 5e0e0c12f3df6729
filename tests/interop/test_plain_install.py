"""A plain ``pip install vmcorepack`` (no extras, no python-lzo) does every codec (issue 16).

One fresh venv without system site packages, built from this tree; then, on the real fixture at
-d 31: -l, -c and -z write makedumpfile 1.7.9's headers and bitmaps, -p reads back page for page
through libkdumpfile, -R of an LZ4-compressed -F stream equals Debian makedumpfile's -R of the plain
stream, and -v names every codec as enabled.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import reference_head, require_kdumpfile, require_tool
from helpers import elf_page_reader
from vmcorepack import codecs
from vmcorepack.codecs import CODECS
from vmcorepack.reader import KdumpReader

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
#: disk_dump_header.status: after signature (8), header_version (4), utsname (390 + 2 padding) and timestamp (16).
STATUS_OFFSET = 424


@pytest.fixture(scope="module")
def plain_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a fresh venv with ``pip install`` of a copy of this tree (the copy keeps build/ out of it)."""
    base = tmp_path_factory.mktemp("plain")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.so"))
    venv = base / "venv"
    # Debian's python3, as `make venv` uses, without --system-site-packages: nothing leaks in.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    r = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    # setuptools' deprecation boxes (a license table) made every install print 28 lines.
    assert "deprecated" not in r.stderr, r.stderr
    return venv / "bin"


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    kw.setdefault("stdout", subprocess.PIPE)
    r = subprocess.run(cmd, stderr=subprocess.PIPE, timeout=600, **kw)  # type: ignore[call-overload]
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r  # type: ignore[no-any-return]


def test_no_python_lzo_and_every_codec_enabled(plain_bin: Path) -> None:
    r = subprocess.run([str(plain_bin / "python"), "-c", "import lzo"], capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'lzo'" in r.stderr
    out = _run([str(plain_bin / "vmcorepack"), "-v"]).stdout.decode()
    lines = dict(line.split("\t", 1) for line in out.splitlines()[1:])
    assert set(lines) == {"zlib", "lzo", "snappy", "zstd", "fast-zlib", "C extension"}
    for name in ("zlib", "lzo", "snappy", "zstd"):
        assert lines[name].startswith("enabled ("), out
    assert lines["lzo"].startswith("enabled (C extension"), out
    # No codec headers at build time: the extension loads libsnappy and libzstd when it runs.
    for name in ("snappy", "zstd"):
        assert lines[name].startswith(f"enabled (C page loop: {codecs.loop_library(name)}"), out
    assert lines["fast-zlib"].startswith(("enabled (C page loop: ", "disabled (apt-get install libdeflate0")), out
    assert lines["C extension"].startswith("loaded"), out


@pytest.mark.parametrize("opt", ["-l", "-c", "-z"])
def test_heads_equal_makedumpfile(plain_bin: Path, real_vmcore: Path, tmp_path: Path, opt: str) -> None:
    """Headers and bitmaps as makedumpfile 1.7.9 -l -d 31 wrote them, but for the codec's status bit."""
    out = tmp_path / "out.kdump"
    _run([str(plain_bin / "vmcorepack"), opt, "-d", "31", "--message-level", "0", str(real_vmcore), str(out)])
    head = bytearray(reference_head(31))
    flag = next(c.flag for c in CODECS.values() if c.option == opt)
    head[STATUS_OFFSET : STATUS_OFFSET + 4] = flag.to_bytes(4, "little")
    assert out.read_bytes()[: len(head)] == bytes(head)


def test_snappy_reads_back_through_libkdumpfile(plain_bin: Path, real_vmcore: Path, tmp_path: Path) -> None:
    kdumpfile = require_kdumpfile()
    out = tmp_path / "out.kdump"
    _run([str(plain_bin / "vmcorepack"), "-p", "-d", "31", "--message-level", "0", str(real_vmcore), str(out)])
    k = kdumpfile.kdumpfile(str(out))
    src = elf_page_reader(real_vmcore)
    with KdumpReader(str(out)) as ours:
        pfns = [int(p) for p in ours.dumpable_pfns()]
        assert ours.header.status & CODECS["snappy"].flag
    for pfn in pfns:
        assert bytes(k.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * 4096, 4096)) == src(pfn, 1), f"pfn {pfn:#x}"
    assert len(pfns) > 20_000


def test_rearrange_lz4_stream_equals_makedumpfile(plain_bin: Path, real_vmcore: Path, tmp_path: Path) -> None:
    mdf = require_tool("makedumpfile")
    lz4 = require_tool("lz4")
    stream = tmp_path / "s.flat.lz4"
    with open(stream, "wb") as f:
        _run(
            [
                str(plain_bin / "vmcorepack"),
                "-F",
                "-l",
                "-d",
                "31",
                "--stream-codec",
                "lz4",
                "--message-level",
                "0",
                str(real_vmcore),
            ],
            stdout=f,
        )
    plain = tmp_path / "s.flat"
    _run([lz4, "-d", "-q", str(stream), str(plain)])
    ours, theirs = tmp_path / "ours.kdump", tmp_path / "theirs.kdump"
    with open(stream, "rb") as f:
        _run([str(plain_bin / "vmcorepack"), "-R", str(ours)], stdin=f)
    with open(plain, "rb") as f:
        _run([mdf, "-R", str(theirs)], stdin=f)
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours.stat().st_size > 1 << 20
