"""Debian's newest amd64 kernel (7.x) in the kdump harness, opt-in: ``VMCOREPACK_E2E_KERNEL7=1``.

Linux 7.1 renamed ``page.compound_head`` to ``compound_info``, which makedumpfile reads only
after its 1.7.9 release (f50c015), so the capture kernel runs makedumpfile's git head from
``$VMCOREPACK_MAKEDUMPFILE_HEAD`` (a host build) instead of Debian's, and vmcorepack's dump
must be byte-identical to it. Needs trixie-backports in the apt sources (README.md,
"End-to-end"); one loop takes about 2.5 minutes under TCG on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("VMCOREPACK_E2E_KERNEL7") != "1",
        reason="boots Debian's 7.x kernel under QEMU: set VMCOREPACK_E2E_KERNEL7=1 (tools/e2e/run.sh --kernel 7.x)",
    ),
]


@pytest.mark.timeout(2400)
def test_kernel7_capture_byte_identical_to_makedumpfile_head(tmp_path: Path) -> None:
    head = os.environ.get("VMCOREPACK_MAKEDUMPFILE_HEAD")
    if not head or not os.access(head, os.X_OK):
        pytest.fail("VMCOREPACK_MAKEDUMPFILE_HEAD must name a build of makedumpfile's git head (f50c015 or later)")
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools" / "e2e" / "kdump_qemu.py"), "--kernel", "7.x"]
    cmd += ["--out", str(out), "--timeout", "2000", "--args", "-l -d 31", "--makedumpfile-args", "-l -d 31"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    assert report is not None, r.stderr[-4000:]
    assert report["kernel"].startswith("7."), report["kernel"]
    assert report["makedumpfile_reference"] == str(Path(head).resolve())
    checks = {c["name"]: c for c in report["checks"]}
    required = ["capture ran", "paging mode", "vmcorepack exit", "vmcorepack --verify", "libkdumpfile pages"]
    required += ["drgn pages", "crash --osrelease", "bitmaps capture == host", "bitmaps vmcorepack == makedumpfile"]
    required += ["files vmcorepack == reference makedumpfile"]
    failed = {
        name: checks.get(name, {"detail": "not run"})["detail"]
        for name in required
        if not checks.get(name, {}).get("ok")
    }
    assert not failed, (failed, r.stderr[-4000:])
    assert report["ok"]
