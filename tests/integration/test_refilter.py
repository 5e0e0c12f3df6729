"""A dump as input: re-filtering to a higher level and recompressing (issue 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VECTORS
from helpers import first_difference
from vmcorepack.cli import main
from vmcorepack.reader import KdumpReader

Q = ["--message-level", "0"]


def test_tiny_d0_to_d1_equals_direct(tmp_path: Path) -> None:
    out = tmp_path / "r.kdump"
    assert main([*Q, "-d", "1", str(VECTORS / "tiny_d0_raw.kdump"), str(out)]) == 0
    assert out.read_bytes() == (VECTORS / "tiny_d1_raw.kdump").read_bytes()


def test_level_is_ored_with_the_recorded_one(tmp_path: Path) -> None:
    out = tmp_path / "r.kdump"
    assert main([*Q, "-d", "0", str(VECTORS / "tiny_d1_raw.kdump"), str(out)]) == 0
    with KdumpReader(str(out)) as k:
        assert k.header.dump_level == 1
    assert out.read_bytes() == (VECTORS / "tiny_d1_raw.kdump").read_bytes()


def test_recompress_tiny(tmp_path: Path) -> None:
    out = tmp_path / "r.kdump"
    assert main([*Q, "-c", "-d", "1", str(VECTORS / "tiny_d1_lzo.kdump"), str(out)]) == 0
    assert out.read_bytes() == (VECTORS / "tiny_d1_zlib.kdump").read_bytes()


@pytest.fixture(scope="module")
def real_dumps(real_vmcore: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("refilter")
    out = {}
    made = {"d1-lzo": ["-l", "-d", "1"], "d31-lzo": ["-l", "-d", "31"], "d1-zstd": ["-z", "-d", "1"]}
    for name, opts in made.items():
        out[name] = base / f"{name}.kdump"
        assert main([*Q, *opts, str(real_vmcore), str(out[name])]) == 0
    stream = base / "d1.flat"
    with open(stream, "wb") as f:
        r = subprocess.run([sys.executable, "-m", "vmcorepack", "-F", "-l", "-d", "1", str(real_vmcore)], stdout=f)
    assert r.returncode == 0
    out["d1-flat"] = stream
    return out


@pytest.mark.slow
@pytest.mark.parametrize("source", ["d1-lzo", "d1-flat"])
def test_real_refilter_d1_to_d31_equals_direct(real_dumps: dict[str, Path], tmp_path: Path, source: str) -> None:
    out = tmp_path / "r31.kdump"
    assert main([*Q, "-l", "-d", "31", str(real_dumps[source]), str(out)]) == 0
    assert first_difference(out, real_dumps["d31-lzo"]) is None


@pytest.mark.slow
def test_real_recompress_lzo_to_zstd(real_dumps: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "z.kdump"
    assert main([*Q, "-z", "-d", "1", str(real_dumps["d1-lzo"]), str(out)]) == 0
    assert first_difference(out, real_dumps["d1-zstd"]) is None
    with KdumpReader(str(out)) as z, KdumpReader(str(real_dumps["d1-lzo"])) as lzo:
        pfns = z.dumpable_pfns()
        assert (pfns == lzo.dumpable_pfns()).all()
        for pfn in pfns[::7].tolist():
            assert z.read_page(pfn) == lzo.read_page(pfn)
