"""The early memory check of the console entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
