"""Filtered vectors (docs/kdump-format.md §14.3) reproduced byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import VECTORS
from vmcorepack.cli import main
from vmcorepack.reader import KdumpReader

SAME = [
    pytest.param("filt", 0, "filt_d0", id="d0"),
    pytest.param("filt", 1, "filt_d1", id="d1"),
    pytest.param("filt", 2, "filt_d2", id="d2"),
    pytest.param("filt", 4, "filt_d4", id="d4"),
    pytest.param("filt", 16, "filt_d16", id="d16"),
    # makedumpfile 1.7.9 (1.7.2 wrongly drops the slab page with the anon bit).
    pytest.param("filt", 8, "filt_head_d8", id="d8-1.7.9"),
    pytest.param("filt", 31, "filt_head_d31", id="d31-1.7.9"),
    # hwpoison and offline pages go at level 0 too.
    pytest.param("filt2", 0, "filt2_d0", id="filt2-d0"),
]


@pytest.mark.parametrize(("vmcore", "level", "ref"), SAME)
@pytest.mark.parametrize("workers", [0, 2])
def test_byte_identical(tmp_path: Path, vmcore: str, level: int, ref: str, workers: int) -> None:
    out = tmp_path / "out.kdump"
    rc = main(
        [
            "-d",
            str(level),
            "--message-level",
            "0",
            "--workers",
            str(workers),
            str(VECTORS / f"{vmcore}.vmcore"),
            str(out),
        ]
    )
    assert rc == 0
    assert out.read_bytes() == (VECTORS / f"{ref}.kdump").read_bytes()


@pytest.mark.parametrize(("level", "old"), [(8, "filt_d8"), (31, "filt_d31")])
def test_differs_from_1_7_2_only_by_the_slab_page(tmp_path: Path, level: int, old: str) -> None:
    out = tmp_path / "out.kdump"
    assert main(["-d", str(level), "--message-level", "0", str(VECTORS / "filt.vmcore"), str(out)]) == 0
    with KdumpReader(str(out)) as ours, KdumpReader(str(VECTORS / f"{old}.kdump")) as theirs:
        assert set(map(int, ours.dumpable_pfns())) - set(map(int, theirs.dumpable_pfns())) == {9}


def test_level_2_without_vmcoreinfo_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-d", "2", "--message-level", "0", str(VECTORS / "tiny.vmcore"), str(tmp_path / "o")]) == 1
    assert "VMCOREINFO" in capsys.readouterr().err
