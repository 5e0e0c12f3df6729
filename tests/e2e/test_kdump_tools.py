"""Debian's kdump-tools saving a dump through vmcorepack under QEMU (tools/kdump-tools), opt-in.

Builds a Debian bookworm root with mmdebstrap (once, cached in .cache/kdump-tools), switches
kdump-tools over to vmcorepack with the README's own commands, boots it under TCG with systemd,
panics, and lets kdump-tools' unit in the capture kernel save /var/crash/STAMP/dump.STAMP and
dmesg.STAMP; the host checks both. Slow (the root build takes minutes once, each boot-crash-save
loop more under TCG), so ``VMCOREPACK_E2E_KDUMP_TOOLS=1`` opts in. Needs root (mmdebstrap
--mode=root), mmdebstrap, e2fsprogs, lz4, qemu-system-x86, makedumpfile and crash.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("VMCOREPACK_E2E_KDUMP_TOOLS") != "1",
        reason="builds a Debian root and boots it under QEMU: set VMCOREPACK_E2E_KDUMP_TOOLS=1 (tools/kdump-tools)",
    ),
]

#: Every check the run must pass (names from tools/kdump-tools and tools/e2e's verify()).
REQUIRED = (
    "kdump-tools loaded the capture kernel",
    "kdump-tools saved a dump",
    "vmcorepack --verify",
    "libkdumpfile pages",
    "drgn pages",
    "crash --osrelease",
    "bitmaps capture == host",
    "bitmaps vmcorepack == makedumpfile",
    "dmesg == Debian makedumpfile's but the caller ids",
    "makedumpfile is the README's wrapper",
)


@pytest.mark.timeout(5400)
@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_kdump_tools_saves_through_vmcorepack(tmp_path: Path, compression: str) -> None:
    for tool in ("qemu-system-x86_64", "mmdebstrap", "mke2fs", "debugfs", "makedumpfile", "crash", "lz4"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (see README.md, 'End-to-end: Debian's kdump-tools')")
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "kdump-tools" / "kdump_tools_e2e.py")]
    r = subprocess.run([*cmd, "--compression", compression, "--out", str(out)], capture_output=True, text=True)
    report_path = out / "report.json"
    assert report_path.exists(), r.stderr[-4000:]
    report = json.loads(report_path.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    names = [*REQUIRED, *(["dmesg == makedumpfile 1.7.9's"] if os.environ.get("VMCOREPACK_MAKEDUMPFILE_179") else [])]
    failed = {n: checks.get(n, {"detail": "not run"})["detail"] for n in names if not checks.get(n, {}).get("ok")}
    assert not failed, (failed, r.stderr[-4000:])
    assert report["ok"], r.stderr[-4000:]
