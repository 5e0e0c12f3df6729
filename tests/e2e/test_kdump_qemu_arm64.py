"""An arm64 kdump capture under QEMU (tools/e2e --arch arm64), opt-in: ``VMCOREPACK_E2E_ARM64=1``.

Needs qemu-system-arm, gcc-aarch64-linux-gnu, zlib1g-dev:arm64 and apt sources with the arm64
architecture and Debian trixie (the guest root, tools/e2e/mkroot.py); one loop takes 1-2.5
minutes under TCG. ``VMCOREPACK_E2E_ARM64_KERNEL`` (6.1) and ``VMCOREPACK_E2E_ARM64_FLAVOUR``
(arm64) pick the kernel. vmcorepack runs on /proc/vmcore in the arm64 capture kernel and the
host verifies its dump as for x86 (--verify, libkdumpfile, drgn, the bitmaps of Debian's
makedumpfile in the same capture kernel).
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
        os.environ.get("VMCOREPACK_E2E_ARM64") != "1",
        reason="boots arm64 kernels under QEMU TCG: set VMCOREPACK_E2E_ARM64=1 to run (tools/e2e/run.sh --arch arm64)",
    ),
]


@pytest.mark.timeout(2400)
def test_arm64_kdump_capture_under_qemu(tmp_path: Path) -> None:
    for tool in ("qemu-system-aarch64", "aarch64-linux-gnu-gcc", "apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (qemu-system-arm, gcc-aarch64-linux-gnu)")
    kernel = os.environ.get("VMCOREPACK_E2E_ARM64_KERNEL", "6.1")
    flavour = os.environ.get("VMCOREPACK_E2E_ARM64_FLAVOUR", "arm64")
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "e2e" / "kdump_qemu.py"), "--arch", "arm64", "--kernel", kernel]
    cmd += ["--flavour", flavour, "--crashkernel", "160M", "--out", str(out), "--timeout", "1500"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    assert report is not None, r.stderr[-4000:]
    checks = {c["name"]: c for c in report["checks"]}
    for name in ("capture ran", "page size", "ELF copy", "vmcorepack exit"):
        assert name in checks, f"no {name} check: {r.stderr[-2000:]}"
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    assert any("C extension\tloaded" in ln for ln in report["vmcorepack_version"])
    for name in ("vmcorepack exit", "vmcorepack --verify", "libkdumpfile pages", "drgn pages"):
        assert checks[name]["ok"], checks[name]
