"""Memory budget: MemAvailable, memory cgroups (v1 and v2), and the workers that fit (issue 18, point 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import VECTORS
from vmcorepack import cli, sysmem

MIB = 1 << 20


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_tightest_limit_on_the_way_up(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    _write(proc, "0::/system.slice/kdump.service\n")
    root = tmp_path / "fs"
    _write(root / "system.slice" / "memory.max", f"{300 * MIB}\n")
    _write(root / "system.slice" / "memory.current", f"{100 * MIB}\n")
    _write(root / "system.slice" / "kdump.service" / "memory.max", "max\n")
    _write(root / "system.slice" / "kdump.service" / "memory.current", f"{10 * MIB}\n")
    room = sysmem.cgroup_room_kib(str(proc), str(root))
    assert room == (200 << 10, str(root / "system.slice" / "memory.max"))


def test_cgroup_v1_memory_controller(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    _write(proc, "5:cpu,cpuacct:/a\n4:memory:/a/b\n0::/\n")
    root = tmp_path / "fs"
    _write(root / "memory" / "a" / "b" / "memory.limit_in_bytes", f"{96 * MIB}\n")
    _write(root / "memory" / "a" / "b" / "memory.usage_in_bytes", f"{16 * MIB}\n")
    _write(root / "memory" / "a" / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    assert sysmem.cgroup_room_kib(str(proc), str(root)) == (80 << 10, str(root / "memory/a/b/memory.limit_in_bytes"))


def test_no_limit_and_no_cgroup(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    _write(proc, "0::/\n")
    _write(tmp_path / "fs" / "memory.max", "max\n")
    assert sysmem.cgroup_room_kib(str(proc), str(tmp_path / "fs")) is None
    assert sysmem.cgroup_room_kib(str(tmp_path / "missing"), str(tmp_path / "fs")) is None


def test_meminfo_values(tmp_path: Path) -> None:
    info = tmp_path / "meminfo"
    _write(info, "MemTotal:       1000 kB\nMemAvailable:    512 kB\n")
    assert sysmem.meminfo_kib("MemAvailable", str(info)) == 512
    assert sysmem.meminfo_kib("SwapTotal", str(info)) is None


@pytest.mark.parametrize(
    ("requested", "available_mib", "fit"),
    [(32, 4096, 32), (32, 200, 7), (8, 56, 1), (8, 55, 0), (0, 10, 0), (4, 32 + 4 * 24, 4)],
)
def test_workers_that_fit(requested: int, available_mib: int, fit: int) -> None:
    assert sysmem.BASE_KIB == 32 << 10 and sysmem.WORKER_KIB == 24 << 10  # the figures the cases assume
    assert sysmem.workers_that_fit(requested, available_mib << 10) == fit


def test_cli_uses_fewer_workers_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A service's --num-threads=32 in 150 MiB: fewer workers, one warning, the same bytes."""
    monkeypatch.setattr(sysmem, "available_kib", lambda: (150 << 10, "/proc/meminfo", "MemAvailable"))
    monkeypatch.setattr(sysmem, "meminfo_kib", lambda key, path="": 0)
    out = tmp_path / "out.kdump"
    argv = ["--num-threads", "32", "-d", "31", "--message-level", "0", str(VECTORS / "filt.vmcore"), str(out)]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "vmcorepack: warning: /proc/meminfo: 32 workers need about 800 MiB and 150 MiB are available "
        "(MemAvailable); using 4 workers"
    ]
    assert out.read_bytes() == (VECTORS / "filt_head_d31.kdump").read_bytes()


def test_cli_falls_back_to_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        sysmem, "available_kib", lambda: (40 << 10, "/sys/fs/cgroup/memory.max", "cgroup limit less usage")
    )
    monkeypatch.setattr(sysmem, "meminfo_kib", lambda key, path="": 0)
    out = tmp_path / "out.kdump"
    assert cli.main(["--workers", "2", "-d", "1", "--message-level", "0", str(VECTORS / "filt.vmcore"), str(out)]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("using no workers (pages compressed in this process)")
    assert out.read_bytes() == (VECTORS / "filt_d1.kdump").read_bytes()
