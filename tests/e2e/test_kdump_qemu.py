"""vmcorepack in a real kdump capture kernel under QEMU (tools/e2e), opt-in; CI opts in.

A loop takes 2.5-4 minutes under TCG on 2 cores (no KVM), so a local ``make test`` skips
it: set ``VMCOREPACK_E2E=1`` to run it (``.ci/run`` does). ``VMCOREPACK_E2E_KERNEL`` (6.1),
``VMCOREPACK_E2E_PAGING`` (4) and ``VMCOREPACK_E2E_CRASHKERNEL`` (256M) pick the variant.
Needs the Debian packages listed in README.md, section "End-to-end".
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
        os.environ.get("VMCOREPACK_E2E") != "1",
        reason="boots kernels under QEMU for ~4 minutes: set VMCOREPACK_E2E=1 to run (tools/e2e/run.sh)",
    ),
]


@pytest.mark.timeout(2400)
def test_kdump_capture_under_qemu(tmp_path: Path) -> None:
    for tool in ("qemu-system-x86_64", "kexec", "busybox", "makedumpfile", "crash"):
        if shutil.which(tool) is None and not Path("/sbin", tool).exists():
            pytest.fail(f"{tool} is missing (see README.md, End-to-end)")
    kernel = os.environ.get("VMCOREPACK_E2E_KERNEL", "6.1")
    paging = os.environ.get("VMCOREPACK_E2E_PAGING", "4")
    crashkernel = os.environ.get("VMCOREPACK_E2E_CRASHKERNEL", "256M")
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "e2e" / "kdump_qemu.py"), "--kernel", kernel, "--paging", paging]
    cmd += ["--crashkernel", crashkernel, "--out", str(out), "--timeout", "2000"]
    # Two workers although the capture kernel has one CPU (the default would
    # pack in one process): the forked workers must run without /dev/shm.
    cmd += ["--args", "-l -d 31 --workers 2"]
    r = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    assert report is not None, r.stderr[-4000:]
    checks = {c["name"]: c for c in report["checks"]}
    required = ["capture ran", "paging mode", "vmcorepack exit", "vmcorepack --verify", "libkdumpfile pages"]
    required += ["drgn pages", "crash --osrelease", "bitmaps capture == host"]
    if report["kernel"].startswith("6.1.") and shutil.which("makedumpfile"):
        # Debian's makedumpfile 1.7.2 knows 6.1's page flags; on 6.12 it differs (README.md).
        required.append("bitmaps vmcorepack == makedumpfile")
    failed = {
        name: checks.get(name, {"detail": "not run"})["detail"]
        for name in required
        if not checks.get(name, {}).get("ok")
    }
    assert not failed, (failed, r.stderr[-4000:])
    assert report["vmcorepack"]["rc"] == 0
    # The capture initramfs mounts no /dev/shm: the workers really ran as forked processes.
    assert "cannot start worker processes" not in (out / "vmcorepack.log").read_text()
