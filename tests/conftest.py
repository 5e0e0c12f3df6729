"""Shared fixtures: test data paths, the decompressed real vmcore, tool discovery.

makedumpfile's small vectors (1.4 MB, tests/data/vectors/README.md) are part of the repository.
The real vmcore and makedumpfile 1.7.9's output from it (141 MB) are not: they are read from
the directory named by ``VMCOREPACK_FIXTURES`` (default ``../shared/fixtures`` beside the
checkout), and the tests that need them skip when it is missing (fail in CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from vmcorepack import codecs

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "data" / "vectors"
#: The one setting for where the real fixture lives (README.md says so too).
FIXTURES_SETTING = "VMCOREPACK_FIXTURES"
FIXTURES = Path(os.environ.get(FIXTURES_SETTING) or REPO.parent / "shared" / "fixtures")
REFERENCE = FIXTURES / "makedumpfile-1.7.9"
CACHE = Path(os.environ.get("VMCOREPACK_CACHE", REPO / ".cache"))
IN_CI = os.environ.get("CI") == "true"
LEVELS = (0, 1, 2, 4, 8, 16, 31)


def require_kdumpfile() -> Any:
    """Import python3-libkdumpfile (Debian's, in /usr/lib/python3); fail in CI, skip locally when missing."""
    try:
        import kdumpfile
    except ImportError:
        if IN_CI:
            pytest.fail("python3-libkdumpfile is not importable (.ci/run installs it)")
        pytest.skip("python3-libkdumpfile not installed")
    return kdumpfile


def require_drgn() -> Any:
    """Import drgn (from PyPI, in the venv); fail in CI, skip locally when missing."""
    try:
        import drgn
    except ImportError:
        if IN_CI:
            pytest.fail("drgn is not installed (make venv installs it)")
        pytest.skip("drgn not installed")
    return drgn


def require_tool(name: str) -> str:
    """Return the path of an external tool; fail in CI, skip locally when missing."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_fixture(name: str) -> Path:
    """Return ``FIXTURES / name``; fail in CI, skip locally (one line naming the setting) when missing."""
    path = FIXTURES / name
    if not path.exists():
        msg = f"real fixture {path} is missing: set {FIXTURES_SETTING} to its directory (default ../shared/fixtures)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _zstd_decompress(src: Path, dst: Path) -> Path:
    """Decompress ``src`` into ``dst`` once (atomically), return ``dst``."""
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + f".{os.getpid()}.tmp")
    subprocess.run(["zstd", "-d", "-q", "-f", str(src), "-o", str(tmp)], check=True)
    tmp.rename(dst)
    return dst


@pytest.fixture(scope="session")
def real_vmcore() -> Path:
    """The real Debian 6.1 vmcore of ``FIXTURES``, decompressed (926 MB, cached)."""
    src = require_fixture("vmcore-A.elf.zst")
    require_tool("zstd")
    return _zstd_decompress(src, CACHE / "vmcore-A.elf")


def reference_head(level: int) -> bytes:
    """makedumpfile 1.7.9's first blocks (headers and bitmaps) of the real vmcore at ``level``."""
    import zstandard

    data = require_fixture(f"{REFERENCE.name}/d{level}.head.zst").read_bytes()
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def reference_stats(level: int) -> dict[str, int]:
    """Parse makedumpfile's --show-stats table for ``level`` into {label: value}."""
    return parse_stats(require_fixture(f"{REFERENCE.name}/d{level}.stats").read_text(errors="replace"))


def parse_stats(text: str) -> dict[str, int]:
    """The page-count lines (``label : 0x...``) of a --show-stats report, as {label: value}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        value = value.strip()
        if sep and value.startswith("0x"):
            out[label.strip()] = int(value, 16)
    return out


def zstd_decompressed(src: Path, dst: Path) -> Path:
    """Decompress ``src`` into ``dst`` once (cached, atomically), return ``dst``."""
    require_tool("zstd")
    return _zstd_decompress(src, dst)


def codec_params() -> list[object]:
    """One pytest param per codec; a missing library skips locally and fails in CI."""
    params: list[object] = []
    for name in ("none", "zlib", "lzo", "snappy", "zstd"):
        marks = []
        if not codecs.available(name) and not IN_CI:
            marks.append(pytest.mark.skip(reason=f"{name} library not installed"))
        params.append(pytest.param(name, id=name, marks=marks))
    return params
