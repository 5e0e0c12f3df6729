"""-E (ELF output) against Debian's makedumpfile 1.7.2, and read back with drgn (issue 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import VECTORS, require_tool
from helpers import elf_loads, elf_page_reader, elf_ram_pfns, first_difference, runs
from vmcorepack import elfout
from vmcorepack.cli import main
from vmcorepack.sources import open_elf

pytestmark = pytest.mark.interop

CASES = [("tiny", 0), ("tiny", 1)] + [("filt", d) for d in (0, 1, 2, 4, 8, 16, 31)] + [("filt2", 0), ("filt2", 31)]


def makedumpfile_elf(vmcore: Path, level: int, out: Path) -> Path:
    tool = require_tool("makedumpfile")
    subprocess.run([tool, "-E", "-d", str(level), str(vmcore), str(out)], check=True, capture_output=True)
    return out


@pytest.mark.parametrize(("name", "level"), CASES, ids=[f"{n}-d{d}" for n, d in CASES])
def test_vectors_equal_makedumpfile(tmp_path: Path, name: str, level: int) -> None:
    vmcore = VECTORS / f"{name}.vmcore"
    ref = makedumpfile_elf(vmcore, level, tmp_path / "ref.elf").read_bytes()
    ours = tmp_path / "ours.elf"
    with open_elf(str(vmcore)) as src:
        res = elfout.pack_elf(src, str(ours), level)
    assert ours.read_bytes() == ref
    assert res.file_size == len(ref)


def test_cli_elf_and_flat_stream(tmp_path: Path) -> None:
    vmcore = VECTORS / "filt.vmcore"
    ref = makedumpfile_elf(vmcore, 31, tmp_path / "ref.elf").read_bytes()
    out = tmp_path / "cli.elf"
    assert main(["-E", "-d", "31", "--message-level", "0", str(vmcore), str(out)]) == 0
    assert out.read_bytes() == ref
    # A flattened ELF stream (-E -F) rebuilds into the same file with -R.
    stream = tmp_path / "elf.flat"
    with open(stream, "wb") as f:
        subprocess.run(
            [sys.executable, "-m", "vmcorepack", "-E", "-F", "-d", "31", "--message-level", "0", str(vmcore)],
            stdout=f,
            check=True,
        )
    rebuilt = tmp_path / "rebuilt.elf"
    with open(stream, "rb") as f:
        subprocess.run(
            [sys.executable, "-m", "vmcorepack", "-R", "--message-level", "0", str(rebuilt)], stdin=f, check=True
        )
    assert rebuilt.read_bytes() == ref


@pytest.mark.parametrize(
    "extra",
    [["-c"], ["-l"], ["--num-threads", "2"]],
    ids=["zlib", "lzo", "threads"],
)
def test_cli_refuses_like_makedumpfile(tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "x.elf"
    assert main(["-E", *extra, str(VECTORS / "tiny.vmcore"), str(out)]) == 1
    assert not out.exists()


@pytest.mark.slow
def test_real_fixture_d31_equals_makedumpfile_and_reads_back(real_vmcore: Path, tmp_path: Path) -> None:
    """1.7.2 and our 1.7.9 filter agree on this vmcore at -d 31: the whole file is byte-identical."""
    ref = tmp_path / "ref.elf"
    makedumpfile_elf(real_vmcore, 31, ref)
    ours = tmp_path / "ours.elf"
    with open_elf(str(real_vmcore)) as src:
        res = elfout.pack_elf(src, str(ours), 31)
    assert res.zero_pages == 7629  # makedumpfile 1.7.9's d31.stats
    assert len(elf_loads(ours)) == 31
    assert first_difference(ref, ours) is None
    ref.unlink()

    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(str(ours))
    source_page = elf_page_reader(real_vmcore)
    kept = elf_ram_pfns(ours)
    assert len(kept) > 25000
    for start, count in runs(kept):
        for a in range(0, count, 256):
            n = min(256, count - a)
            got = prog.read((start + a) * 4096, n * 4096, True)
            assert got == source_page(start + a, n), f"pfns {start + a:#x}+{n}"
    # Excluded memory inside a PT_LOAD (p_filesz < p_memsz) is not in the file.
    loads = elf_loads(ours)
    assert any(filesz < memsz for _, memsz, _, filesz in loads)
    assert np.all(np.diff(kept) > 0)
