"""The early memory check of the console entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VECTORS
from vmcorepack import launch


def test_enough_memory_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMCOREPACK_MIN_MEMORY_MB", raising=False)
    assert launch.memory_shortfall(1) is None  # any machine running the tests has 1 KiB


def test_shortfall_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMCOREPACK_MIN_MEMORY_MB", raising=False)
    why = launch.memory_shortfall(1 << 40)  # 1 PiB
    assert why is not None
    assert why.startswith("/proc/meminfo: only ") and "crashkernel=" in why


def test_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMCOREPACK_MIN_MEMORY_MB", "0")
    assert launch.memory_shortfall(1 << 40) is None
    monkeypatch.setenv("VMCOREPACK_MIN_MEMORY_MB", "lots")
    assert "not a number" in (launch.memory_shortfall() or "")


def test_cli_refuses_before_touching_output(tmp_path: Path) -> None:
    out = tmp_path / "dump"
    env = {"VMCOREPACK_MIN_MEMORY_MB": str(1 << 30), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-m", "vmcorepack", "-l", "-d", "31", "/proc/vmcore", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmcorepack: /proc/meminfo: only ")
    assert not out.exists()


def test_console_entry_exits_with_cli_status_and_flushed_output(tmp_path: Path) -> None:
    """The entry point ends with os._exit: the status and buffered output must still get out."""
    out = tmp_path / "stdout"
    dump = tmp_path / "dump"
    # A file and no PYTHONUNBUFFERED: stdout is block-buffered.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with open(out, "wb") as f:
        ok = subprocess.run(
            [sys.executable, "-m", "vmcorepack", "-d", "1", str(VECTORS / "filt.vmcore"), str(dump)],
            stdout=f,
            env=env,
            check=False,
        )
    assert ok.returncode == 0
    assert dump.stat().st_size > 0
    # The last line printed: nothing stayed in the buffer.
    assert out.read_text().rstrip().endswith("vmcorepack Completed.")
    bad = subprocess.run(
        [sys.executable, "-m", "vmcorepack", "-d", "1", str(tmp_path / "missing"), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"vmcorepack: {tmp_path / 'missing'}: cannot open: No such file or directory"
    ]


@pytest.mark.parametrize("columns", ["50", "100", "0"])
def test_help_wraps_to_columns_without_shutil(columns: str) -> None:
    """--help wraps to $COLUMNS as argparse's own width lookup would, and building the parser imports no shutil.

    COLUMNS=0 falls back, as in shutil, to the terminal (none here: output is
    captured) and then to 80 columns.
    """
    code = "import sys\nfrom vmcorepack import cli\ncli.build_parser().print_help()\nprint('shutil' in sys.modules)\n"
    env = {**os.environ, "COLUMNS": columns}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    *lines, imported = r.stdout.splitlines()
    width = int(columns) or 80
    assert imported == "False"
    assert max(map(len, lines)) <= width - 2
    assert max(map(len, lines)) > width - 20  # the width is used, not a smaller default
