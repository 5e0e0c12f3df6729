"""vmcorepack in a capture initramfs built by Debian's dracut with dracut/99vmcorepack (tools/dracut-e2e), opt-in.

The first kernel (tools/e2e's busybox initramfs) loads the kernel and the dracut image with
``kexec -p`` and panics; dracut's own /init runs vmcorepack on /proc/vmcore; the host checks the
dump. Builds on tools/kdump-tools' root (mmdebstrap, as root) plus dracut-core, so it is slow the
first time: ``VMCOREPACK_E2E_DRACUT=1`` opts in.
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
        os.environ.get("VMCOREPACK_E2E_DRACUT") != "1",
        reason="builds a dracut initramfs and boots it under QEMU: set VMCOREPACK_E2E_DRACUT=1 (tools/dracut-e2e)",
    ),
]

REQUIRED = (
    "collector exit",
    "vmcorepack --verify",
    "libkdumpfile pages",
    "drgn pages",
    "crash --osrelease",
    "bitmaps capture == host",
    "bitmaps vmcorepack == makedumpfile",
)


@pytest.mark.timeout(3600)
def test_dracut_module_capture(tmp_path: Path) -> None:
    for tool in ("qemu-system-x86_64", "mmdebstrap", "kexec", "busybox", "makedumpfile", "crash"):
        if shutil.which(tool) is None and not Path("/sbin", tool).exists():
            pytest.fail(f"{tool} is missing (see README.md, 'dracut module')")
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "dracut-e2e" / "dracut_e2e.py"), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    report_path = out / "report.json"
    assert report_path.exists(), r.stderr[-4000:]
    report = json.loads(report_path.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    failed = {n: checks.get(n, {"detail": "not run"})["detail"] for n in REQUIRED if not checks.get(n, {}).get("ok")}
    assert not failed, (failed, r.stderr[-4000:])
    # The module's point: the image grows by python3, numpy and vmcorepack, and no more than that.
    grow = report["sizes"]["vmcorepack"]["unpacked"] - report["sizes"]["none"]["unpacked"]
    assert 0 < grow < 64 << 20, report["sizes"]
