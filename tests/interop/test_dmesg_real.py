"""--dump-dmesg on the real Debian 6.1 vmcore equals makedumpfile 1.7.9's log byte for byte (issue 7)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, require_tool
from vmcorepack import dmesg
from vmcorepack.cli import main
from vmcorepack.sources import open_elf

REFERENCE = FIXTURES / "dmesg-A.txt"


def test_library_matches_reference(real_vmcore: Path) -> None:
    with open_elf(str(real_vmcore)) as src:
        log = dmesg.extract(src)
    assert log.layout == "lockless"
    assert log.records == 442
    assert log.text == REFERENCE.read_bytes()


@pytest.mark.parametrize("extra", [[], ["--partial-dmesg"], ["-i", str(FIXTURES / "vmcoreinfo-A.txt")]])
def test_cli_matches_reference(real_vmcore: Path, tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "dmesg.txt"
    assert main(["--dump-dmesg", *extra, str(real_vmcore), str(out)]) == 0
    # The fixture's clear_seq is 0 (no dmesg -C before the crash): partial = whole log.
    assert out.read_bytes() == REFERENCE.read_bytes()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_cli_refuses_existing_file_and_bare_partial(real_vmcore: Path, tmp_path: Path) -> None:
    out = tmp_path / "dmesg.txt"
    out.write_bytes(b"keep")
    assert main(["--dump-dmesg", str(real_vmcore), str(out)]) == 1
    assert out.read_bytes() == b"keep"
    assert main(["--partial-dmesg", str(real_vmcore), str(out)]) == 1
    assert main(["-f", "--dump-dmesg", str(real_vmcore), str(out)]) == 0
    assert out.read_bytes() == REFERENCE.read_bytes()


@pytest.mark.interop
def test_same_records_as_debian_makedumpfile(real_vmcore: Path, tmp_path: Path) -> None:
    """Debian's 1.7.2 predates the caller-id column: same records once that column is removed."""
    tool = require_tool("makedumpfile")
    ref = tmp_path / "ref.txt"
    subprocess.run(
        [tool, "--dump-dmesg", "--partial-dmesg", str(real_vmcore), str(ref)], check=True, capture_output=True
    )
    with open_elf(str(real_vmcore)) as src:
        vi = src.vmcoreinfo
        assert vi is not None
        entries = {k: v for k, v in vi.entries.items() if k != "OFFSET(printk_info.caller_id)"}
        src.vmcoreinfo = type(vi)(vi.raw, entries)
        assert dmesg.extract(src, partial=True).text == ref.read_bytes()
